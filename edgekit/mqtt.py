"""MQTT in one place: broker URLs, topic names, the paho client, size limits, and the thread that owns it.

Both roles talk to the broker the same way::

    other threads ──send()/call_soon()──► outbox ──► ClientLoop thread ──► paho Client ──► broker
                                                        │  connect, reconnect with backoff,
                                                        │  on_connect / on_message / on_publish
                                                        ▼
                                                hooks: on_connected, on_tick, on_published

paho is not thread-safe, so exactly one thread (the :class:`ClientLoop`) ever calls into a client; the others
hand it work through a queue. paho itself is imported lazily so that ``edgekit device --help`` stays cheap.
"""

from __future__ import annotations

import logging
import queue
import re
import select
import socket
import threading
import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Callable
from urllib.parse import unquote, urlsplit

from edgekit.errors import BrokerRefusedError, EdgekitError, UsageError
from edgekit.mqtt_security import (BrokerSecurity, apply_security, connect_failed, dropped_before_connack,
                                   refusal_error, resolve_security, socket_error)

if TYPE_CHECKING:  # pragma: no cover
    import paho.mqtt.client as mqtt
    from paho.mqtt.properties import Properties

__all__ = [
    "DEFAULT_PORT", "DEFAULT_TLS_PORT", "TOPIC_ROOT", "PROTOCOLS", "BrokerUrl", "parse_broker_url", "resolve_broker",
    "check_device_id", "topic",
    "features_filter", "device_of", "publish_packet_size", "publish_properties", "detect_protocol", "make_client",
    "ClientLoop", "TopicAliases", "device_id_problem", "printable_id",
]

log = logging.getLogger(__name__)

DEFAULT_PORT = 1883
DEFAULT_TLS_PORT = 8883
REFUSED_RETRY_S = 10.0  # a client refused after it once connected (e.g. revoked) retries this often
TOPIC_ROOT = "edgekit/v1"
TOPIC_KINDS = ("features", "status", "heartbeat", "results", "deadletter", "acks")
#: The largest heartbeat payload: the agent trims its drop list to fit, and receivers announce a Maximum
#: Packet Size that lets it through (a heartbeat the broker dropped would hide the device's drops).
HEARTBEAT_MAX_BYTES = 16 * 1024
PROTOCOLS = ("auto", "5", "3.1.1")
SESSION_EXPIRY_S = 7 * 24 * 3600  # a persistent MQTT 5 session outlives a week-long receiver outage
RECEIVE_MAXIMUM = 1024  # QoS 1 messages the broker may have in flight to us (MQTT 5); 3.1.1 uses the broker's
SESSION_TAKEN_OVER = 142  # MQTT 5 DISCONNECT reason: another client connected with our client id
SHORT_SESSION_S = 2.0  # a session the broker ends this soon after CONNACK may have been taken over ...
TAKEN_OVER_AFTER = 5  # ... and this many in a row mean another process has our client id


@dataclass(frozen=True)
class BrokerUrl:
    """Where the broker listens and how to connect: ``mqtt[s]://[user@]host:port`` (see edgekit.mqtt_security)."""

    host: str
    port: int = DEFAULT_PORT
    security: BrokerSecurity = BrokerSecurity()

    def __str__(self) -> str:
        """The URL for logs: the password, if any, is shown as ``***``."""
        return f"{self.security.scheme}://{self.security.userinfo()}{self.host}:{self.port}"


def parse_broker_url(url: str) -> BrokerUrl:
    """Parse ``mqtt[s]://[user[:password]@]host[:port]`` (a bare ``host[:port]`` means mqtt://).

    The user name and password of the URL are used (see :func:`edgekit.mqtt_security.resolve_security` for
    the safer places to keep a password); mqtts:// defaults to port 8883. One-line UsageError otherwise.
    """
    text = url.strip()
    if "://" not in text:
        text = "mqtt://" + text
    fix = "give the broker as mqtt://HOST:PORT or mqtts://HOST:PORT, e.g. mqtt://localhost:1883"
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        raise UsageError(f"bad broker URL {_redacted(url)!r}", fix) from None
    if parts.scheme not in ("mqtt", "mqtts"):
        raise UsageError(f"unsupported broker scheme {parts.scheme!r} in {_redacted(url)!r} "
                         "(mqtt:// and mqtts:// are supported)", fix)
    if not parts.hostname or parts.path not in ("", "/") or parts.query:
        raise UsageError(f"bad broker URL {_redacted(url)!r}", fix)
    tls = parts.scheme == "mqtts"
    security = BrokerSecurity(tls=tls, username=unquote(parts.username) if parts.username else None,
                              password=unquote(parts.password) if parts.password is not None else None)
    return BrokerUrl(parts.hostname, port or (DEFAULT_TLS_PORT if tls else DEFAULT_PORT), security)


def resolve_broker(url: str, **options: Any) -> BrokerUrl:
    """The ``--broker`` URL completed by the command's :func:`~edgekit.mqtt_security.security_options`."""
    broker = parse_broker_url(url)
    return replace(broker, security=resolve_security(broker.security, **options))


def _redacted(url: str) -> str:
    """``url`` with the password of its user info replaced by ``***`` (for error messages)."""
    return re.sub(r"(://[^/@:]*):[^/@]*@", r"\1:***@", url)


_DEVICE_ID = re.compile(r"[A-Za-z0-9._-]+")
MAX_DEVICE_ID = 64


def device_id_problem(device_id: str | None) -> str | None:
    """Why ``device_id`` is not a device id, or None when it is: the one rule of the agent and the receiver.

    A device id is one topic level and a file name (the spool): 1-64 letters, digits, ``._-``, not only dots.
    """
    if not device_id:
        return "empty"
    if len(device_id) > MAX_DEVICE_ID:
        return f"{len(device_id)} characters, above {MAX_DEVICE_ID}"
    if not _DEVICE_ID.fullmatch(device_id):
        return "characters other than letters, digits, '.', '_' and '-'"
    if not device_id.strip("."):
        return "only dots, a path name"
    return None


def printable_id(device_id: str | None) -> str:
    """``device_id`` safe for a log line or a message: ASCII-escaped and cut to its first 64 characters."""
    if device_id is None or len(device_id) <= MAX_DEVICE_ID:
        return ascii(device_id)
    return f"{ascii(device_id[:MAX_DEVICE_ID])}... ({len(device_id)} characters)"


def check_device_id(device_id: str) -> str:
    """``device_id`` if :func:`device_id_problem` finds nothing, else a one-line UsageError."""
    problem = device_id_problem(device_id)
    if problem is not None:
        raise UsageError(f"bad device id {printable_id(device_id)}: {problem}",
                         "use 1-64 letters, digits, '.', '_' or '-', e.g. cam-07")
    return device_id


def topic(device_id: str, kind: str) -> str:
    """``edgekit/v1/<device-id>/<kind>`` for one of :data:`TOPIC_KINDS`."""
    if kind not in TOPIC_KINDS:
        raise ValueError(f"unknown topic kind {kind!r}")
    return f"{TOPIC_ROOT}/{device_id}/{kind}"


def features_filter(share_group: str | None = None) -> str:
    """The filter matching every device's features, as a ``$share/<group>/…`` when the load is split."""
    base = f"{TOPIC_ROOT}/+/features"
    return f"$share/{share_group}/{base}" if share_group else base


def device_of(topic_name: str) -> str | None:
    """The device id in ``edgekit/v1/<device-id>/<kind>``, or None for a foreign topic."""
    parts = topic_name.split("/")
    if len(parts) == 4 and f"{parts[0]}/{parts[1]}" == TOPIC_ROOT and parts[2]:
        return parts[2]
    return None


def _varint_len(n: int) -> int:
    return 1 if n < 128 else 2 if n < 16384 else 3 if n < 2097152 else 4


def publish_packet_size(topic_name: str, payload_len: int, protocol: str, qos: int = 1,
                        properties: "Properties | None" = None) -> int:
    """Bytes on the wire of a PUBLISH, the quantity a broker's Maximum Packet Size bounds.

    MQTT 5 adds its property list: ``properties`` packed (length prefix included), or one 0 byte when empty.
    """
    props = (len(properties.pack()) if properties is not None else 1) if protocol == "5" else 0
    remaining = 2 + len(topic_name.encode()) + (2 if qos else 0) + props + payload_len
    return 1 + _varint_len(remaining) + remaining


def publish_properties(content_type: str, user_properties: list[tuple[str, str]]) -> "Properties":
    """MQTT 5 PUBLISH properties: a content type and user properties (e.g. a frame's, see edgekit.wire)."""
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    props = Properties(PacketTypes.PUBLISH)
    props.ContentType = content_type
    props.UserProperty = list(user_properties)
    return props


class TopicAliases:
    """MQTT 5 topic aliases for one client's publishes: a topic's name travels once per connection, with its
    alias; later publishes send an empty name and the alias only (3 bytes of properties instead of ~27 of
    name). Aliases are numbered from 1 and never above the broker's Topic Alias Maximum (its CONNACK;
    Mosquitto's default is 10; 0 or absent: no alias). Loop thread only, like the client.
    """

    def __init__(self) -> None:
        self.maximum = 0
        self._aliases: dict[str, int] = {}  # topic -> alias, stable for the client's life
        self._named: set[str] = set()  # topics whose name went out with their alias on this connection

    def publish(self, client: "mqtt.Client", topic_name: str, payload: bytes, qos: int,
                properties: "Properties | None") -> "mqtt.MQTTMessageInfo":
        """``client.publish`` with the topic's alias (``properties`` is never modified). The topic counts as
        named only once paho has taken a publish that names it: one that raised named nothing."""
        name, props = self.apply(topic_name, properties)
        info = client.publish(name, payload, qos=qos, properties=props)
        if name and props is not properties:
            self._named.add(topic_name)
        return info

    def apply(self, topic_name: str, properties: "Properties | None") -> tuple[str, "Properties | None"]:
        """The topic name (empty once named on this connection) and properties to publish with."""
        alias = self._aliases.get(topic_name)
        if alias is None and len(self._aliases) < self.maximum:
            alias = self._aliases[topic_name] = len(self._aliases) + 1
        if alias is None or alias > self.maximum:
            return topic_name, properties
        return ("" if topic_name in self._named else topic_name), _with_alias(properties, alias)

    @staticmethod
    def largest_properties(properties: "Properties | None", maximum: int) -> "Properties | None":
        """The properties of a topic's first publish on a connection (name and alias) under the broker's
        ``maximum``: the largest packet, which a size limit must allow for. ``maximum`` is passed in (the
        CONNACK's) because a size limit may be asked before :meth:`reset` ran on the loop thread."""
        return _with_alias(properties, 1) if maximum else properties

    def reset(self, maximum: int, client: "mqtt.Client") -> None:
        """A new connection (call it from on_connect): the broker knows no alias any more.

        paho re-sends unacknowledged QoS 1 messages right after on_connect, exactly as first sent, and an
        alias-only one would name no topic on the new connection (MQTT 5 §3.3.2.3.4: a protocol error, the
        broker disconnects, paho re-sends it, ...). So each gets its topic name back, and loses its alias when
        the new maximum no longer allows it. paho keeps them in ``_out_messages``: no public API reaches them.
        """
        self.maximum = maximum
        self._named.clear()
        names = {alias: name for name, alias in self._aliases.items()}
        with client._out_message_mutex:
            for message in client._out_messages.values():
                alias = getattr(message.properties, "TopicAlias", None) if message.properties else None
                if alias is None:
                    continue
                if not message.topic:
                    message.topic = names[alias].encode()
                if alias > maximum:
                    message.properties = _with_alias(message.properties, None)


def _with_alias(properties: "Properties | None", alias: int | None) -> "Properties":
    """A copy of PUBLISH ``properties`` (content type, user properties) with Topic Alias ``alias`` (or none)."""
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    props = Properties(PacketTypes.PUBLISH)
    for name in ("ContentType", "UserProperty"):
        if properties is not None and hasattr(properties, name):
            setattr(props, name, getattr(properties, name))
    if alias is not None:
        props.TopicAlias = alias
    return props


def _paho():
    import paho.mqtt.client as mqtt

    return mqtt


def make_client(client_id: str, protocol: str, *, persistent: bool = False, manual_ack: bool = False,
                security: BrokerSecurity | None = None) -> "mqtt.Client":
    """A paho client with VERSION2 callbacks; ``persistent`` keeps the session (and its queue) across outages.

    ``security`` (TLS, certificates, user name and password) is applied before the client ever connects.
    """
    mqtt = _paho()
    version = mqtt.MQTTv5 if protocol == "5" else mqtt.MQTTv311
    clean = None if protocol == "5" else not persistent
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=clean,
                         protocol=version, manual_ack=manual_ack)
    client.max_inflight_messages_set(0)  # our own windows bound what is in flight
    client.max_queued_messages_set(0)
    if security is not None:
        apply_security(client, security)
    return client


def _connect_properties(protocol: str, persistent: bool, session_expiry_s: int = SESSION_EXPIRY_S,
                        max_incoming_packet: int | None = None):
    """MQTT 5 CONNECT properties; ``max_incoming_packet`` asks the broker to drop (not forward) anything
    larger, so an oversized publish never reaches this client's memory."""
    if protocol != "5":
        return None
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    props = Properties(PacketTypes.CONNECT)
    props.ReceiveMaximum = RECEIVE_MAXIMUM
    if persistent:
        props.SessionExpiryInterval = session_expiry_s
    if max_incoming_packet:
        props.MaximumPacketSize = max_incoming_packet
    return props


def detect_protocol(url: BrokerUrl, timeout: float = 5.0) -> str | None:
    """Ask the broker: ``"5"`` if it accepts an MQTT 5 CONNECT, else ``"3.1.1"``; None if it is unreachable.

    A failed TLS handshake raises :class:`BrokerRefusedError`; a credential refusal in an MQTT 5 CONNACK
    counts as speaking MQTT 5, and the real connection then reports it.
    """
    for protocol in ("5", "3.1.1"):
        outcome = _try_connect(url, protocol, timeout)
        if outcome is None:
            return None
        if outcome:
            return protocol
    return "3.1.1"


def _try_connect(url: BrokerUrl, protocol: str, timeout: float) -> bool | None:
    """True on CONNACK success, False when refused or dropped, None when nothing listens.

    Raises :class:`BrokerRefusedError` when the connection fails for a TLS reason (see edgekit.mqtt_security).
    """
    result: dict[str, bool] = {}
    errors: list[str] = []
    client = make_client(f"edgekit-probe-{socket.gethostname()}-{time.monotonic_ns() % 10**9}", protocol,
                         security=url.security)
    client.on_connect = lambda c, u, flags, rc, props: result.update(
        connack=True, ok=not rc.is_failure or refusal_error(str(url), rc) is not None)
    client.on_disconnect = lambda c, u, flags, rc, props: result.setdefault("ok", False)
    client.on_log = lambda c, u, level, text: errors.append(text) if socket_error(level, text) else None
    try:
        client.connect(url.host, url.port, keepalive=10)
    except OSError as err:
        refusal = connect_failed(str(url), url.host, url.port, url.security, err)
        if refusal is not None:
            raise refusal from None
        return None
    deadline = time.monotonic() + timeout
    try:
        while "ok" not in result and time.monotonic() < deadline:
            if client.loop(timeout=0.05) != 0:
                result.setdefault("ok", False)
        if result.get("ok"):
            client.disconnect()
            client.loop(timeout=0.05)
        elif "connack" not in result:
            refusal = dropped_before_connack(str(url), url.host, url.port, url.security, (errors or [None])[-1])
            if refusal is not None:
                raise refusal
    finally:
        sock = client.socket()
        if sock is not None:
            sock.close()
    return result.get("ok", False)


def no_delay(sock) -> None:
    """Turn Nagle's algorithm off (paho leaves it on): a small PUBLISH or ack would otherwise wait for the
    previous one's TCP ACK, which the peer delays up to 40 ms. The broker's side: ``set_tcp_nodelay true``."""
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class _Backoff:
    """Exponential delay before the next connection attempt, reset only by an accepted CONNACK.

    A successful TCP connect proves nothing: a broker that refuses the CONNACK (not authorised, ...) accepts
    the socket every time, so resetting on it made a tight loop of thousands of connects a second.
    """

    def __init__(self, first: float = 0.1, cap: float = 2.0):
        self.first, self.cap = first, cap
        self.delay = first
        self.due = 0.0

    def failed(self) -> None:
        """One failed attempt; a second report while still waiting (refusal, then its disconnect) is ignored."""
        now = time.monotonic()
        if now < self.due:
            return
        self.due = now + self.delay
        self.delay = min(self.delay * 2, self.cap)

    def reset(self) -> None:
        self.delay = self.first
        self.due = 0.0

    def remaining(self) -> float:
        return max(0.0, self.due - time.monotonic())


@dataclass
class _Will:
    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = True


class ClientLoop:
    """The one thread that owns a paho client: connect, reconnect with backoff, network loop, outbox.

    Subclasses (the device publisher, the server receiver) override the ``on_*`` hooks, which always run on
    this thread and may therefore call into ``self.client``.

    One client id is one process: when another client takes our session (MQTT 5 reason 142, or
    :data:`TAKEN_OVER_AFTER` sessions in a row that the broker ended within :data:`SHORT_SESSION_S`: MQTT
    3.1.1 gives no reason, and Mosquitto 2.0 just closes the older connection in both versions), the loop
    stops and sets :attr:`fatal_error` (with the subclass's :attr:`identity_fix`) instead of taking the session
    back forever.
    """

    identity_fix = "give each client its own client id"

    tick_s = 0.005  # how long one network-loop pass may block: bounds the outbox's added latency
    refused_retry_s = REFUSED_RETRY_S
    read_burst = 256  # packets read per pass beyond paho's one (see _read_burst)

    def __init__(self, url: BrokerUrl, client_id: str, protocol: str, *, persistent: bool = False,
                 manual_ack: bool = False, will: _Will | None = None, subscriptions: tuple[str, ...] = (),
                 name: str = "mqtt", session_expiry_s: int = SESSION_EXPIRY_S,
                 max_incoming_packet: int | None = None):
        self.url = url
        self.session_expiry_s = session_expiry_s  # of a persistent MQTT 5 session
        self.client_id = client_id
        self.protocol = protocol
        self.persistent = persistent
        self.subscriptions = subscriptions
        self.manual_ack = manual_ack
        self.will = will
        self.max_incoming_packet = max_incoming_packet  # announced in CONNECT (MQTT 5): the broker drops larger
        self.client: "mqtt.Client | None" = None  # made once the protocol is known (see _make_client)
        self.connected = threading.Event()
        self.subscribed = threading.Event()  # set once the broker has granted every subscription
        self.connects = 0
        self.max_packet_size: int | None = None
        self.topic_alias_maximum = 0  # the broker's, from its MQTT 5 CONNACK
        self._connected_at = 0.0
        self._short_sessions = 0  # sessions in a row the broker ended soon after CONNACK (3.1.1 take-over)
        self.fatal_error: EdgekitError | None = None  # why this client stopped: setup refused, session taken over
        self._refusal_logged: str | None = None
        self._last_paho_error: str | None = None
        self.dropped_offline = 0  # QoS 0 sends dropped because the broker was not connected
        self._last_acked_publish: "mqtt.MQTTMessageInfo | None" = None  # its PUBACK is awaited at shutdown
        self._backoff = _Backoff()
        self._outbox: queue.SimpleQueue = queue.SimpleQueue()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    # ---- called from any thread -------------------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Run :meth:`on_stopping` on the loop thread, disconnect cleanly and join."""
        self._stop.set()
        self._thread.join(timeout)

    def send(self, topic_name: str, payload: bytes | str, qos: int = 0, retain: bool = False) -> None:
        """Publish from any thread: the loop thread sends it on its next pass (if it fits the broker).

        A QoS 0 send while offline is dropped and counted: paho would drop it anyway, and queueing it (a
        heartbeat every few seconds through a long outage) would grow the outbox without bound.
        """
        if qos == 0 and not self.connected.is_set():
            self.dropped_offline += 1
            return
        self._outbox.put(lambda: self.publish_checked(topic_name, payload, qos, retain))

    def publish_checked(self, topic_name: str, payload: bytes | str, qos: int = 0, retain: bool = False) -> bool:
        """Publish unless the packet exceeds the broker's Maximum Packet Size (loop thread only).

        paho would send it anyway, the broker would drop the connection, and paho would re-send it after
        reconnecting: refusing it here is what keeps a client out of that loop.
        """
        data = payload.encode() if isinstance(payload, str) else payload
        size = publish_packet_size(topic_name, len(data), self.protocol, qos)
        if self.max_packet_size and size > self.max_packet_size:
            log.error("%s: not publishing %d bytes on %s: over the broker's maximum packet size %d",
                      self.client_id, size, topic_name, self.max_packet_size)
            return False
        info = self.client.publish(topic_name, data, qos=qos, retain=retain)
        if qos:
            self._last_acked_publish = info
        return True

    def call_soon(self, fn: Callable[[], Any]) -> None:
        """Run ``fn`` on the loop thread (e.g. a manual ack)."""
        self._outbox.put(fn)

    def raise_if_fatal(self) -> None:
        """In the caller's thread: raise why this client stopped for good (a refused setup, a taken session)."""
        if self.fatal_error is not None:
            raise self.fatal_error

    @property
    def fatal(self) -> str | None:
        """The one-line problem of :attr:`fatal_error`, if any."""
        return self.fatal_error.problem if self.fatal_error is not None else None

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    # ---- hooks, run on the loop thread --------------------------------------------------------------------
    def on_connected(self, session_present: bool) -> None:
        """After each successful CONNACK (subscriptions are already sent)."""

    def on_tick(self) -> None:
        """Once per network-loop pass."""

    def on_published(self, mid: int, failure: str | None) -> None:
        """The broker acknowledged ``mid`` (QoS 1 PUBACK); ``failure`` is its MQTT 5 error reason, if any."""

    def on_message(self, message: "mqtt.MQTTMessage") -> None:
        """A message arrived on a subscription."""

    def on_stopping(self) -> None:
        """Last chance to publish (e.g. a retained offline status) before the clean disconnect."""

    # ---- the loop ---------------------------------------------------------------------------------------
    def _run(self) -> None:
        """Loop passes until stopped; an unexpected exception is logged and backed off, never fatal.

        This thread is the only one that sends: if it died, the device's spool would grow until full.
        """
        while not self._stop.is_set():
            try:
                self._pass()
            except Exception:
                log.exception("%s: network loop failed; backing off", self.client_id)
                self._backoff.failed()
                self._stop.wait(self._backoff.remaining())
        self._shutdown()

    def _pass(self) -> None:
        """One pass: (re)connect when due, send the outbox, run the tick hook, let paho do its I/O."""
        if not self._ensure_connected():
            self._stop.wait(max(self._backoff.remaining(), self.tick_s))
            return
        if self.connected.is_set():  # not before CONNACK: its size limit decides what may be sent
            self._drain_outbox()
        self._call_hook(self.on_tick)
        rc = self.client.loop(timeout=self.tick_s)
        if rc == 0:
            rc = self._read_burst()
        if rc != 0 and self.connected.is_set():
            self._mark_disconnected(f"network loop: {_paho().error_string(rc)}")

    def _read_burst(self) -> int:
        """Read what is already waiting on the socket, up to :attr:`read_burst` packets.

        paho's ``loop()`` reads one incoming packet per call (QoS 1 messages do not raise its count), so a
        flood of small messages cost one whole pass each (select, outbox, tick) and real frames queued behind
        it for seconds. A paho error code (0 when fine).
        """
        sock = self.client.socket()
        for _ in range(self.read_burst):
            if sock is None or not select.select([sock], [], [], 0)[0]:
                return 0
            rc = self.client.loop_read()
            if rc != 0:
                return rc
        return 0

    def _call_hook(self, hook: Callable[..., Any], *args: Any) -> None:
        """Run a hook, logging its exception: raised inside paho's callbacks it would escape loop()."""
        try:
            hook(*args)
        except Exception:
            log.exception("%s: %s failed", self.client_id, hook.__name__)

    def _make_client(self) -> bool:
        """Build the client; with protocol "auto", first ask the broker which MQTT it speaks."""
        if self.protocol == "auto":
            try:
                detected = detect_protocol(self.url)
            except BrokerRefusedError as err:
                self._refused(err)
                return False
            if detected is None:
                log.info("%s: broker %s unreachable; retrying", self.client_id, self.url)
                self._backoff.failed()
                return False
            self.protocol = detected
        client = make_client(self.client_id, self.protocol, persistent=self.persistent, manual_ack=self.manual_ack,
                             security=self.url.security)
        if self.will is not None:
            client.will_set(self.will.topic, self.will.payload, qos=self.will.qos, retain=self.will.retain)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_subscribe = lambda c, userdata, mid, reason_codes, props: self._on_subscribe(reason_codes)
        client.on_message = lambda c, userdata, message: self._call_hook(self.on_message, message)
        self.client = client
        return True

    def _ensure_connected(self) -> bool:
        if self.fatal:
            self._stop.set()
            return False
        if self.client is None and not self._make_client():
            return False
        if self.client.is_connected() or self._connecting:
            return True
        if self._backoff.remaining() > 0:
            return False
        self._last_paho_error = None
        self.client.on_log = self._on_log  # only until the CONNACK (see _on_log)
        self._connecting = True  # before connect(): paho may report a dropped connection from inside it
        try:
            if not self._tried_once:
                self._tried_once = True
                self.client.connect(self.url.host, self.url.port, keepalive=30, **self._connect_options())
            else:
                self.client.reconnect()
            no_delay(self.client.socket())
        except OSError as err:
            self._connecting = False
            refusal = connect_failed(str(self.url), self.url.host, self.url.port, self.url.security, err)
            if refusal is not None:
                self._refused(refusal)
                return False
            log.info("%s: broker %s unreachable (%s)", self.client_id, self.url, err)
            self._backoff.failed()
            return False
        return True

    _connecting = False
    _tried_once = False

    def _connect_options(self) -> dict[str, Any]:
        """MQTT 5: a persistent session never starts clean; otherwise start clean once, resume after."""
        if self.protocol != "5":
            return {}
        mqtt = _paho()
        clean = False if self.persistent else mqtt.MQTT_CLEAN_START_FIRST_ONLY
        return {"clean_start": clean,
                "properties": _connect_properties(self.protocol, self.persistent, self.session_expiry_s,
                                                  self.max_incoming_packet)}

    def _drain_outbox(self) -> None:
        while True:
            try:
                fn = self._outbox.get_nowait()
            except queue.Empty:
                return
            fn()

    def _shutdown(self) -> None:
        if self.client is None:
            return
        try:
            if self.client.is_connected():
                self.on_stopping()
                self._drain_outbox()
                deadline = time.monotonic() + 1.0
                while (self.client.want_write() or not self._last_acked()) and time.monotonic() < deadline:
                    self.client.loop(timeout=0.02)
                self.connected.clear()
                self.client.disconnect()
                self.client.loop(timeout=0.05)
        except Exception:
            log.exception("%s: unclean shutdown", self.client_id)
        finally:
            sock = self.client.socket()
            if sock is not None:
                sock.close()

    def _last_acked(self) -> bool:
        """Whether the broker acknowledged our last QoS 1 publish (a QoS 0 one gets no answer to wait for).

        paho closes the socket right after writing DISCONNECT: an ack still unread then turns the close into a
        TCP reset, and the broker drops what it had not read yet, the DISCONNECT (it then publishes the will
        beside our clean offline status) and any QoS 0 message before it (the agent's last heartbeat).
        """
        last = self._last_acked_publish
        return last is None or last.rc != 0 or last.is_published()

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        self._connecting = False
        if reason_code.is_failure:
            refusal = refusal_error(str(self.url), reason_code)
            if refusal is not None:
                self._refused(refusal)
                return
            log.warning("%s: broker %s refused the connection: %s", self.client_id, self.url, reason_code)
            self._backoff.failed()
            return
        self._refusal_logged = None
        client.on_log = None  # set again before the next connect: it costs every packet a formatted line
        self._backoff.reset()
        self.connects += 1
        self._connected_at = time.monotonic()
        self.max_packet_size = getattr(properties, "MaximumPacketSize", None) if properties else None
        self.topic_alias_maximum = getattr(properties, "TopicAliasMaximum", 0) if properties else 0
        for flt in self.subscriptions:
            client.subscribe(flt, qos=1)
        self.connected.set()
        log.info("%s: connected to %s (MQTT %s, session present: %s)", self.client_id, self.url, self.protocol,
                 flags.session_present)
        self._call_hook(self.on_connected, flags.session_present)

    def _on_subscribe(self, reason_codes) -> None:
        failed = [str(rc) for rc in reason_codes if rc.is_failure]
        if failed:
            log.error("%s: broker refused subscription %s: %s", self.client_id, self.subscriptions, failed)
            return
        if not self.subscribed.is_set():
            log.info("%s: ready: subscribed to %s", self.client_id, ", ".join(self.subscriptions),
                     extra={"event": "ready", "subscriptions": list(self.subscriptions)})
        self.subscribed.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        if self._connecting and not self.fatal_error:  # closed before its CONNACK: a TLS or plaintext mistake?
            self._diagnose_drop()
        self._connecting = False
        self._backoff.failed()
        if self.connected.is_set() and not self._stop.is_set():
            self._check_taken_over(getattr(reason_code, "value", 0))
        if self.fatal:
            self.connected.clear()  # no "reconnecting" line: the loop stops and its owner reports the error
        self._mark_disconnected(str(reason_code))

    def _check_taken_over(self, reason: int) -> None:
        """The broker ended our session: stop (set :attr:`fatal`) if another client took our client id."""
        short = time.monotonic() - self._connected_at < SHORT_SESSION_S
        self._short_sessions = self._short_sessions + 1 if short else 0
        if reason == SESSION_TAKEN_OVER:
            why = "the broker handed our session to it (MQTT 5 reason 142, session taken over)"
        elif self._short_sessions >= TAKEN_OVER_AFTER:
            why = (f"the broker closed our last {self._short_sessions} connections within {SHORT_SESSION_S:g} s "
                   "of accepting them")
        else:
            return
        self.fatal_error = UsageError(f"another process is connected as client id {self.client_id!r}: {why}",
                                      self.identity_fix)

    def _on_log(self, client, userdata, level, text) -> None:
        """Keep paho's last error line: a broker's TLS alert after the handshake is reported only there.

        Attached only while a connection is set up: with a log hook, paho formats a line for every packet
        (properties included), a third of the link thread's time per message in a flood of small ones.
        """
        if socket_error(level, text):
            self._last_paho_error = text

    def _diagnose_drop(self) -> None:
        host, port = self.url.host, self.url.port
        refusal = dropped_before_connack(str(self.url), host, port, self.url.security, self._last_paho_error)
        if refusal is not None:
            self._refused(refusal)

    def _refused(self, err: BrokerRefusedError) -> None:
        """The broker refuses this client's setup: fatal before the first connection, else logged and retried.

        At start it is a configuration mistake, so the role exits with the error. Later (a revoked device, a
        broker whose password file changed) the client logs the refusal once and retries every
        ``refused_retry_s`` seconds, keeping its spool, until the broker accepts it again.
        """
        if self.connects == 0:
            log.error("%s: %s", self.client_id, err)
            self.fatal_error = err
            return
        if self._refusal_logged != str(err):
            log.error("%s: %s; retrying every %.0f s", self.client_id, err, self.refused_retry_s)
            self._refusal_logged = str(err)
        self._backoff.delay = max(self._backoff.delay, self.refused_retry_s)
        self._backoff.failed()

    def _mark_disconnected(self, why: str) -> None:
        if self.connected.is_set():
            log.warning("%s: disconnected from %s (%s); reconnecting", self.client_id, self.url, why)
        self.connected.clear()

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        failure = str(reason_code) if getattr(reason_code, "is_failure", False) else None
        self._call_hook(self.on_published, mid, failure)

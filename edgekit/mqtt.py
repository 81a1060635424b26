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
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable
from urllib.parse import urlsplit

from edgekit.errors import UsageError

if TYPE_CHECKING:  # pragma: no cover
    import paho.mqtt.client as mqtt
    from paho.mqtt.properties import Properties

__all__ = [
    "DEFAULT_PORT", "TOPIC_ROOT", "PROTOCOLS", "BrokerUrl", "parse_broker_url", "check_device_id", "topic",
    "features_filter", "device_of", "publish_packet_size", "publish_properties", "detect_protocol", "make_client",
    "ClientLoop",
]

log = logging.getLogger(__name__)

DEFAULT_PORT = 1883
TOPIC_ROOT = "edgekit/v1"
TOPIC_KINDS = ("features", "status", "heartbeat", "results", "deadletter")
PROTOCOLS = ("auto", "5", "3.1.1")
SESSION_EXPIRY_S = 7 * 24 * 3600  # a persistent MQTT 5 session outlives a week-long receiver outage
RECEIVE_MAXIMUM = 1024  # QoS 1 messages the broker may have in flight to us (MQTT 5); 3.1.1 uses the broker's
SESSION_TAKEN_OVER = 142  # MQTT 5 DISCONNECT reason: another client connected with our client id
SHORT_SESSION_S = 2.0  # a session the broker ends this soon after CONNACK may have been taken over ...
TAKEN_OVER_AFTER = 5  # ... and this many in a row mean another process has our client id


@dataclass(frozen=True)
class BrokerUrl:
    """Where the broker listens: ``mqtt://host:port``."""

    host: str
    port: int = DEFAULT_PORT

    def __str__(self) -> str:
        return f"mqtt://{self.host}:{self.port}"


def parse_broker_url(url: str) -> BrokerUrl:
    """Parse ``mqtt://host[:port]`` (a bare ``host[:port]`` is accepted too); one-line UsageError otherwise."""
    text = url.strip()
    if "://" not in text:
        text = "mqtt://" + text
    fix = "give the broker as mqtt://HOST:PORT, e.g. mqtt://localhost:1883"
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        raise UsageError(f"bad broker URL {url!r}", fix) from None
    if parts.scheme != "mqtt":
        raise UsageError(f"unsupported broker scheme {parts.scheme!r} in {url!r} (only mqtt:// is supported)", fix)
    if not parts.hostname or parts.path not in ("", "/") or parts.query:
        raise UsageError(f"bad broker URL {url!r}", fix)
    return BrokerUrl(parts.hostname, port or DEFAULT_PORT)


_DEVICE_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


def check_device_id(device_id: str) -> str:
    """A device id is one topic level: letters, digits, ``._-``, at most 64 characters."""
    if not _DEVICE_ID.match(device_id or ""):
        raise UsageError(f"bad device id {device_id!r}", "use 1-64 letters, digits, '.', '_' or '-', e.g. cam-07")
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


def _paho():
    import paho.mqtt.client as mqtt

    return mqtt


def make_client(client_id: str, protocol: str, *, persistent: bool = False, manual_ack: bool = False) -> "mqtt.Client":
    """A paho client with VERSION2 callbacks; ``persistent`` keeps the session (and its queue) across outages."""
    mqtt = _paho()
    version = mqtt.MQTTv5 if protocol == "5" else mqtt.MQTTv311
    clean = None if protocol == "5" else not persistent
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=clean,
                         protocol=version, manual_ack=manual_ack)
    client.max_inflight_messages_set(0)  # our own windows bound what is in flight
    client.max_queued_messages_set(0)
    return client


def _connect_properties(protocol: str, persistent: bool, max_incoming_packet: int | None = None):
    """MQTT 5 CONNECT properties; ``max_incoming_packet`` asks the broker to drop (not forward) anything
    larger, so an oversized publish never reaches this client's memory."""
    if protocol != "5":
        return None
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    props = Properties(PacketTypes.CONNECT)
    props.ReceiveMaximum = RECEIVE_MAXIMUM
    if persistent:
        props.SessionExpiryInterval = SESSION_EXPIRY_S
    if max_incoming_packet:
        props.MaximumPacketSize = max_incoming_packet
    return props


def detect_protocol(url: BrokerUrl, timeout: float = 5.0) -> str | None:
    """Ask the broker: ``"5"`` if it accepts an MQTT 5 CONNECT, else ``"3.1.1"``; None if it is unreachable."""
    for protocol in ("5", "3.1.1"):
        outcome = _try_connect(url, protocol, timeout)
        if outcome is None:
            return None
        if outcome:
            return protocol
    return "3.1.1"


def _try_connect(url: BrokerUrl, protocol: str, timeout: float) -> bool | None:
    """True on CONNACK success, False when refused or dropped, None when nothing listens."""
    result: dict[str, bool] = {}
    client = make_client(f"edgekit-probe-{socket.gethostname()}-{time.monotonic_ns() % 10**9}", protocol)
    client.on_connect = lambda c, u, flags, rc, props: result.setdefault("ok", not rc.is_failure)
    client.on_disconnect = lambda c, u, flags, rc, props: result.setdefault("ok", False)
    try:
        client.connect(url.host, url.port, keepalive=10)
    except OSError:
        return None
    deadline = time.monotonic() + timeout
    try:
        while "ok" not in result and time.monotonic() < deadline:
            if client.loop(timeout=0.05) != 0:
                result.setdefault("ok", False)
        if result.get("ok"):
            client.disconnect()
            client.loop(timeout=0.05)
    finally:
        sock = client.socket()
        if sock is not None:
            sock.close()
    return result.get("ok", False)


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
    stops and sets :attr:`fatal` to a one-line message instead of taking the session back forever.
    """

    tick_s = 0.005  # how long one network-loop pass may block: bounds the outbox's added latency
    read_burst = 256  # packets read per pass beyond paho's one (see _read_burst)

    def __init__(self, url: BrokerUrl, client_id: str, protocol: str, *, persistent: bool = False,
                 manual_ack: bool = False, will: _Will | None = None, subscriptions: tuple[str, ...] = (),
                 name: str = "mqtt", max_incoming_packet: int | None = None):
        self.url = url
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
        self.fatal: str | None = None  # set when this client must stop (its session taken over): a one-line error
        self._connected_at = 0.0
        self._short_sessions = 0  # sessions in a row the broker ended soon after CONNACK (3.1.1 take-over)
        self.dropped_offline = 0  # QoS 0 sends dropped because the broker was not connected
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
        self.client.publish(topic_name, data, qos=qos, retain=retain)
        return True

    def call_soon(self, fn: Callable[[], Any]) -> None:
        """Run ``fn`` on the loop thread (e.g. a manual ack)."""
        self._outbox.put(fn)

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
            detected = detect_protocol(self.url)
            if detected is None:
                log.info("%s: broker %s unreachable; retrying", self.client_id, self.url)
                self._backoff.failed()
                return False
            self.protocol = detected
        client = make_client(self.client_id, self.protocol, persistent=self.persistent, manual_ack=self.manual_ack)
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
        try:
            if not self._tried_once:
                self._tried_once = True
                self.client.connect(self.url.host, self.url.port, keepalive=30, **self._connect_options())
            else:
                self.client.reconnect()
        except OSError as err:
            log.info("%s: broker %s unreachable (%s)", self.client_id, self.url, err)
            self._backoff.failed()
            return False
        self._connecting = True
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
                "properties": _connect_properties(self.protocol, self.persistent, self.max_incoming_packet)}

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
                while self.client.want_write() and time.monotonic() < deadline:
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

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        self._connecting = False
        if reason_code.is_failure:
            log.warning("%s: broker %s refused the connection: %s", self.client_id, self.url, reason_code)
            self._backoff.failed()
            return
        self._backoff.reset()
        self.connects += 1
        self._connected_at = time.monotonic()
        self.max_packet_size = getattr(properties, "MaximumPacketSize", None) if properties else None
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
        self.fatal = f"another process is connected as client id {self.client_id!r}: {why}"

    def _mark_disconnected(self, why: str) -> None:
        if self.connected.is_set():
            log.warning("%s: disconnected from %s (%s); reconnecting", self.client_id, self.url, why)
        self.connected.clear()

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        failure = str(reason_code) if getattr(reason_code, "is_failure", False) else None
        self._call_hook(self.on_published, mid, failure)

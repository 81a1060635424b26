"""The one thread that owns a paho client, for the device and the server alike.

::

    other threads ──send()/call_soon()──► outbox ──► ClientLoop thread ──► paho Client ──► broker
                                                        │  connect, reconnect with backoff,
                                                        │  on_connect / on_message / on_publish
                                                        ▼
                                                hooks: on_connected, on_tick, on_published

paho is not thread-safe, so exactly one thread (the :class:`ClientLoop`) ever calls into a client; the others
hand it work through a queue.
"""

from __future__ import annotations

import logging
import queue
import select
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from edgekit.errors import BrokerRefusedError, EdgekitError, UsageError
from edgekit.mqtt.client import (
    SESSION_EXPIRY_S,
    connect_properties,
    detect_protocol,
    make_client,
    no_delay,
    paho_client,
)
from edgekit.mqtt.security import connect_failed, dropped_before_connack, refusal_error, socket_error
from edgekit.mqtt.topics import publish_packet_size
from edgekit.mqtt.urls import BrokerUrl

if TYPE_CHECKING:  # pragma: no cover
    import paho.mqtt.client as mqtt

log = logging.getLogger(__name__)

REFUSED_RETRY_S = 10.0  # a client refused after it once connected (e.g. revoked) retries this often
SESSION_TAKEN_OVER = 142  # MQTT 5 DISCONNECT reason: another client connected with our client id
SHORT_SESSION_S = 2.0  # a session the broker ends this soon after CONNACK may have been taken over ...
TAKEN_OVER_AFTER = 5  # ... and this many in a row mean another process has our client id
TAKEN_OVER_LOG_S = 600.0  # a client with credentials logs a taken session at most this often


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
class Will:
    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = True


class ClientLoop:
    """The one thread that owns a paho client: connect, reconnect with backoff, network loop, outbox.

    Subclasses (the device publisher, the server receiver) override the ``on_*`` hooks, which always run on
    this thread and may therefore call into ``self.client``.

    One client id is one process. When another client takes our session, the loop stops with
    :attr:`fatal_error` (the subclass's :attr:`identity_fix`) if it logs in without credentials, or logs and
    retries slowly if it has them (:meth:`_taken_over` says why), instead of taking the session back forever.
    """

    identity_fix = "give each client its own client id"

    tick_s = 0.005  # how long one network-loop pass may block: bounds the outbox's added latency
    refused_retry_s = REFUSED_RETRY_S
    read_burst = 256  # packets read per pass beyond paho's one (see _read_burst)

    def __init__(self, url: BrokerUrl, client_id: str, protocol: str, *, persistent: bool = False,
                 manual_ack: bool = False, will: Will | None = None, subscriptions: tuple[str, ...] = (),
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
        self._taken_over_logged = -TAKEN_OVER_LOG_S  # monotonic time of the last taken-session ERROR line
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

    def send(self, topic_name: str, payload: bytes | str, qos: int = 0, retain: bool = False, urgent=False) -> None:
        """Publish from any thread: the loop thread sends it on its next pass (if it fits the broker).

        A QoS 0 send while offline is dropped and counted: paho would drop it anyway, and queueing it (a
        heartbeat every few seconds through a long outage) would grow the outbox without bound. An ``urgent`` one
        cuts the pass's read burst short (a starved receiver's status must not wait seconds behind its frames).
        """
        if qos == 0 and not self.connected.is_set():
            self.dropped_offline += 1
            return
        self._outbox.put(lambda: self.publish_checked(topic_name, payload, qos, retain))
        self._urgent |= urgent

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
            self._mark_disconnected(f"network loop: {paho_client().error_string(rc)}")

    def _read_burst(self) -> int:
        """Read what is already waiting on the socket, up to :attr:`read_burst` packets.

        paho's ``loop()`` reads one incoming packet per call (QoS 1 messages do not raise its count), so a
        flood of small messages cost one whole pass each (select, outbox, tick) and real frames queued behind
        it for seconds. A paho error code (0 when fine).
        """
        sock = self.client.socket()
        for _ in range(self.read_burst):
            if sock is None or self._urgent or not select.select([sock], [], [], 0)[0]:
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
                detected = detect_protocol(self.url, self.client_id, self.persistent, self.session_expiry_s)
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
    _urgent = False  # an urgent send waits in the outbox (see send)

    def _connect_options(self) -> dict[str, Any]:
        """MQTT 5: a persistent session never starts clean; otherwise start clean once, resume after."""
        if self.protocol != "5":
            return {}
        mqtt = paho_client()
        clean = False if self.persistent else mqtt.MQTT_CLEAN_START_FIRST_ONLY
        return {"clean_start": clean,
                "properties": connect_properties(self.protocol, self.persistent, self.session_expiry_s,
                                                  self.max_incoming_packet)}

    def _drain_outbox(self) -> None:
        self._urgent = False
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
        if self.connected.is_set() and not self._stop.is_set():
            self._check_taken_over(getattr(reason_code, "value", 0))
        self._backoff.failed()  # ignored when a slow retry is already due (a taken session)
        if self.fatal:
            self.connected.clear()  # no "reconnecting" line: the loop stops and its owner reports the error
        self._mark_disconnected(str(reason_code))

    def _check_taken_over(self, reason: int) -> None:
        """The broker ended our session: did another client take our client id?

        Yes when the broker says so (MQTT 5 reason 142) or ended :data:`TAKEN_OVER_AFTER` sessions in a row
        within :data:`SHORT_SESSION_S`: MQTT 3.1.1 gives no reason, and Mosquitto 2.0 just closes the older
        connection in both versions.
        """
        short = time.monotonic() - self._connected_at < SHORT_SESSION_S
        self._short_sessions = self._short_sessions + 1 if short else 0
        if reason == SESSION_TAKEN_OVER:
            why = "the broker handed our session to it (MQTT 5 reason 142, session taken over)"
        elif self._short_sessions >= TAKEN_OVER_AFTER:
            why = (f"the broker closed our last {self._short_sessions} connections within {SHORT_SESSION_S:g} s "
                   "of accepting them")
        else:
            return
        self._taken_over(f"another process is connected as client id {self.client_id!r}: {why}")

    def _taken_over(self, problem: str) -> None:
        """Stop only when the taker can be told apart: a second copy of this role, fighting us for the session.

        Without credentials the broker binds no client id to anyone (Mosquitto's ``use_username_as_clientid``
        refuses clients without a user name), so this is an open development broker, where a second agent or
        receiver started with the same id is the usual cause: stop with :attr:`fatal_error`. With credentials
        the taker is either a process with the same credentials (a broker that binds client ids to user names,
        such as ``edgekit broker --secure``) or, on a broker that does not, any client that can log in: exiting
        would let any provisioned device shut us down. So log (at most every :data:`TAKEN_OVER_LOG_S`) and
        retry every :attr:`refused_retry_s`: two copies of one identity then take turns, slowly, instead of
        fighting many times a second.
        """
        security = self.url.security
        if not (security.username or security.cert):
            self.fatal_error = UsageError(problem, self.identity_fix)
            return
        now = time.monotonic()
        if now - self._taken_over_logged >= TAKEN_OVER_LOG_S:
            self._taken_over_logged = now
            log.error("%s: %s; retrying every %.0f s — if another process runs with these credentials, stop it "
                      "or give each its own user name or certificate; if not, the broker lets any client take "
                      "another's client id: bind them (edgekit broker --secure, or use_username_as_clientid)",
                      self.client_id, problem, self.refused_retry_s)
        self._retry_slowly()

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
        self._retry_slowly()

    def _retry_slowly(self) -> None:
        """Next connection attempt in :attr:`refused_retry_s` (a refusal or a taken session, not an outage)."""
        self._backoff.delay = max(self._backoff.delay, self.refused_retry_s)
        self._backoff.failed()

    def _mark_disconnected(self, why: str) -> None:
        if self.connected.is_set():
            log.warning("%s: disconnected from %s (%s); reconnecting", self.client_id, self.url, why)
        self.connected.clear()

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        failure = str(reason_code) if getattr(reason_code, "is_failure", False) else None
        self._call_hook(self.on_published, mid, failure)

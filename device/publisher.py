"""The publisher: the one thread that owns the device's MQTT client and drains the spool into it.

::

    spool ──take(window)──► size check ──► publish QoS 1 (MQTT 5: topic alias; v1 frames: content type, bundle-id) ──► broker
      ▲                        │ too big: discard, count, log (never sent: no reconnect loop)
      │                        └─ PUBACK (on_publish): in flight → awaiting the receiver
      └── confirm(boot, seq ranges) ◄── edgekit/v1/<id>/acks ◄── receiver, after its store commit
          no ack in time: re-send, oldest first (below)

A frame leaves the spool only when a receiver confirms it is stored (docs/device.md, Delivery); the
broker's PUBACK only frees a place in the ``window`` of publishes awaiting PUBACK. PUBACKs are tracked in
``on_publish`` through a ``mid → spool row`` map, never with ``wait_for_publish`` (which raises for
messages queued while offline); paho itself re-sends unPUBACKed frames after a reconnect. At most
``confirm_window`` frames are sent and unconfirmed: with no receiver running, the rest wait in the spool
(its policy applies), not in the broker. Spool rows that carry no seq (not frames) leave on the PUBACK.
An agent crash leaves unconfirmed rows in the spool, to be sent again on restart (the receiver's store is
idempotent).

Re-sends must not feed an overload that delays confirmations (issue 20: a receiver more than the timeout
behind made every device re-send, tripling its input). A frame is re-sent when its timer runs out (the
confirm timeout, or the confirmations' own measured delay if longer, as TCP sets its retransmission
timeout; ×2 per attempt, capped, ±20% jitter so devices do not re-send in step) *and* either the receiver has
confirmed a frame sent after it (so it was skipped: lost) or it has neither confirmed nor answered one for
longer than is normal for it now (gone: see ``_Silence``). A receiver that is merely behind keeps confirming older frames, and the newer ones wait in the
queue. A frame whose result came is stored (only a new row publishes one): its ack is on the way (a result can
outrun its ack by many seconds under load: benchmarks/bench_resend.py), so it is re-sent only after four times
as long a silence, when the receiver that stored it is gone with the ack.

The broker's size limit is learned from the MQTT 5 CONNACK (Maximum Packet Size) and combined with the
configured ``max_frame_bytes``: paho ignores the broker's limit, and an oversized publish makes the broker
drop the connection, paho re-send it on reconnect, and so on forever.
"""

from __future__ import annotations

import collections
import functools
import json
import logging
import math
import random
import threading
import time
from dataclasses import asdict, dataclass
from typing import Callable

from edgekit.delivery.acks import parse_ack
from edgekit.auth.tags import verify_message
from edgekit.mqtt.client_loop import ClientLoop, Will
from edgekit.mqtt.urls import BrokerUrl
from edgekit.mqtt.topics import TopicAliases, publish_packet_size, publish_properties, topic
from edgekit.device.spool import Spool, SpoolRow
from edgekit.wire.frame_v1 import HEADER_SIZE, frame_bundle_prefix
from edgekit.wire.frame_v2 import frame_version_of
from edgekit.wire.spec import mqtt5_properties

__all__ = ["PublisherCounters", "Publisher", "publish_refusal"]

#: A frame a result answered is re-sent only after this many confirm timeouts of silence from every receiver:
#: it is stored, and only an ack lost with a receiver that stopped (never one that is just behind) needs it.
ANSWERED_SILENCE = 4

log = logging.getLogger(__name__)


@dataclass
class PublisherCounters:
    sent: int = 0  # QoS 1 publishes handed to the broker (a re-send after a restart counts again)
    bytes_sent: int = 0  # frame payload bytes in those publishes
    acknowledged: int = 0  # PUBACKs from the broker
    confirmed: int = 0  # frames a receiver confirmed stored (deleted from the spool)
    resent: int = 0  # frames sent again because no receiver confirmed them in time
    acks: int = 0  # ack messages received from receivers
    ack_bytes: int = 0  # their payload bytes
    ignored_acks: int = 0  # ack messages that were not a valid ack
    refused_too_big: int = 0  # frames over the broker's or the configured size limit
    rejected: int = 0  # frames the broker answered with an MQTT 5 error reason
    results: int = 0
    ignored_results: int = 0  # results messages that were not a JSON object
    forged_results: int = 0  # results without a valid mac, with a key configured (never acted on)
    forged_acks: int = 0  # acks without a valid mac, with a key configured (never acted on)


@dataclass
class _Unconfirmed:
    """A sent frame awaiting its receiver's confirmation."""

    mid: int | None  # the publish awaiting PUBACK; None once PUBACKed (the re-send timer runs)
    attempts: int  # re-sends so far
    sent_at: float  # monotonic time of the latest send
    key: tuple[int | None, int | None] = (None, None)  # (boot_id, seq): what a result names
    due: float = math.inf  # monotonic time of the next re-send
    answered: bool = False  # a result came for it: stored, its ack is on the way


class _Silence:
    """How long the receivers have said nothing about this boot's frames, and what silence is normal for them
    now. A receiver starved of CPU answers in bursts seconds apart, and one that confirms our frames at r per
    second needs (frames awaiting it) / r to reach the newest: a silence shorter than twice the longest live
    pause of the last five minutes, or than twice that backlog time, proves nothing."""

    WINDOW_S = 300.0
    RATE_WINDOW_S = 60.0
    MIN_GAP_S = 1.0  # shorter pauses are just the gaps between acks

    def __init__(self):
        self.last = -math.inf
        self._gaps: collections.deque[tuple[float, float]] = collections.deque()  # (when it ended, its length)
        self._confirmed: collections.deque[tuple[float, int]] = collections.deque()  # (when, frames confirmed)
        self._confirmed_total = 0  # the frames in ``_confirmed``

    def progress(self, now: float, confirmed: int = 0) -> None:
        if now - self.last >= self.MIN_GAP_S and self.last > -math.inf:
            self._gaps.append((now, now - self.last))
        self.last = now
        if confirmed:
            self._confirmed.append((now, confirmed))
            self._confirmed_total += confirmed

    def limit(self, now: float, timeout_s: float, backlog: int) -> float:
        """The silence after which the receivers count as gone, with ``backlog`` frames awaiting them."""
        while self._gaps and now - self._gaps[0][0] > self.WINDOW_S:
            self._gaps.popleft()
        while self._confirmed and now - self._confirmed[0][0] > self.RATE_WINDOW_S:
            self._confirmed_total -= self._confirmed.popleft()[1]
        span = now - self._confirmed[0][0] if self._confirmed else 0.0
        rate = self._confirmed_total / span if span >= self.MIN_GAP_S else 0.0
        return max([timeout_s, 2 * backlog / rate if rate else 0.0] + [2 * gap for _, gap in self._gaps])


class _ConfirmDelay:
    """Smoothed delay from sending a frame to its confirmation, and the timeout it implies (RFC 6298's
    SRTT + 4·RTTVAR, never below the configured timeout)."""

    def __init__(self, floor_s: float):
        self.floor_s = floor_s
        self.srtt: float | None = None
        self.rttvar = 0.0

    def sample(self, delay_s: float) -> None:
        if self.srtt is None:
            self.srtt, self.rttvar = delay_s, delay_s / 2
        else:
            self.rttvar = 0.75 * self.rttvar + 0.25 * abs(self.srtt - delay_s)
            self.srtt = 0.875 * self.srtt + 0.125 * delay_s

    @property
    def timeout_s(self) -> float:
        return self.floor_s if self.srtt is None else max(self.floor_s, self.srtt + 4 * self.rttvar)


class Publisher(ClientLoop):
    """Sends spooled frames with QoS 1, keeps a retained online/offline status, receives results."""

    @property
    def identity_fix(self) -> str:
        return f"give each device its own --device-id (or stop the other agent running as {self.device_id})"

    def __init__(self, spool: Spool, url: BrokerUrl, device_id: str, protocol: str, *, boot_id: int = 0,
                 window: int = 64, max_frame_bytes: int | None = None,
                 on_result: Callable[[dict], None] | None = None, client_id: str | None = None,
                 status: dict | None = None, results_key: bytes | None = None, confirm_timeout_s: float = 5.0,
                 confirm_backoff_cap_s: float = 300.0, confirm_window: int = 1024):
        self.device_id = device_id
        self.status = status or {}  # extra fields of the online status (the agent's self-test, parity)
        self.status_topic = topic(device_id, "status")
        offline = json.dumps({"state": "offline", "device": device_id, "boot_id": boot_id}).encode()
        super().__init__(url, client_id or f"edgekit-device-{device_id}", protocol,
                         will=Will(self.status_topic, offline),
                         subscriptions=(topic(device_id, "results"), topic(device_id, "acks"), self.status_topic),
                         name=f"publisher-{device_id}")
        self.spool = spool
        self.boot_id = boot_id
        self.window = window
        self.max_frame_bytes = max_frame_bytes
        self.on_result = on_result
        self.results_key = results_key  # when set, only results signed with this device's key are taken
        self.counters = PublisherCounters()
        self._offline = offline
        self.confirm_timeout_s = confirm_timeout_s
        self.confirm_backoff_cap_s = confirm_backoff_cap_s
        self.confirm_window = confirm_window
        self._inflight: dict[int, tuple[int, bool]] = {}  # paho mid -> (spool row id, awaits a receiver's ack)
        self._unconfirmed: dict[int, _Unconfirmed] = {}  # spool row id -> its state, for frames with a seq
        self._delay = _ConfirmDelay(confirm_timeout_s)
        self._silence = _Silence()  # since the latest ack or result for this boot's frames
        self._newest_confirmed_send = -math.inf  # the latest send time among the frames confirmed so far
        # Per device and boot, not per frame: devices do not re-send in step, a device's frames stay in order.
        self._jitter = random.Random(f"{device_id}/{boot_id}").uniform(0.8, 1.2)
        self._row_of: dict[tuple[int | None, int | None], int] = {}  # (boot_id, seq) -> spool row, unconfirmed
        self._high_water = 0  # highest spool row id handed to paho
        self._next_expire = 0.0
        self._next_resend_check = 0.0
        self._aliases = TopicAliases()  # MQTT 5: the features topic's name once per connection

    @property
    def inflight(self) -> int:
        return len(self._inflight)

    @property
    def unconfirmed(self) -> int:
        """Frames sent and not yet confirmed by a receiver."""
        return len(self._unconfirmed)

    def handed_over(self) -> bool:
        """True when the broker has acknowledged every frame that may be sent now: none awaits a PUBACK, and
        the spool holds no unsent frame (or the confirmation window is full). Safe from other threads."""
        if self._inflight:
            return False
        return len(self._unconfirmed) >= self.confirm_window or not self.spool.take(self._high_water, 1)

    def size_limit(self, topic_name: str) -> int | None:
        """Largest payload allowed on ``topic_name``: the broker's packet limit and ours, whichever is lower."""
        limits = [self.max_frame_bytes] if self.max_frame_bytes else []
        if self.max_packet_size:
            maximum = self.topic_alias_maximum if self.protocol == "5" else 0
            limits.append(self.max_packet_size - _packet_overhead(topic_name, self.protocol, maximum))
        return min(limits) if limits else None

    def _frame_properties(self, frame: bytes):
        """MQTT 5: the frame's content type and ``bundle-id`` user property (docs/wire-format.md, Transport);
        None for MQTT 3.1.1, where the frame travels alone."""
        if self.protocol != "5" or frame_version_of(frame) == 2:  # version 2: no properties (wire-format.md)
            return None
        return _bundle_properties(frame_bundle_prefix(frame).hex())

    # ---- hooks (publisher thread) -----------------------------------------------------------------------
    def on_connected(self, session_present: bool) -> None:
        if self.protocol == "5":
            self._aliases.reset(self.topic_alias_maximum, self.client)
        self._publish_online()

    def _publish_online(self) -> None:
        online = {"state": "online", "device": self.device_id, "boot_id": self.boot_id, "since": time.time(),
                  **self.status}
        self.publish_checked(self.status_topic, json.dumps(online), qos=1, retain=True)

    def on_stopping(self) -> None:
        self.client.unsubscribe(self.status_topic)  # before: our own offline is no news to us
        self.publish_checked(self.status_topic, self._offline, qos=1, retain=True)

    def on_tick(self) -> None:
        now = time.monotonic()
        if now >= self._next_expire:
            self.spool.expire()
            self._next_expire = now + 1.0
        if not self.connected.is_set():
            return
        if now >= self._next_resend_check:
            self._resend_due(now)
            self._next_resend_check = now + 0.05
        room = min(self.window - len(self._inflight), self.confirm_window - len(self._unconfirmed))
        if room <= 0:
            return
        for row in self.spool.take(self._high_water, room):
            self._send_row(row)
            self._high_water = row.id  # only now: a publish that raised is retried on the next tick

    def _resend_due(self, now: float) -> None:
        """Re-send, oldest first, the PUBACKed frames no receiver confirmed in time (as the window allows): one a
        later frame overtook, or any once the receivers have been silent as long; a frame a result answered
        (stored, its ack lost with a receiver that stopped) only after ``ANSWERED_SILENCE`` times that."""
        silence = now - self._silence.last
        limit = self._silence.limit(now, self._delay.timeout_s, len(self._unconfirmed))
        due = sorted(row_id for row_id, u in self._unconfirmed.items() if u.mid is None and u.due <= now
                     and (silence >= limit * ANSWERED_SILENCE if u.answered
                          else silence >= limit or u.sent_at < self._newest_confirmed_send))
        due = due[:self.window - len(self._inflight)]
        if not due:
            return
        rows = self.spool.get(due)
        for row_id in set(due) - {row.id for row in rows}:  # dropped by the spool's policy meanwhile
            self._forget(row_id)
        for row in rows:
            self._send_row(row, attempts=self._unconfirmed[row.id].attempts + 1)
            self.counters.resent += 1

    def _send_row(self, row: SpoolRow, attempts: int = 0) -> None:
        """Publish one spooled frame with QoS 1, or refuse it when it is over the size limit."""
        limit = self.size_limit(row.topic)
        if limit is not None and len(row.payload) > limit:
            self._forget(row.id)
            self._refuse(row.id, len(row.payload), limit)
            return
        info = self._aliases.publish(self.client, row.topic, row.payload, 1, self._frame_properties(row.payload))
        confirmable = row.seq is not None
        self._inflight[info.mid] = (row.id, confirmable)
        if confirmable:
            self._unconfirmed[row.id] = _Unconfirmed(info.mid, attempts, time.monotonic(), (row.boot_id, row.seq))
            self._row_of[(row.boot_id, row.seq)] = row.id
        self.counters.sent += 1
        self.counters.bytes_sent += len(row.payload)

    def on_published(self, mid: int, failure: str | None) -> None:
        row_id, confirmable = self._inflight.pop(mid, (None, False))
        if row_id is None:  # a status or heartbeat publish
            return
        if failure:
            self.counters.rejected += 1
            self._forget(row_id)
            self.spool.discard(row_id, f"broker: {failure}")
            log.error("%s: broker rejected a frame (%s); dropped it", self.device_id, failure)
            return
        self.counters.acknowledged += 1
        pending = self._unconfirmed.get(row_id)
        if pending is not None:  # start the re-send timer (None: a receiver confirmed it already)
            pending.mid = None
            wait = min(self.confirm_backoff_cap_s, self._delay.timeout_s * 2 ** pending.attempts)
            pending.due = time.monotonic() + wait * self._jitter
        elif not confirmable:
            self.spool.ack(row_id)

    def on_message(self, message) -> None:
        if message.topic.endswith("/acks"):
            self._on_ack(message.payload)
            return
        if message.topic == self.status_topic:
            self._on_status(message.payload)
            return
        try:
            result = json.loads(message.payload)
        except (ValueError, RecursionError):  # RecursionError: JSON nested too deep for the parser
            result = None
        if not isinstance(result, dict):
            self._ignore_result(message.topic)
            return
        if self.results_key is not None and not verify_message(self.results_key, self.device_id, "results", result):
            self._ignore_forged(message.topic)
            return
        self.counters.results += 1
        self._answered(result)
        if self.on_result is not None:
            self.on_result(result)

    def _on_status(self, payload: bytes) -> None:
        """Another boot's "offline" (its will, or its clean stop) replaced our retained "online": say it again.

        A duplicate agent pushed out by this one, or an old boot whose dead connection the broker notices only
        now, has its will published after our "online"; the retained status would then read offline while
        this agent runs. Reacting only to other boots' "offline" cannot start a loop between two agents.
        """
        try:
            status = json.loads(payload)
        except (ValueError, RecursionError):
            return
        if isinstance(status, dict) and status.get("state") == "offline" and status.get("boot_id") != self.boot_id:
            log.info("%s: boot %s reported offline on our status topic; restating online", self.device_id,
                     status.get("boot_id"))
            self._publish_online()

    def _on_ack(self, payload: bytes) -> None:
        """A receiver stored these frames: delete them from the spool (docs/device.md, Delivery)."""
        self.counters.acks += 1
        self.counters.ack_bytes += len(payload)
        ack = parse_ack(payload)
        if ack is not None and self.results_key is not None and not _signed(self.results_key, self.device_id, payload):
            self.counters.forged_acks += 1
            level = logging.WARNING if self.counters.forged_acks == 1 else logging.DEBUG
            log.log(level, "%s: ignored an ack without a valid mac (%d so far)", self.device_id,
                    self.counters.forged_acks)
            return
        if ack is None:
            self.counters.ignored_acks += 1
            level = logging.WARNING if self.counters.ignored_acks == 1 else logging.DEBUG
            log.log(level, "%s: ignored a malformed ack (%d so far)", self.device_id, self.counters.ignored_acks)
            return
        boot_id, ranges = ack
        now = time.monotonic()
        rows = [row_id for first, last in ranges for row_id in self.spool.confirm(boot_id, first, last)]
        for row_id in rows:
            self._confirmed(self._forget(row_id), now)
        if rows:
            self._silence.progress(now, confirmed=len(rows))

    def _forget(self, row_id: int) -> _Unconfirmed | None:
        """Stop tracking a frame (confirmed, dropped, refused); its state, if it was tracked."""
        pending = self._unconfirmed.pop(row_id, None)
        if pending is not None:
            self._row_of.pop(pending.key, None)
        return pending

    def _answered(self, result: dict) -> None:
        """A result means the receiver stored the frame (only a new row publishes one): its ack is on the way,
        behind the receiver's other messages (seconds behind, under load). The receiver is alive, too."""
        row_id = self._row_of.get((result.get("boot_id"), result.get("seq")))
        pending = self._unconfirmed.get(row_id) if row_id is not None else None
        if pending is not None:
            self._silence.progress(time.monotonic())
            pending.answered = True

    def _confirmed(self, pending: _Unconfirmed | None, now: float) -> None:
        """Count a confirmation; a frame sent once times the confirmation delay (a re-sent one is ambiguous)."""
        self.counters.confirmed += 1
        if pending is None:
            return
        self._newest_confirmed_send = max(self._newest_confirmed_send, pending.sent_at)
        if pending.attempts == 0:
            self._delay.sample(now - pending.sent_at)

    def _ignore_result(self, topic_name: str) -> None:
        """Count a result that is not a JSON object; warn only the first time, so a bad server cannot flood."""
        self.counters.ignored_results += 1
        level = logging.WARNING if self.counters.ignored_results == 1 else logging.DEBUG
        log.log(level, "%s: ignored a malformed result on %s (not a JSON object; %d so far)", self.device_id,
                topic_name, self.counters.ignored_results)

    def _ignore_forged(self, topic_name: str) -> None:
        """Count a result without a valid mac; warn only the first time, so a forger cannot flood the log."""
        self.counters.forged_results += 1
        level = logging.WARNING if self.counters.forged_results == 1 else logging.DEBUG
        log.log(level, "%s: ignored a result on %s without a valid mac (%d so far)", self.device_id, topic_name,
                self.counters.forged_results)

    def _refuse(self, row_id: int, size: int, limit: int) -> None:
        self.counters.refused_too_big += 1
        self.spool.discard(row_id, "too-big")
        log.error("%s: refused a %d-byte frame: over the %d-byte limit (broker max_packet_size / "
                  "--max-frame-bytes); raise the limit or pick a smaller codec", self.device_id, size, limit)

    def stats(self) -> dict:
        return {**asdict(self.counters), "inflight": self.inflight, "unconfirmed": self.unconfirmed,
                "connected": self.connected.is_set(),
                "connects": self.connects, "dropped_offline": self.dropped_offline}


class _StatusOnce(ClientLoop):
    """A short-lived client that publishes one retained status and stops (the agent refused to run)."""

    def __init__(self, url: BrokerUrl, device_id: str, protocol: str, payload: str):
        # Its own client id: a duplicate agent of this device, if one runs, keeps its session.
        super().__init__(url, f"edgekit-device-{device_id}-status", protocol, name=f"status-{device_id}")
        self.status_topic = topic(device_id, "status")
        self.payload = payload
        self.delivered = threading.Event()

    def on_connected(self, session_present: bool) -> None:
        self.publish_checked(self.status_topic, self.payload, qos=1, retain=True)

    def on_published(self, mid: int, failure: str | None) -> None:
        if failure is None:
            self.delivered.set()


def publish_refusal(url: BrokerUrl, device_id: str, protocol: str, details: dict, timeout_s: float = 5.0) -> bool:
    """Publish the retained ``{"state": "refused", ...details}`` status of an agent that will not run, so the
    server sees why the device is gone (docs/device.md, Status). True once the broker acknowledged it; False
    when it was not reachable (or refused us) within ``timeout_s``: the agent exits either way."""
    status = {"state": "refused", "device": device_id, "since": time.time(), **details}
    client = _StatusOnce(url, device_id, protocol, json.dumps(status))
    client.start()
    deadline = time.monotonic() + timeout_s
    while not client.delivered.is_set() and client.alive and time.monotonic() < deadline:
        client.delivered.wait(0.05)
    client.stop(timeout=1.0)
    return client.delivered.is_set()


@functools.lru_cache(maxsize=16)
def _packet_overhead(topic_name: str, protocol: str, alias_maximum: int) -> int:
    """PUBLISH bytes around a frame on ``topic_name`` at most (v1's properties, and the alias of a topic's first
    publish): computed once per topic and broker setting, not once per frame."""
    v1 = _bundle_properties(frame_bundle_prefix(bytes(HEADER_SIZE)).hex()) if protocol == "5" else None
    props = TopicAliases.largest_properties(v1, alias_maximum)
    return publish_packet_size(topic_name, 0, protocol, properties=props)


@functools.lru_cache(maxsize=16)
def _bundle_properties(bundle_prefix: str):
    """The MQTT 5 properties of a bundle's frames, built once per bundle instead of once per frame."""
    return publish_properties(*mqtt5_properties(bundle_prefix))


def _signed(key: bytes, device_id: str, payload: bytes) -> bool:
    """True when an ack (already parsed as well-formed JSON) carries its valid mac for this device."""
    return verify_message(key, device_id, "acks", json.loads(payload))

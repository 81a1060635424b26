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

Re-sends must not feed an overload that delays confirmations (issue 20). A frame is re-sent, oldest first,
when its timer runs out and :class:`~edgekit.delivery.resend.ResendRule` judges it lost: the receivers' own
statuses (``edgekit/v1/$receivers/+/status``: how far behind each is) make the device wait while any receiver
that may hold it is behind; without them, the acks and results alone decide (docs/device.md, Delivery).

The broker's size limit is learned from the MQTT 5 CONNACK (Maximum Packet Size) and combined with the
configured ``max_frame_bytes``: paho ignores the broker's limit, and an oversized publish makes the broker
drop the connection, paho re-send it on reconnect, and so on forever.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import threading
import time
from dataclasses import asdict, dataclass
from typing import Callable

from edgekit.delivery.acks import parse_ack
from edgekit.delivery.receiver_status import parse_status
from edgekit.delivery.resend import ResendRule
from edgekit.auth.tags import verify_message
from edgekit.mqtt.client_loop import ClientLoop, Will
from edgekit.mqtt.urls import BrokerUrl
from edgekit.mqtt.topics import (RECEIVER_STATUS_FILTER, RECEIVERS_ROOT, TopicAliases, publish_packet_size,
                                 publish_properties, topic)
from edgekit.device.spool import Spool, SpoolRow
from edgekit.wire.frame_v1 import HEADER_SIZE, frame_bundle_prefix
from edgekit.wire.frame_v2 import frame_version_of
from edgekit.wire.spec import mqtt5_properties

__all__ = ["PublisherCounters", "Publisher", "publish_refusal"]

log = logging.getLogger(__name__)


@dataclass
class PublisherCounters:
    sent: int = 0  # QoS 1 publishes handed to the broker (a re-send after a restart counts again)
    bytes_sent: int = 0  # frame payload bytes in those publishes
    acknowledged: int = 0  # PUBACKs from the broker
    bytes_acknowledged: int = 0  # frame payload bytes the broker PUBACKed (the uplink's measured rate)
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
    ignored_statuses: int = 0  # receiver status messages that were not a valid status (never acted on)


@dataclass
class _Unconfirmed:
    """A sent frame awaiting its receiver's confirmation."""

    mid: int | None  # the publish awaiting PUBACK; None once PUBACKed (the re-send timer runs)
    attempts: int  # re-sends so far
    sent_at: float  # monotonic time of the latest send
    key: tuple[int | None, int | None] = (None, None)  # (boot_id, seq): what a result names
    due: float = math.inf  # monotonic time of the next re-send
    answered: bool = False  # a result came for it: stored, its ack is on the way


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
                         subscriptions=(topic(device_id, "results"), topic(device_id, "acks"), self.status_topic,
                                        RECEIVER_STATUS_FILTER),
                         name=f"publisher-{device_id}")
        self.spool = spool
        self.boot_id = boot_id
        self.window = window
        self.max_frame_bytes = max_frame_bytes
        self.on_result = on_result
        self.results_key = results_key  # when set, only results signed with this device's key are taken
        self.counters = PublisherCounters()
        self._offline = offline
        self.confirm_window = confirm_window
        self._inflight: dict[int, tuple[int, bool]] = {}  # paho mid -> (spool row id, awaits a receiver's ack)
        self._sizes: dict[int, int] = {}  # paho mid -> frame bytes, counted when the broker acknowledges them
        self._unconfirmed: dict[int, _Unconfirmed] = {}  # spool row id -> its state, for frames with a seq
        self._resend = ResendRule(device_id, boot_id, confirm_timeout_s, confirm_backoff_cap_s)
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
        """Re-send, oldest first, the PUBACKed frames whose timer ran out and that the rule judges lost (as the
        window allows)."""
        timed_out = [(row_id, u) for row_id, u in self._unconfirmed.items() if u.mid is None and u.due <= now]
        if not timed_out:
            return
        lost = self._resend.judge(now, len(self._unconfirmed))
        due = sorted(row_id for row_id, u in timed_out if lost(u.sent_at, u.answered))
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
        self._sizes[info.mid] = len(row.payload)
        if confirmable:
            self._unconfirmed[row.id] = _Unconfirmed(info.mid, attempts, time.monotonic(), (row.boot_id, row.seq))
            self._row_of[(row.boot_id, row.seq)] = row.id
        self.counters.sent += 1
        self.counters.bytes_sent += len(row.payload)

    def on_published(self, mid: int, failure: str | None) -> None:
        row_id, confirmable = self._inflight.pop(mid, (None, False))
        size = self._sizes.pop(mid, 0)
        if row_id is None:  # a status or heartbeat publish
            return
        if failure:
            self.counters.rejected += 1
            self._forget(row_id)
            self.spool.discard(row_id, f"broker: {failure}")
            log.error("%s: broker rejected a frame (%s); dropped it", self.device_id, failure)
            return
        self.counters.acknowledged += 1
        self.counters.bytes_acknowledged += size
        pending = self._unconfirmed.get(row_id)
        if pending is not None:  # start the re-send timer (None: a receiver confirmed it already)
            pending.mid = None
            pending.due = time.monotonic() + self._resend.wait_s(pending.attempts)
        elif not confirmable:
            self.spool.ack(row_id)

    def on_message(self, message) -> None:
        if message.topic.endswith("/acks"):
            self._on_ack(message.payload)
            return
        if message.topic == self.status_topic:
            self._on_status(message.payload)
            return
        if message.topic.startswith(RECEIVERS_ROOT):  # a receiver's status: how far behind it is
            self._on_receiver_status(message.payload)
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

    def _on_receiver_status(self, payload: bytes) -> None:
        status = parse_status(payload)
        if status is None:
            self.counters.ignored_statuses += 1
            level = logging.WARNING if self.counters.ignored_statuses == 1 else logging.DEBUG
            log.log(level, "%s: ignored a malformed receiver status (%d so far)", self.device_id,
                    self.counters.ignored_statuses)
            return
        self._resend.receivers.heard(status, time.monotonic())

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
            self._resend.silence.progress(now, confirmed=len(rows))

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
            self._resend.silence.progress(time.monotonic())
            pending.answered = True

    def _confirmed(self, pending: _Unconfirmed | None, now: float) -> None:
        """Count a confirmation, and tell the re-send rule about it."""
        self.counters.confirmed += 1
        if pending is not None:
            self._resend.confirmed(pending.sent_at, pending.attempts, now)

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

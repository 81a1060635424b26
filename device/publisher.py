"""The publisher: the one thread that owns the device's MQTT client and drains the spool into it.

::

    spool ──take(window)──► size check ──► publish QoS 1 (MQTT 5: topic alias; v1 frames: content type, bundle-id) ──► broker
      ▲                        │ too big: discard, count, log (never sent: no reconnect loop)
      └── ack(row id) ◄── on_publish(mid) ◄── PUBACK

Acks are tracked in ``on_publish`` through a ``mid → spool row id`` map, never with ``wait_for_publish``
(which raises for messages queued while offline). At most ``window`` frames are in flight; paho itself
re-sends them after a reconnect, so the map stays valid across broker outages. An agent crash leaves
unacknowledged rows in the spool, to be sent again on restart (the receiver's store is idempotent).

The broker's size limit is learned from the MQTT 5 CONNACK (Maximum Packet Size) and combined with the
configured ``max_frame_bytes``: paho ignores the broker's limit, and an oversized publish makes the broker
drop the connection, paho re-send it on reconnect, and so on forever.
"""

from __future__ import annotations

import functools
import json
import logging
import time
from dataclasses import asdict, dataclass
from typing import Callable

from edgekit.auth import verify_message
from edgekit.mqtt import ClientLoop, BrokerUrl, TopicAliases, _Will, publish_packet_size, publish_properties, topic
from edgekit.device.spool import Spool, SpoolRow
from edgekit.frame import HEADER_SIZE, frame_bundle_prefix, frame_version_of
from edgekit.wire import mqtt5_properties

__all__ = ["PublisherCounters", "Publisher"]

log = logging.getLogger(__name__)


@dataclass
class PublisherCounters:
    sent: int = 0  # QoS 1 publishes handed to the broker (a re-send after a restart counts again)
    bytes_sent: int = 0  # frame payload bytes in those publishes
    acknowledged: int = 0
    refused_too_big: int = 0  # frames over the broker's or the configured size limit
    rejected: int = 0  # frames the broker answered with an MQTT 5 error reason
    results: int = 0
    ignored_results: int = 0  # results messages that were not a JSON object
    forged_results: int = 0  # results without a valid mac, with a key configured (never acted on)


class Publisher(ClientLoop):
    """Sends spooled frames with QoS 1, keeps a retained online/offline status, receives results."""

    def __init__(self, spool: Spool, url: BrokerUrl, device_id: str, protocol: str, *, boot_id: int = 0,
                 window: int = 64, max_frame_bytes: int | None = None,
                 on_result: Callable[[dict], None] | None = None, client_id: str | None = None,
                 status: dict | None = None, results_key: bytes | None = None):
        self.device_id = device_id
        self.status = status or {}  # extra fields of the online status (the agent's self-test, parity)
        self.status_topic = topic(device_id, "status")
        offline = json.dumps({"state": "offline", "device": device_id, "boot_id": boot_id}).encode()
        super().__init__(url, client_id or f"edgekit-device-{device_id}", protocol,
                         will=_Will(self.status_topic, offline), subscriptions=(topic(device_id, "results"),),
                         name=f"publisher-{device_id}")
        self.spool = spool
        self.boot_id = boot_id
        self.window = window
        self.max_frame_bytes = max_frame_bytes
        self.on_result = on_result
        self.results_key = results_key  # when set, only results signed with this device's key are taken
        self.counters = PublisherCounters()
        self._offline = offline
        self._inflight: dict[int, int] = {}  # paho mid -> spool row id
        self._high_water = 0  # highest spool row id handed to paho
        self._next_expire = 0.0
        self._aliases = TopicAliases()  # MQTT 5: the features topic's name once per connection

    @property
    def inflight(self) -> int:
        return len(self._inflight)

    def size_limit(self, topic_name: str) -> int | None:
        """Largest payload allowed on ``topic_name``: the broker's packet limit and ours, whichever is lower."""
        limits = [self.max_frame_bytes] if self.max_frame_bytes else []
        if self.max_packet_size:
            props = self._aliases.largest_properties(self._frame_properties(bytes(HEADER_SIZE)))  # v1: the largest
            overhead = publish_packet_size(topic_name, 0, self.protocol, properties=props)
            limits.append(self.max_packet_size - overhead)
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
        online = {"state": "online", "device": self.device_id, "boot_id": self.boot_id, "since": time.time(),
                  **self.status}
        self.publish_checked(self.status_topic, json.dumps(online), qos=1, retain=True)

    def on_stopping(self) -> None:
        self.publish_checked(self.status_topic, self._offline, qos=1, retain=True)

    def on_tick(self) -> None:
        now = time.monotonic()
        if now >= self._next_expire:
            self.spool.expire()
            self._next_expire = now + 1.0
        if not self.connected.is_set() or len(self._inflight) >= self.window:
            return
        for row in self.spool.take(self._high_water, self.window - len(self._inflight)):
            self._send_row(row)
            self._high_water = row.id  # only now: a publish that raised is retried on the next tick

    def _send_row(self, row: SpoolRow) -> None:
        """Publish one spooled frame with QoS 1, or refuse it when it is over the size limit."""
        limit = self.size_limit(row.topic)
        if limit is not None and len(row.payload) > limit:
            self._refuse(row.id, len(row.payload), limit)
            return
        topic_name, props = self._aliases.apply(row.topic, self._frame_properties(row.payload))
        info = self.client.publish(topic_name, row.payload, qos=1, properties=props)
        self._inflight[info.mid] = row.id
        self.counters.sent += 1
        self.counters.bytes_sent += len(row.payload)

    def on_published(self, mid: int, failure: str | None) -> None:
        row_id = self._inflight.pop(mid, None)
        if row_id is None:  # a status or heartbeat publish
            return
        if failure:
            self.counters.rejected += 1
            self.spool.discard(row_id, f"broker: {failure}")
            log.error("%s: broker rejected a frame (%s); dropped it", self.device_id, failure)
            return
        self.counters.acknowledged += 1
        self.spool.ack(row_id)

    def on_message(self, message) -> None:
        try:
            result = json.loads(message.payload)
        except ValueError:
            result = None
        if not isinstance(result, dict):
            self._ignore_result(message.topic)
            return
        if self.results_key is not None and not verify_message(self.results_key, self.device_id, "results", result):
            self._ignore_forged(message.topic)
            return
        self.counters.results += 1
        if self.on_result is not None:
            self.on_result(result)

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
        return {**asdict(self.counters), "inflight": self.inflight, "connected": self.connected.is_set(),
                "connects": self.connects, "dropped_offline": self.dropped_offline}


@functools.lru_cache(maxsize=16)
def _bundle_properties(bundle_prefix: str):
    """The MQTT 5 properties of a bundle's frames, built once per bundle instead of once per frame."""
    return publish_properties(*mqtt5_properties(bundle_prefix))

"""The server receiver: frames in, results out, nothing lost and nothing counted twice.

::

    broker ─► link thread (paho, manual ack) ─► validate ─┬─ invalid ─► count, ack; a rate-limited sample is
                                                          │            published and stored in batches (deadletters)
                                                          └─ valid ──► batcher ─► worker thread:
             ack ◄── link thread ◄── results published ◄── INSERT … ON CONFLICT DO NOTHING ◄── ONNX Runtime (batched,
                     (one hand-over per batch)                  (batch N)                    batch N+1 meanwhile:
                                                                                             server/inference.py)
                                                              │ database full/locked/read-only/gone: retry
                                                              ▼ with backoff, acking nothing (store_outage)

A frame is acknowledged to the broker only after its result is committed (paho's ``manual_ack``), and the
session is persistent, so a receiver that stops or crashes gets every unacknowledged frame again when it
comes back; the store's UNIQUE key turns those re-deliveries into no-ops. With MQTT 5 the subscription is
shared (``$share/<group>/…``) so N receivers split the load. Several bundles are served at once, routed by
the bundle id each frame carries.

After the commit the frame is also confirmed to its device (``edgekit/v1/<id>/acks``, batched by
:class:`~edgekit.delivery.acks.AckBatcher`), which only then deletes it from its spool; the :class:`Ledger` merges
the devices' heartbeats and reports frames that went missing (docs/server.md, Delivery). The CONNECT
announces a Maximum Packet Size (MQTT 5) just above the largest frame the bundles accept, so the broker
drops an oversized publish instead of handing it to us.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path

from edgekit.delivery.acks import AckBatcher
from edgekit.auth.authenticator import FrameAuthenticator, Replayed
from edgekit.auth.keys import KeyStore
from edgekit.auth.tags import sign_message
from edgekit.errors import UsageError
from edgekit.mqtt.topics import (HEARTBEAT_MAX_BYTES, device_id_problem, device_of, features_filter, printable_id,
                                 publish_packet_size, publish_properties, topic)
from edgekit.mqtt.client import SESSION_EXPIRY_S
from edgekit.mqtt.urls import BrokerUrl
from edgekit.mqtt.client_loop import ClientLoop
from edgekit.server.batcher import Batcher
from edgekit.server.deadletters import DeadLetterSink, SampleRate
from edgekit.server.inference import Inference, inference_threads
from edgekit.server.ledger import Ledger
from edgekit.server.metrics import ReceiverMetrics
from edgekit.server.status import StatusReporter
from edgekit.server.store import DeadLetter, Result, ResultStore, Retention
from edgekit.server.store_outage import StoreOutage, StoreUnavailable
from edgekit.server.text_tasks import TextTaskConfig, open_text_tasks
from edgekit.latency import LatencyWindow
from edgekit.bundle.signing import TrustPolicy

__all__ = ["ReceiverConfig", "Receiver"]

log = logging.getLogger(__name__)
#: The device column of a dead letter whose topic carries no valid device id (the id itself is in its error).
INVALID_DEVICE = "(invalid)"

PACKET_MARGIN = 1024  # bytes above the largest frame PUBLISH we accept: properties a sender may add


@dataclass
class ReceiverConfig:
    bundles: list[Path]
    broker: BrokerUrl
    db: str | Path  # a SQLite file, or a postgresql:// URL
    group: str | None = None  # a shared-subscription group: N receivers split the load (MQTT 5)
    client_id: str | None = None
    protocol: str = "auto"
    max_batch: int = 32
    max_wait_s: float = 0.005
    threads: int | None = None
    topk: int = 3
    summary_every_s: float = 10.0
    allow_failing_parity: bool = False  # serve bundles whose convert-time parity check failed (warned)
    trust: TrustPolicy | None = None  # the signers whose bundles are served (--trust-key, --require-signature)
    keys: Path | None = None  # a key store (edgekit keys): check frame tags, sign results (edgekit/auth/)
    require_auth: bool = False  # dead-letter every frame without a valid tag, even from devices without a key
    status_every_s: float = 1.0  # how often devices hear how far behind this receiver is (server/status.py)
    ack_every_s: float = 0.05  # a stored frame's confirmation to its device waits at most this long (batched);
    # 0: no confirmations at all (only the load benchmark's baseline: devices would keep re-sending)
    gap_grace_s: float = 300.0  # a hole in a device's seqs older than this is missing (alarm)
    session_expiry_s: int | None = None  # None: 7 days alone, GROUP_SESSION_EXPIRY_S in a --group
    deadletter_rate: SampleRate = SampleRate()  # dead letters sampled (stored, published) per device
    deadletter_retention: Retention = Retention()  # bound of the deadletters table
    text: TextTaskConfig = TextTaskConfig()  # what text bundles answer (server/text_tasks.py)


GROUP_SESSION_EXPIRY_S = 10  # a dead group member's queued frames are re-sent by their devices after this


@dataclass
class _Item:
    device: str
    topic: str
    frame: object
    mid: int
    qos: int
    received_ns: int


@dataclass
class ReceiverCounters:
    received: int = 0
    valid: int = 0
    stored: int = 0
    duplicates: int = 0
    batches: int = 0
    deadlettered: int = 0
    deadletter_reasons: dict[str, int] = field(default_factory=dict)

    @classmethod
    def resumed(cls, flat: dict[str, int]) -> "ReceiverCounters":
        """The counters a previous run of this receiver recorded (:meth:`flat`), so a restart continues them."""
        reasons = {k.split(":", 1)[1]: v for k, v in flat.items() if k.startswith("deadletter:")}
        return cls(**{k: v for k, v in flat.items() if k in cls.__dataclass_fields__ and k != "deadletter_reasons"},
                   deadletter_reasons=reasons)

    def flat(self) -> dict[str, int]:
        """The counters as one flat dict; safe while the link thread adds a reason (the dict is copied first)."""
        reasons = {f"deadletter:{k}": v for k, v in dict(self.deadletter_reasons).items()}
        return {"received": self.received, "valid": self.valid, "stored": self.stored, "batches": self.batches,
                "deadlettered": self.deadlettered, **reasons}


class _Link(ClientLoop):
    """The receiver's MQTT side: a persistent session, manual acks, frames handed to the receiver."""

    identity_fix = "give each receiver its own --client-id"

    def __init__(self, receiver: "Receiver", cfg: ReceiverConfig, client_id: str, max_incoming_packet: int):
        expiry = cfg.session_expiry_s or (GROUP_SESSION_EXPIRY_S if cfg.group else SESSION_EXPIRY_S)
        super().__init__(cfg.broker, client_id, cfg.protocol, persistent=True, manual_ack=True,
                         name="receiver-link", session_expiry_s=expiry, max_incoming_packet=max_incoming_packet)
        self.receiver = receiver
        self.cfg = cfg

    def _make_client(self) -> bool:
        if not super()._make_client():
            return False
        group = self.cfg.group
        if group and self.protocol != "5":
            log.warning("shared subscriptions need MQTT 5; this receiver gets every frame (results stay unique)")
            group = None
        self.subscriptions = (features_filter(group), topic("+", "heartbeat"))
        return True

    def on_message(self, message) -> None:
        self.receiver.on_message(message)

    def on_tick(self) -> None:
        self.receiver.send_acks()


class Receiver:
    """Loads the bundles and runners, then serves until :meth:`stop`."""

    def __init__(self, cfg: ReceiverConfig, registry=None):  # registry: where the metrics go (server/metrics.py)
        from edgekit.bundle.manifest import Bundle
        from edgekit.runtime import open_server_runner
        from edgekit.selftest import check_parity, require_pass, server_selftest
        from edgekit.wire.decoder import WireDecoder

        self.cfg = cfg
        keys = _key_store(cfg)  # a bad --frame-keys fails before the slow loading
        self.bundles = [Bundle.load(p, trust=cfg.trust) for p in cfg.bundles]
        for bundle in self.bundles:
            check_parity(bundle, cfg.allow_failing_parity)
        self.decoder = WireDecoder(self.bundles)
        threads = cfg.threads or inference_threads()
        self.runners = {b.bundle_id: open_server_runner(b.server_model.path, threads=threads, spin=False)
                        for b in self.bundles}
        self.selftests = {b.bundle_id: require_pass(server_selftest(b, self.runners[b.bundle_id]))
                          for b in self.bundles}
        self.client_id = cfg.client_id or f"edgekit-server-{socket.gethostname()}"
        self.store = ResultStore(cfg.db, receiver=self.client_id)
        self.text_tasks = open_text_tasks(cfg.text, self.bundles, cfg.db, cfg.topk)
        self.auth = FrameAuthenticator(keys, self.store, require=cfg.require_auth) if keys is not None else None
        self.batcher: Batcher[_Item] = Batcher(cfg.max_batch, cfg.max_wait_s)
        self.counters = ReceiverCounters.resumed(self.store.counters())
        self.latency = LatencyWindow()
        self.metrics = ReceiverMetrics(self, registry)
        self.inference = Inference(self.bundles, self.runners, self.text_tasks, cfg.topk, self.metrics)
        self.acks = AckBatcher(cfg.ack_every_s)
        self.ledger = Ledger(self.store, cfg.gap_grace_s)
        self._stop = threading.Event()
        self.deadletters = DeadLetterSink(self.store, cfg.deadletter_rate, cfg.deadletter_retention)
        self.outage = StoreOutage(self.store, self._stop)
        self._counters_failing = False  # the last record of the counters failed: said once, until one succeeds
        self.link = _Link(self, cfg, self.client_id, max_incoming_packet(self.bundles))
        self.status = StatusReporter(self.link, cfg.status_every_s)  # so that devices wait while it is behind
        self._worker = threading.Thread(target=self._work, name="receiver-worker", daemon=True)

    # ---- life cycle -------------------------------------------------------------------------------------
    def start(self) -> "Receiver":
        self.deadletters.start()
        self._worker.start()
        self.ledger.start()
        self.link.start()
        self.status.start()
        return self

    def stop(self) -> None:
        """Finish the frames already taken (their acks go out), then disconnect."""
        self._stop.set()
        self.status.stop()
        self._worker.join(10)
        self.inference.close()
        self.send_acks(force=True)
        self.ledger.stop()
        self.link.stop()
        self.deadletters.stop()
        self._save_counters()
        for task in self.text_tasks.values():
            task.close()
        self.store.close()

    def serve(self, stop: threading.Event) -> None:
        """Run until ``stop`` is set, logging a summary line every ``summary_every_s``."""
        self.start()
        next_summary = time.monotonic() + self.cfg.summary_every_s
        try:
            while not stop.wait(0.2):
                self.link.raise_if_fatal()
                if time.monotonic() >= next_summary:
                    next_summary += self.cfg.summary_every_s
                    self.log_summary()
        finally:
            self.stop()  # writes the final counters and closes the store
            self._log_summary_line()

    def log_summary(self) -> None:
        """Log the summary line and record the counters in the store (which must still be open)."""
        self._log_summary_line()
        self._save_counters()

    def _save_counters(self) -> None:
        """Record the counters (each batch records them too, see :meth:`_store`). A database that refuses
        writes costs this record, never the receiver, and one line per outage, not one per summary."""
        try:
            self.store.set_counters(self.counters.flat())
        except self.store.errors as err:
            if not self._counters_failing:
                cause, fix = self.store.describe(err)
                log.warning("counters not recorded: %s — %s", cause, fix)
            self._counters_failing = True
            return
        if self._counters_failing:
            log.warning("counters recorded again: the results database %s takes writes", self.store.name)
        self._counters_failing = False

    def _log_summary_line(self) -> None:
        """The summary line alone: safe after :meth:`stop` has closed the store."""
        c = self.counters
        p = self.latency.percentiles()
        log.warning("summary: received %d, stored %d, duplicates %d, dead letters %d, batches %d, queue %d, "
                    "e2e p50 %.1f ms p95 %.1f ms", c.received, c.stored, c.duplicates, c.deadlettered,
                    c.batches, self.batcher.qsize(), p["p50_ms"], p["p95_ms"],
                    extra={"event": "summary", "counters": c.flat(), "latency": p, "queue": self.batcher.qsize()})

    # ---- link thread ------------------------------------------------------------------------------------
    def send_acks(self, force: bool = False) -> None:
        """Confirm the stored frames to their devices once a batch is due (link thread, or at stop)."""
        for device, payload in self.acks.take_due(force, self._ack_sealer):
            self.link.send(topic(device, "acks"), payload, qos=1)

    def _ack_sealer(self, device: str):
        """Signs a device's acks when it has a frame key: it deletes frames on an ack, a forged one must not pass."""
        key = self.auth.key(device) if self.auth is not None else None
        if key is None:
            return None
        return lambda message: sign_message(key, device, "acks", message)

    def on_message(self, message) -> None:
        """Validate one frame; never raises (a bad payload must not stop the receiver)."""
        from edgekit.wire.errors import FrameError

        received_ns = time.time_ns()
        device = device_of(message.topic)
        if message.topic.endswith("/heartbeat"):  # a device's drop report, for the ledger
            if device_id_problem(device) is None:
                self.ledger.heartbeat(device, bytes(message.payload))
            return
        self.counters.received += 1
        payload = bytes(message.payload)
        self.metrics.received_bytes += len(payload)
        problem = device_id_problem(device)
        if problem is not None:
            self._dead_letter_bad_id(message, device, problem, len(payload), received_ns)
            return
        frame = None
        try:
            with self.metrics.decode_seconds.time():
                frame = self.decoder.decode(payload, verify_tag=self.auth.tag_check(device) if self.auth else None)
            if self.auth is not None:
                self.auth.admit(device, frame)
        except FrameError as err:
            if isinstance(err, Replayed):  # a genuine frame already stored: its device may have missed the ack
                self.acks.add(device, int(frame.boot_id), int(frame.seq))
            self._dead_letter(message, device, err.code, err.reason, len(payload), received_ns)
            return
        except self.store.outage_errors as err:  # the replay window's memory (the store) is away: not the frame's
            log.debug("frame from %s not admitted (%s): never confirmed, its device sends it again", device, err)
            self.link.client.ack(message.mid, message.qos)
            return
        except Exception as err:  # a decoder bug: keep serving, but keep the evidence
            log.exception("decoder failed on a frame from %s", device)
            self._dead_letter(message, device, "undecodable", repr(err), len(payload), received_ns)
            return
        self.counters.valid += 1
        self.status.arrived()  # before the put: the worker may finish it at once
        self.batcher.put(_Item(device, message.topic, frame, message.mid, message.qos, received_ns))

    def _dead_letter(self, message, device: str, reason: str, error: str, nbytes: int, received_ns: int) -> None:
        """Dead-letter a frame on the link thread: counted and acked; published only when sampled."""
        if self._record_dead_letter(device, reason, error, nbytes, received_ns):
            self.link.publish_checked(topic(device, "deadletter"), self._dead_letter_body(
                message.topic, reason, error, nbytes, received_ns), qos=1)
        self.link.client.ack(message.mid, message.qos)

    def _dead_letter_bad_id(self, message, device: str | None, problem: str, nbytes: int, received_ns: int) -> None:
        """Dead-letter a frame whose topic has no valid device id (the agent's rule): recorded under
        :data:`INVALID_DEVICE` with the id escaped and cut short, never published (no topic may carry that
        id), then acked."""
        self._record_dead_letter(INVALID_DEVICE, "bad-device-id", f"device id {printable_id(device or '')}: {problem}",
                                 nbytes, received_ns)
        self.link.client.ack(message.mid, message.qos)

    def _record_dead_letter(self, device: str, reason: str, error: str, nbytes: int, received_ns: int) -> bool:
        """Count a dead letter and hand it to the sink (no I/O here); True when it is sampled."""
        c = self.counters
        c.deadlettered += 1
        c.deadletter_reasons[reason] = c.deadletter_reasons.get(reason, 0) + 1
        sampled = self.deadletters.offer(DeadLetter(device, reason, error, nbytes, received_ns))
        if sampled:
            log.info("dead letter from %s: %s (%s)", device, reason, error)
        return sampled

    def _dead_letter_body(self, topic_name: str, reason: str, error: str, nbytes: int, received_ns: int) -> str:
        return json.dumps({"reason": reason, "error": error, "bytes": nbytes, "received_ns": received_ns,
                           "topic": topic_name, "receiver": self.client_id})

    # ---- worker thread ----------------------------------------------------------------------------------
    def _work(self) -> None:
        """Store batch N while batch N+1 runs through the model (server/inference.py); the next batch is
        formed from what is queued already while one runs, and waits to fill only while the model is idle."""
        running: tuple[list[_Item], Future] | None = None
        while not (self._stop.is_set() and self.batcher.qsize() == 0 and running is None):
            batch = self.batcher.next_batch(timeout=0 if running else 0.1, fill=running is None)
            taken = (batch, self.inference.submit(batch)) if batch else None
            if running is not None and not self._store_batch(*running):
                return
            running = taken

    def _store_batch(self, batch: list[_Item], inferred: Future) -> bool:
        """Store, publish and ack a batch once its inference is done; False when stopping during an outage."""
        try:
            self._process(inferred.result())
        except StoreUnavailable as err:  # stopping: this batch and the queued frames stay unacked
            log.warning("%s", err)
            return False
        except Exception:  # never die: the frames stay unacked and come back after a restart
            log.exception("failed to process a batch of %d frames", len(batch))
        self.status.finished(len(batch), int(batch[-1].frame.timestamp_ns))
        return True

    def _process(self, results: list[tuple[_Item, Result, float]]) -> None:
        self.counters.batches += 1
        try:  # while the database itself fails (full, locked, read-only), this waits: nothing is acked
            fresh = self._store([r for _, r, _ in results])
        except StoreUnavailable:
            raise
        except Exception:
            log.warning("storing a batch of %d results failed; storing them one by one", len(results),
                        exc_info=True)
            self._store_each(results)
            return
        self._finish([(item, result, infer_ms, new) for (item, result, infer_ms), new in zip(results, fresh)])

    def _store_each(self, results: list[tuple[_Item, Result, float]]) -> None:
        """Store results one at a time after their batch failed, dead-lettering (and acking) any that fails
        alone: such a frame would fail again on every redelivery, and would take its batch down with it."""
        for item, result, infer_ms in results:
            try:
                (new,) = self._store([result])
            except StoreUnavailable:
                raise  # not this frame's fault: keep it and the rest unacked
            except Exception as err:
                log.exception("cannot store the result of frame %d/%d from %s", result.boot_id, result.seq,
                              item.device)
                self._dead_letter_item(item, "store-failed", repr(err))
            else:
                self._finish([(item, result, infer_ms, new)])

    def _store(self, results: list[Result]) -> list[bool]:
        """Insert ``results`` through an outage, with the counters in the same transaction: a receiver killed
        with ``kill -9`` has them recorded as of its last batch (docs/server.md, Counters)."""
        return self.outage.run(lambda: self.store.insert(results, self.counters.flat()))

    def _finish(self, done: list[tuple[_Item, Result, float, bool]]) -> None:
        """Stored (or duplicate) results ``(item, result, infer_ms, new)``: count them, then publish the new
        ones and ack every frame in one hand-over to the link thread (one per batch, not two per frame)."""
        messages = []
        for item, result, infer_ms, new in done:
            if self.auth is not None:
                self.auth.stored(item.device, result.boot_id, result.seq)
            if new:
                self.counters.stored += 1
                self.latency.add((result.done_ns - result.capture_ns) / 1e6)
                self.metrics.stored(result, item.frame.frame_bytes)
                key = self.auth.key(item.device) if self.auth is not None else None
                messages.append((topic(item.device, "results"), _result_json(result, infer_ms, key)))
            else:
                self.counters.duplicates += 1
            if self.cfg.ack_every_s:
                self.acks.add(item.device, result.boot_id, result.seq)
        received = [(item.mid, item.qos) for item, *_ in done]
        self.link.call_soon(lambda: self._settle(messages, received))

    def _settle(self, messages: list[tuple[str, str]], received: list[tuple[int, int]]) -> None:
        """On the link thread: publish a batch's results, then ack its frames to the broker."""
        for topic_name, body in messages:
            self.link.publish_checked(topic_name, body, qos=1)
        for mid, qos in received:
            self.link.client.ack(mid, qos)

    def _dead_letter_item(self, item: _Item, reason: str, error: str) -> None:
        """Dead-letter a decoded frame from the worker thread (publish and ack go through the link thread)."""
        nbytes = item.frame.frame_bytes
        if self._record_dead_letter(item.device, reason, error, nbytes, item.received_ns):
            self.link.send(topic(item.device, "deadletter"),
                           self._dead_letter_body(item.topic, reason, error, nbytes, item.received_ns), qos=1)
        self.acks.add(item.device, int(item.frame.boot_id), int(item.frame.seq))  # a re-send would fail again
        self.link.call_soon(lambda mid=item.mid, qos=item.qos: self.link.client.ack(mid, qos))


def max_incoming_packet(bundles) -> int:
    """The Maximum Packet Size to announce: the largest PUBLISH we take, plus :data:`PACKET_MARGIN`. That is
    the largest features PUBLISH any bundle accepts (header, biggest payload, the longest device id's topic,
    MQTT 5 frame properties), or a heartbeat of :data:`HEARTBEAT_MAX_BYTES` if larger."""
    from edgekit.wire.frame_v1 import HEADER_SIZE
    from edgekit.wire.spec import WireSpec, mqtt5_properties

    payload = max(WireSpec.from_bundle(b).max_payload_bytes for b in bundles)
    props = publish_properties(*mqtt5_properties(bundles[0].bundle_id))
    frame = publish_packet_size(topic("x" * 64, "features"), HEADER_SIZE + payload, "5", properties=props)
    heartbeat = publish_packet_size(topic("x" * 64, "heartbeat"), HEARTBEAT_MAX_BYTES, "5", qos=0)
    return max(frame, heartbeat) + PACKET_MARGIN


def _key_store(cfg: ReceiverConfig):
    """The devices' keys when ``cfg.keys`` is given (else None: frames are taken unchecked, as before)."""
    if cfg.keys is None:
        if cfg.require_auth:
            raise UsageError("--require-auth needs the devices' keys", "pass --frame-keys DIR (see edgekit keys add)")
        return None
    return KeyStore(cfg.keys)


def _result_json(r: Result, infer_ms: float, key: bytes | None = None) -> str:
    """The result message; with the device's key it carries a ``mac`` the agent checks (edgekit/auth/)."""
    message = {
        "seq": r.seq, "boot_id": r.boot_id, "device": r.device, "bundle_id": r.bundle_id[:16],
        "topk": r.topk,
        "timings": {"capture_ns": r.capture_ns, "received_ns": r.received_ns, "done_ns": r.done_ns,
                    "queue_ms": round((r.done_ns - r.received_ns) / 1e6 - infer_ms, 3),
                    "infer_ms": round(infer_ms, 3), "batch_size": r.batch_size},
    }
    return json.dumps(message if key is None else sign_message(key, r.device, "results", message))

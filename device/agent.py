"""The device agent: capture → preprocess → device half → frame → spool, while the publisher drains the spool.

::

    source ─► Preprocessing (manifest) ─► DeviceRunner (LiteRT/TFLite/ORT) ─► WireEncoder ─► Spool ─► Publisher
      paced at --fps                         int8 code + scale/zero point         frame    (SQLite)   (MQTT thread)
                                                                                  results ◄── edgekit/v1/<id>/results

The capture loop never touches MQTT (the publisher thread owns the client), so a broker outage only grows
the spool. Each start draws a new random ``boot_id`` and numbers frames from 0, which makes
``(device, boot_id, seq)`` a key the server can deduplicate on, even across restarts.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from edgekit.device.publisher import Publisher, publish_refusal
from edgekit.device.metrics import AgentMetrics
from edgekit.device.spool import Spool
from edgekit.device.uplink import UplinkLadder
from edgekit.errors import BundleError, EdgekitError, UsageError
from edgekit.logs import strict_json
from edgekit.mqtt.topics import HEARTBEAT_MAX_BYTES, topic
from edgekit.mqtt.urls import BrokerUrl
from edgekit.latency import LatencyWindow
from edgekit.bundle.signing import TrustPolicy

__all__ = ["AgentConfig", "Agent", "default_spool_path"]

log = logging.getLogger(__name__)


def default_spool_path(device_id: str) -> Path:
    return Path.home() / ".cache" / "edgekit" / f"spool-{device_id}.sqlite"


@dataclass
class AgentConfig:
    bundle: Path
    broker: BrokerUrl
    device_id: str
    source: str
    fps: float = 10.0  # 0: as fast as the device half runs
    spool: Path | None = None
    spool_max_bytes: int = 256 * 2**20
    spool_max_age_s: float = 7 * 24 * 3600
    spool_policy: str = "drop-oldest"
    runtime: str | None = None
    threads: int | None = None
    target: str | None = None
    codec: str | None = None
    protocol: str = "auto"
    max_frame_bytes: int | None = None
    heartbeat_s: float = 5.0
    loop: bool = False
    limit: int | None = None
    linger_s: float = 5.0  # after a finite source: how long to wait for the last results
    allow_failing_parity: bool = False  # run a bundle whose convert-time parity check failed (warned, in status)
    trust: TrustPolicy | None = None  # the signers whose bundles run (--trust-key, --require-signature)
    window: int = 64
    key: Path | None = None  # this device's key file (edgekit keys add): tag frames, accept only signed results
    confirm_timeout_s: float = 5.0  # re-send a frame no receiver confirmed within this (doubling per attempt)
    uplink_budget: float | None = None  # bytes per second the frames may take (--uplink-budget; nested bundles)
    level: int | None = None  # pin this rate level of a nested bundle (--level)
    uplink_window_s: float = 1.0  # how often the rate ladder measures the uplink (device/uplink.py)
    uplink_hold_s: float = 3.0  # how long the uplink must be clear before a step up


@dataclass
class AgentCounters:
    captured: int = 0
    spooled: int = 0
    refused_too_big: int = 0
    refused_input: int = 0  # inputs the device half refused (a text bundle's empty or non-UTF-8 lines)


def codec_description(encoder) -> str:
    """The codec frames go out with and, for ``ans``, its backend: ``constriction`` (native) or ``portable`` (the
    numpy/pure-Python rANS, same bytes, 3-5x slower), which a Raspberry Pi uses: a slow device is then explained."""
    backend = getattr(encoder.codec, "backend", None)
    return f"{encoder.codec_name} ({backend.name} backend)" if backend is not None else encoder.codec_name


@contextmanager
def _refusal_published(cfg: AgentConfig, **details):
    """Around a start-up check: when it refuses the bundle, publish the retained ``refused`` status with the
    reason before the error ends the agent, so the server can see why this device is gone."""
    try:
        yield
    except EdgekitError as err:
        if publish_refusal(cfg.broker, cfg.device_id, cfg.protocol,
                           {"reason": str(err), "exit_code": err.exit_code, **details}):
            log.info("%s: published the refused status", cfg.device_id)
        else:
            log.warning("%s: broker %s did not take the refused status (unreachable, or refusing us)", cfg.device_id,
                        cfg.broker)
        raise


def _read_key(cfg: AgentConfig) -> bytes | None:
    """The device's key from ``--frame-key`` (a one-line error for a bad or foreign key file), or None."""
    if cfg.key is None:
        return None
    from edgekit.auth.keys import read_key_file

    return read_key_file(cfg.key, cfg.device_id)[1]


class Agent:
    """Loads the bundle (hashes verified), the device half and the source; :meth:`run` streams them."""

    def __init__(self, cfg: AgentConfig, registry=None):  # registry: where the metrics go (device/metrics.py)
        from edgekit.bundle.manifest import Bundle
        from edgekit.wire.codecs.registry import pick_codec
        from edgekit.device.sources import open_source
        from edgekit.runtime import open_device_runner
        from edgekit.selftest import check_parity, device_selftest, require_pass
        from edgekit.wire.encoder import WireEncoder
        from edgekit.wire.spec import new_boot_id

        self.cfg = cfg
        key = _read_key(cfg)  # a bad --frame-key fails before the slow loading
        self.spool = Spool(cfg.spool or default_spool_path(cfg.device_id), cfg.spool_max_bytes,  # locked: first
                           cfg.spool_max_age_s, cfg.spool_policy)
        self.bundle = Bundle.load(cfg.bundle, trust=cfg.trust)
        with _refusal_published(cfg):
            failing_allowed = check_parity(self.bundle, cfg.allow_failing_parity)
        model = self.bundle.device_model(target=cfg.target, runtime=cfg.runtime)
        self.runner = open_device_runner(model.path, runtime=cfg.runtime, threads=cfg.threads,
                                         code_quant=model.code_quant)
        if self.runner.code_quant is None:
            raise UsageError(f"device model {model.path.name} is not quantized", "use a bundle from edgekit convert")
        selftest = device_selftest(self.bundle, self.runner, model.path)
        with _refusal_published(cfg, selftest=selftest.as_dict()):
            self.selftest = require_pass(selftest)
        status = {"selftest": self.selftest.as_dict(),
                  "parity": {"passed": self.bundle.manifest["parity"]["passed"], "allowed_failing": failing_allowed}}
        self.encoder = WireEncoder.from_bundle(self.bundle, codec=pick_codec(self.bundle.wire, cfg.codec))
        if self.encoder.codec_name != self.bundle.wire["default_codec"] and cfg.codec is None:
            log.warning("the bundle's default codec %s cannot run here (a package is missing): using %s",
                        self.bundle.wire["default_codec"], self.encoder.codec_name)
        self.ladder = ladder_for(self.encoder.spec.levels, cfg)  # a nested bundle's rate level per frame
        self.level_counts = [0] * len(self.encoder.spec.levels)  # frames spooled per rate level
        mismatch = self.encoder.spec.quant_mismatch(*self.runner.code_quant)
        if mismatch:  # every frame would be refused by the encoder and by the server
            raise BundleError(f"device model {model.path.name} outputs {mismatch}", "re-create the bundle with edgekit convert")
        if key is not None:
            from edgekit.auth.tags import seal

            if self.encoder.frame_version != 2:
                raise BundleError(f"bundle {self.bundle.bundle_id[:12]} allows only frame version 1, and authenticated "
                                  "frames are version 2", "re-create the bundle with edgekit convert")
            self.encoder.sealer = seal(key, cfg.device_id)
        if "text" in self.bundle.manifest:  # lines of text, tokenized on the device (device/text_device.py)
            from edgekit.device.text_device import open_text_input

            self.source, self.text_half = open_text_input(cfg.source, self.bundle, self.runner)
            self._device_half = self.text_half.code
        else:
            self.source = open_source(cfg.source, self.bundle.input.preprocessing, self.runner.input_shape)
            self.text_half = None
            self._device_half = lambda x: self.runner.run(x[None])[0]
        self.boot_id = new_boot_id()
        self.features = topic(cfg.device_id, "features")
        self.publisher = Publisher(self.spool, cfg.broker, cfg.device_id, cfg.protocol, boot_id=self.boot_id,
                                   window=cfg.window, max_frame_bytes=cfg.max_frame_bytes, on_result=self._on_result,
                                   status=status, results_key=key, confirm_timeout_s=cfg.confirm_timeout_s)
        self.counters = AgentCounters()
        self.latency = LatencyWindow()
        self.metrics = AgentMetrics(self, registry)
        self.results_this_boot = 0
        self._started = time.monotonic()
        self._next_beat = self._started
        log.info("agent %s: bundle %s, %s via %s, codec %s, source %s, boot %08x, spool %s (%d frames waiting)",
                 cfg.device_id, self.bundle.bundle_id[:12], model.path.name, self.runner.runtime,
                 codec_description(self.encoder), self.source.description, self.boot_id, self.spool.path,
                 self.spool.depth)

    # ---- main loop --------------------------------------------------------------------------------------
    def run(self, stop: threading.Event) -> dict:
        """Stream the source until it ends (then drain the spool and wait for results) or ``stop`` is set."""
        self.publisher.start()
        try:
            for x in self._paced(stop):
                self.publisher.raise_if_fatal()
                self._capture(x)
                self._heartbeat_when_due()
            self._drain(stop)
        finally:
            self.heartbeat()
            self.publisher.stop()
            final = self.stats()  # before the spool closes: it reads the drop ranges
            self.spool.close()
        return final

    def _paced(self, stop: threading.Event):
        period = 1.0 / self.cfg.fps if self.cfg.fps > 0 else 0.0
        due = time.monotonic()
        count = 0
        while not stop.is_set():
            for x in self.source:
                if stop.is_set() or (self.cfg.limit is not None and count >= self.cfg.limit):
                    return
                if period:
                    due += period
                    stop.wait(max(0.0, due - time.monotonic()))
                yield x
                count += 1
            if not self.cfg.loop:
                return

    def _capture(self, x) -> None:
        captured_ns = time.time_ns()
        with self.metrics.inference_seconds.time():
            code = self._device_half(x)
        scale, zero_point = self.runner.code_quant
        seq = self.counters.captured
        if code is None:  # refused (logged by the text source): its seq is dropped, so the server sees no hole
            self.counters.captured += 1
            self.counters.refused_input += 1
            self.spool.record_drop(self.boot_id, seq, "refused-input")
            return
        level = self.ladder.level if self.ladder else None
        payload = self.encoder.encode(code, scale, zero_point, seq=seq, boot_id=self.boot_id,
                                      timestamp_ns=captured_ns, level=level)
        self.counters.captured += 1
        limit = self.publisher.size_limit(self.features)  # the one size rule: --max-frame-bytes and the broker's
        if limit is not None and len(payload) > limit:
            self.counters.refused_too_big += 1
            self.spool.record_drop(self.boot_id, seq, "too-big")
            log.error("refused a %d-byte frame: over the %d-byte limit (broker max_packet_size / --max-frame-bytes); "
                      "raise the limit or pick a smaller codec", len(payload), limit)
            return
        if self.spool.put(self.features, payload, boot_id=self.boot_id, seq=seq) is not None:
            self.counters.spooled += 1
            if self.ladder:
                self._offered(level, len(payload))

    def _offered(self, level: int, nbytes: int) -> None:
        """Count a spooled frame of ``level`` and let the ladder measure; log a change of level once."""
        self.level_counts[level] += 1
        self.ladder.offered(level, nbytes)
        change = self.ladder.update(time.monotonic(), self.publisher.counters.bytes_acknowledged)
        if change is not None:
            channels = self.encoder.spec.levels
            log.info("uplink: rate level %d -> %d (%d -> %d code channels): %s", change.old, change.new,
                     channels[change.old], channels[change.new], change.why,
                     extra={"event": "level", "old": change.old, "new": change.new, "why": change.why})

    def _drain(self, stop: threading.Event) -> None:
        """A finite source ended: wait until the broker has every frame it may take, then up to ``linger_s``
        for the receiver's confirmations and the results. Frames still unconfirmed stay in the spool: the
        next start sends them again (docs/device.md, Delivery)."""
        while not stop.is_set() and self.spool.depth > 0 and not self.publisher.handed_over():
            self.publisher.raise_if_fatal()
            self._heartbeat_when_due()
            stop.wait(0.05)
        deadline = time.monotonic() + self.cfg.linger_s
        while not stop.is_set() and time.monotonic() < deadline and \
                (self.spool.depth > 0 or self.results_this_boot < self.counters.spooled):
            self._heartbeat_when_due()
            stop.wait(0.05)

    # ---- reporting --------------------------------------------------------------------------------------
    def _on_result(self, result: dict) -> None:
        """Runs on the publisher thread: log the end-to-end latency of one frame."""
        timings = result.get("timings")
        capture_ns = timings.get("capture_ns") if isinstance(timings, dict) else None  # a bad server's result
        if result.get("boot_id") == self.boot_id:
            self.results_this_boot += 1
        if not isinstance(capture_ns, int):
            return
        e2e_ms = (time.time_ns() - capture_ns) / 1e6
        self.latency.add(e2e_ms)
        self.metrics.latency_seconds.observe(e2e_ms / 1e3)
        top = (result.get("topk") or [[None, None]])[0]
        log.info("result seq %s: %s (%.3f), end-to-end %.1f ms", result.get("seq"), top[0], top[1] or 0.0, e2e_ms,
                 extra={"event": "result", "seq": result.get("seq"), "boot_id": result.get("boot_id"),
                        "label": top[0], "score": top[1], "e2e_ms": round(e2e_ms, 3)})

    @property
    def dropped(self) -> int:
        """Frames lost by policy: dropped by the spool, refused as too big, or rejected by the broker."""
        p = self.publisher.counters
        return self.spool.counters.dropped + p.refused_too_big + p.rejected + self.counters.refused_too_big

    def stats(self) -> dict:
        p = self.publisher.counters
        s = self.spool.counters
        return {
            "device": self.cfg.device_id, "boot_id": self.boot_id, "captured": self.counters.captured,
            "spooled": self.counters.spooled, "sent": p.sent, "bytes_sent": p.bytes_sent, "acknowledged": p.acknowledged,
            "confirmed": p.confirmed, "resent": p.resent, "unconfirmed": self.publisher.unconfirmed,
            "acks": p.acks, "ack_bytes": p.ack_bytes,
            "dropped": self.dropped,
            "refused_too_big": p.refused_too_big + self.counters.refused_too_big + s.refused_too_big,
            "refused_input": self.counters.refused_input,
            "truncated": self.text_half.truncated if self.text_half is not None else 0,
            "queue_depth": self.spool.depth, "inflight": self.publisher.inflight, "results": p.results,
            "forged_results": p.forged_results, "forged_acks": p.forged_acks,
            "connected": self.publisher.connected.is_set(), "connects": self.publisher.connects,
            "uptime_s": round(time.monotonic() - self._started, 1),
            **{f"e2e_{k}": round(v, 2) if math.isfinite(v) else None for k, v in self.latency.percentiles().items()},
            # the server's gap accounting; settled first, so a drop in between is in drops, not a false gap
            "settled": self.spool.settled(self.features, self.boot_id, self.counters.captured),
            "drops": self.spool.drop_ranges(),  # [boot_id, first, last, reason]
            "level": self.ladder.level if self.ladder else None, "frames_per_level": self.level_counts,
        }

    def _heartbeat_when_due(self) -> None:
        """Heartbeat every ``heartbeat_s``, also while draining: the receivers see drops and settled marks."""
        if time.monotonic() >= self._next_beat:
            self.heartbeat()
            self._next_beat = time.monotonic() + self.cfg.heartbeat_s

    def heartbeat(self) -> None:
        stats = self.stats()
        self.publisher.send(topic(self.cfg.device_id, "heartbeat"), heartbeat_payload(stats), qos=0)
        log.info("heartbeat: captured %d, sent %d, acked %d, confirmed %d, queue %d, dropped %d, results %d",
                 stats["captured"], stats["sent"], stats["acknowledged"], stats["confirmed"], stats["queue_depth"],
                 stats["dropped"], stats["results"], extra={"event": "heartbeat", **stats})


def ladder_for(levels: tuple[int, ...], cfg: AgentConfig) -> UplinkLadder | None:
    """The rate ladder of a nested bundle (None for a bundle without levels, unless --uplink-budget or
    --level asks for one: then the ladder's one-line error says the bundle has none)."""
    if not levels and cfg.uplink_budget is None and cfg.level is None:
        return None
    return UplinkLadder(levels, cfg.uplink_budget, cfg.level, cfg.uplink_window_s, cfg.uplink_hold_s,
                        time.monotonic())


def heartbeat_payload(stats: dict) -> str:
    """The heartbeat's JSON within :data:`~edgekit.mqtt.topics.HEARTBEAT_MAX_BYTES`, keeping the newest drop ranges
    (the older ones were in earlier heartbeats): receivers' brokers drop a larger one unseen."""
    payload = strict_json(stats)
    while len(payload) > HEARTBEAT_MAX_BYTES and stats["drops"]:
        stats["drops"] = stats["drops"][: len(stats["drops"]) // 2]
        payload = strict_json(stats)
    return payload

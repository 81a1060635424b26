"""The receiver's Prometheus metrics (``edgekit server run --metrics-port``): what an operator's dashboard watches.

The counts are the receiver's own, read when Prometheus scrapes: :class:`~edgekit.server.receiver.ReceiverCounters`
(recorded with each batch and continued after a restart, so ``frames_stored_total`` matches this receiver's rows),
the frames its ack batcher confirmed to their devices, the frames its ledger reported missing. The
distributions (decode, inference, end-to-end latency, batch sizes) are histograms the receiver feeds as frames
pass. docs/server.md, Metrics, lists them and gives a scrape configuration and a Grafana dashboard.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from edgekit.metrics import INFERENCE_BUCKETS, LATENCY_BUCKETS, Distribution, connection_metrics

__all__ = ["ReceiverMetrics"]

#: Frames per inference batch: up to a --max-batch far above the default 32.
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
#: Seconds to decode one frame: tens of microseconds (raw) to milliseconds (large ANS-coded frames).
DECODE_BUCKETS = (0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025)

#: (metric, help, attribute of ReceiverCounters) of the counters the receiver already keeps.
_COUNTED = (
    ("edgekit_server_frames_received_total", "Frames received on the features topics, valid or not.", "received"),
    ("edgekit_server_frames_valid_total", "Frames that decoded and passed their checks.", "valid"),
    ("edgekit_server_frames_stored_total", "Results stored as new rows.", "stored"),
    ("edgekit_server_frames_duplicate_total", "Frames already stored (re-deliveries, re-sends): acked, not stored.",
     "duplicates"),
    ("edgekit_server_batches_total", "Batches taken by the worker (inference, store, acks).", "batches"),
)


class ReceiverMetrics:
    """A receiver's metrics in ``registry`` (a new one if None): its counters read at scrape time; the byte counts
    (the receiver keeps none) and the distributions fed by the receiver, each from one thread."""

    def __init__(self, receiver, registry: CollectorRegistry | None = None):
        self.receiver = receiver
        self.received_bytes = 0  # link thread
        self.stored_bytes = 0  # worker thread
        self.decode_seconds = Distribution("edgekit_server_decode_seconds", "Time to decode and check one frame.",
                                           DECODE_BUCKETS)  # link thread
        self.batch_size = Distribution("edgekit_server_batch_size", "Frames per inference batch (one bundle).",
                                       BATCH_BUCKETS)  # worker thread, as the two below
        self.inference_seconds = Distribution("edgekit_server_inference_seconds",
                                              "ONNX Runtime time per batch through the server half.", INFERENCE_BUCKETS)
        self.latency_seconds = Distribution("edgekit_server_e2e_latency_seconds",
                                            "Device capture to result stored, per new result (device and server "
                                            "clocks: keep them in sync).", LATENCY_BUCKETS)
        self.registry = registry if registry is not None else CollectorRegistry()
        self.registry.register(self)

    def stored(self, result, frame_bytes: int) -> None:
        """A new result stored: its frame's bytes, and its end-to-end latency."""
        self.stored_bytes += frame_bytes
        self.latency_seconds.observe((result.done_ns - result.capture_ns) / 1e9)

    def inferred(self, frames: int, seconds: float) -> None:
        """One batch through the server half."""
        self.batch_size.observe(frames)
        self.inference_seconds.observe(seconds)

    def collect(self):
        """The receiver's counts and state, read now (Prometheus calls this on every scrape)."""
        r = self.receiver
        for name, doc, attribute in _COUNTED:
            yield CounterMetricFamily(name, doc, value=getattr(r.counters, attribute))
        yield CounterMetricFamily("edgekit_server_frames_confirmed_total",
                                  "Frames confirmed stored to their devices (acks sent), which then delete them.",
                                  value=r.acks.confirmed)
        reasons = CounterMetricFamily("edgekit_server_dead_letters_total", "Frames dead-lettered, by reason.",
                                      labels=["reason"])
        for reason, count in sorted(dict(r.counters.deadletter_reasons).items()):
            reasons.add_metric([reason], count)
        yield reasons
        yield CounterMetricFamily("edgekit_server_frames_missing_total",
                                  "Frames reported missing: neither stored nor dropped by their device after "
                                  "--gap-grace.", value=r.ledger.missing_frames)
        yield GaugeMetricFamily("edgekit_server_queued_frames", "Valid frames waiting for a batch.",
                                value=r.batcher.qsize())
        yield GaugeMetricFamily("edgekit_server_caught_up_seconds", "How long no frame has waited over 0.25 s (the "
                                "receiver status); 0: behind, devices wait.", value=r.status.current().caught_up_s)
        yield CounterMetricFamily("edgekit_server_received_bytes_total", "Payload bytes of the frames received.",
                                  value=self.received_bytes)
        yield CounterMetricFamily("edgekit_server_stored_bytes_total", "Payload bytes of the frames whose results "
                                  "were stored as new rows.", value=self.stored_bytes)
        for distribution in (self.decode_seconds, self.batch_size, self.inference_seconds, self.latency_seconds):
            yield distribution.family()
        yield from connection_metrics("edgekit_server", r.link)

"""The agent's Prometheus metrics (``edgekit device run --metrics-port``): is this camera sending, and is it kept up?

The counts are the agent's own (its capture counters, the publisher's, the spool's depth), read when Prometheus
scrapes; the device half's inference time and the end-to-end latency of the results that come back are
histograms the agent feeds. Counters start at 0 with each start of the agent (Prometheus's ``rate`` and
``increase`` expect that). docs/server.md, Metrics, lists them.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from edgekit.metrics import INFERENCE_BUCKETS, LATENCY_BUCKETS, Distribution, connection_metrics

__all__ = ["AgentMetrics"]

#: (metric, help, attribute of PublisherCounters) of the counters the publisher already keeps.
_PUBLISHED = (
    ("edgekit_device_frames_published_total", "Frame publishes handed to the broker, re-sends included.", "sent"),
    ("edgekit_device_published_bytes_total", "Payload bytes of those publishes.", "bytes_sent"),
    ("edgekit_device_frames_resent_total", "Frames sent again because no receiver confirmed them in time.", "resent"),
    ("edgekit_device_frames_confirmed_total", "Frames a receiver confirmed stored (deleted from the spool).",
     "confirmed"),
    ("edgekit_device_results_total", "Results received from the server.", "results"),
)


class AgentMetrics:
    """An agent's metrics in ``registry`` (a new one if None): its counters read at scrape time, distributions fed
    by the agent."""

    def __init__(self, agent, registry: CollectorRegistry | None = None):
        self.agent = agent
        self.inference_seconds = Distribution("edgekit_device_inference_seconds", "Time of the device half per "
                                              "frame.", INFERENCE_BUCKETS)  # capture thread
        self.latency_seconds = Distribution("edgekit_device_e2e_latency_seconds", "Capture to result received, "
                                            "per result.", LATENCY_BUCKETS)  # MQTT thread
        self.registry = registry if registry is not None else CollectorRegistry()
        self.registry.register(self)

    def collect(self):
        """The agent's counts and state, read now (Prometheus calls this on every scrape)."""
        a = self.agent
        yield CounterMetricFamily("edgekit_device_frames_captured_total", "Frames captured and run through the "
                                  "device half.", value=a.counters.captured)
        for name, doc, attribute in _PUBLISHED:
            yield CounterMetricFamily(name, doc, value=getattr(a.publisher.counters, attribute))
        yield CounterMetricFamily("edgekit_device_frames_dropped_total", "Frames dropped by the spool's policy "
                                  "(full, too old, too big) or refused by the broker.", value=a.dropped)
        yield GaugeMetricFamily("edgekit_device_spool_frames", "Frames in the spool: unsent or unconfirmed.",
                                value=a.spool.depth)
        yield GaugeMetricFamily("edgekit_device_spool_bytes", "Payload bytes in the spool.", value=a.spool.nbytes)
        yield GaugeMetricFamily("edgekit_device_unconfirmed_frames", "Frames sent and awaiting a receiver's "
                                "confirmation.", value=a.publisher.unconfirmed)
        if a.ladder is not None:  # a nested bundle: the rate level sent, and the frames per level
            yield GaugeMetricFamily("edgekit_device_rate_level", "Rate level frames are sent at now (an index into "
                                    "the bundle's wire.levels).", value=a.ladder.level)
            per_level = CounterMetricFamily("edgekit_device_frames_by_level_total", "Frames spooled per rate level.",
                                            labels=["level"])
            for level, count in enumerate(a.level_counts):
                per_level.add_metric([str(level)], count)
            yield per_level
        yield self.inference_seconds.family()
        yield self.latency_seconds.family()
        yield from connection_metrics("edgekit_device", a.publisher)

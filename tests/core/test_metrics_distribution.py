"""The lock-free :class:`~edgekit.metrics.Distribution` exposes exactly what the client library's ``Histogram`` does
for the same observations (buckets on their bounds included), and ``--metrics-port`` serves a registry of its own."""

from __future__ import annotations

import urllib.request

import numpy as np
from prometheus_client import REGISTRY, CollectorRegistry, Histogram, generate_latest

from edgekit.metrics import LATENCY_BUCKETS, Distribution, MetricsEndpoint
from edgekit.mqtt.broker import free_port


class _One:
    """A collector of one distribution (as the roles' collectors yield theirs)."""

    def __init__(self, distribution):
        self.distribution = distribution

    def collect(self):
        yield self.distribution.family()


def _samples(registry) -> dict:
    from prometheus_client.parser import text_string_to_metric_families

    text = generate_latest(registry).decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for f in text_string_to_metric_families(text)
            for s in f.samples if not s.name.endswith("_created")}


def test_a_distribution_exposes_what_the_library_histogram_does():
    rng = np.random.default_rng(0)
    values = [*rng.lognormal(-3, 2, 500), *LATENCY_BUCKETS, 0.0, 1e6]  # values on each bound, below and above all
    theirs, ours = CollectorRegistry(), CollectorRegistry()
    histogram = Histogram("edgekit_test_seconds", "Test.", buckets=LATENCY_BUCKETS, registry=theirs)
    distribution = Distribution("edgekit_test_seconds", "Test.", LATENCY_BUCKETS)
    ours.register(_One(distribution))
    for v in values:
        histogram.observe(v)
        distribution.observe(v)
    got = _samples(ours)
    assert got == _samples(theirs)  # the sum too: added in the same order, so exactly
    assert got[("edgekit_test_seconds_count", ())] == len(values)


def test_time_observes_the_block_also_when_it_raises():
    distribution = Distribution("edgekit_test_seconds", "Test.", (0.001, 1.0))
    with distribution.time():
        pass
    try:
        with distribution.time():
            raise ValueError("a frame that fails to decode still took its time")
    except ValueError:
        pass
    assert sum(distribution.counts) == 2 and 0 <= distribution.sum < 1.0


def test_an_endpoint_serves_its_own_registry_not_the_global_one():
    endpoints = [MetricsEndpoint("127.0.0.1", free_port()) for _ in range(2)]  # two roles in one process
    try:
        for i, endpoint in enumerate(endpoints):
            endpoint.registry.register(_One(Distribution(f"edgekit_test{i}_seconds", "Test.", (1.0,))))
        texts = [urllib.request.urlopen(e.url, timeout=5).read().decode() for e in endpoints]
    finally:
        for endpoint in endpoints:
            endpoint.close()
    assert "edgekit_test0_seconds_count 0.0" in texts[0] and "edgekit_test1" not in texts[0]
    assert "edgekit_test1_seconds_count 0.0" in texts[1] and "edgekit_test0" not in texts[1]
    assert "python_gc" not in texts[0] and "python_gc" in generate_latest(REGISTRY).decode()
    assert MetricsEndpoint().url is None  # port 0: no endpoint

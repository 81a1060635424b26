"""Prometheus metrics over HTTP for ``edgekit server run`` and ``edgekit device run`` (``--metrics-port``).

Each process serves a registry of its own, never the client library's global one, so tests and several
roles in one process never collide. The roles' counters are read where they already are when Prometheus
scrapes (a collector: no second count to drift from the first); only distributions are observed as they
happen, into :class:`Distribution` histograms. server/metrics.py and device/metrics.py name each role's
metrics (docs/server.md, Metrics). Only click and the standard library at module level: the command modules
import this one.
"""

from __future__ import annotations

import errno
import itertools
import logging
import socket
import time
from bisect import bisect_left

import click

from edgekit.errors import UsageError

__all__ = ["MetricsEndpoint", "Distribution", "metrics_options", "check_port", "connection_metrics", "PORT_OPTION",
           "HOST_OPTION", "INFERENCE_BUCKETS", "LATENCY_BUCKETS"]

log = logging.getLogger(__name__)

#: Seconds one inference call takes: a tiny model's batch on a server (0.1 ms) to a large half on a Pi (seconds).
INFERENCE_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
#: Seconds from a device's capture to its result: milliseconds on a LAN, minutes after an outage (spooled frames).
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0)


PORT_OPTION = click.option("--metrics-port", type=int, default=0, show_default=True,
                           help="Serve Prometheus metrics on http://HOST:PORT/metrics (0: no endpoint). "
                                "See docs/server.md, Metrics.")
HOST_OPTION = click.option("--metrics-host", default="127.0.0.1", show_default=True,
                           help="Address the metrics endpoint listens on (0.0.0.0: every interface, for a "
                                "Prometheus on another machine).")


def metrics_options(command):
    """``--metrics-port`` and ``--metrics-host``, for the commands that serve metrics."""
    return PORT_OPTION(HOST_OPTION(command))


def check_port(port: int) -> int:
    """``port`` if it can be a ``--metrics-port`` (0: none), else the one-line error."""
    if not 0 <= port <= 65535:
        raise UsageError(f"--metrics-port {port} is not a TCP port",
                         "give one in 1-65535, e.g. --metrics-port 9108 (0: no metrics endpoint)")
    return port


class MetricsEndpoint:
    """A registry of its own (or ``registry``), served at ``http://host:port/metrics`` on a daemon thread when
    ``port`` is not 0. Opened before the slow loading of a role, so that a port already taken fails at once,
    in one line."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, registry=None):
        from prometheus_client import CollectorRegistry

        self.registry = registry if registry is not None else CollectorRegistry()
        self.host, self.port = host, check_port(port)
        self._server = _listen(self.registry, host, port) if port else None
        if self._server is not None:
            log.info("serving Prometheus metrics on %s", self.url)

    @property
    def url(self) -> str | None:
        """The endpoint's address, None when no port was given."""
        return f"http://{self.host}:{self.port}/metrics" if self._server is not None else None

    def close(self) -> None:
        """Stop serving (a no-op without an endpoint); the registry stays readable."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


def _listen(registry, host: str, port: int):
    """The started HTTP server, or the one-line error of an address we cannot listen on."""
    from prometheus_client import start_http_server

    try:
        server, _ = start_http_server(port, addr=host, registry=registry)
    except socket.gaierror as err:
        raise UsageError(f"--metrics-host {host}: not an address of this machine ({err.strerror})",
                         "give an address to listen on, e.g. 127.0.0.1 or 0.0.0.0") from None
    except OSError as err:
        if err.errno == errno.EADDRINUSE:
            raise UsageError(f"--metrics-port {port}: {host}:{port} is already in use (another exporter, or "
                             "another edgekit on this machine)",
                             "give each process its own port, e.g. --metrics-port 9108") from None
        raise UsageError(f"cannot serve metrics on {host}:{port}: {err.strerror}",
                         "give an address of this machine and a free port above 1023") from None
    return server


def connection_metrics(prefix: str, loop):
    """The connection state of a role's MQTT client (a :class:`~edgekit.mqtt.client_loop.ClientLoop`)."""
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    yield GaugeMetricFamily(f"{prefix}_connected", "1 while connected to the broker, else 0.",
                            value=int(loop.connected.is_set()))
    yield CounterMetricFamily(f"{prefix}_connects_total", "Successful connections to the broker (reconnects too).",
                              value=loop.connects)


class Distribution:
    """A histogram that one thread feeds, without a lock: :meth:`observe` is a bisect and two additions, a fifth
    of the time of the client library's ``Histogram``, which takes locks (docs/server.md, Metrics), and it is paid
    on every frame. Its role's collector exposes it (:meth:`family`). A second thread feeding it could lose an
    update, never fail: each keeps to one thread (the receiver's link or worker thread, the agent's capture or
    MQTT one)."""

    def __init__(self, name: str, documentation: str, buckets: tuple[float, ...]):
        self.name, self.documentation, self.bounds = name, documentation, tuple(buckets)
        self.counts = [0] * (len(self.bounds) + 1)  # the last one: above every bound (+Inf)
        self.sum = 0.0
        self._start = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1  # Prometheus buckets count values <= their bound
        self.sum += value

    def time(self) -> "Distribution":
        """``with d.time(): ...`` observes the seconds the block took (also when it raises)."""
        return self

    def __enter__(self) -> None:
        self._start = time.perf_counter()

    def __exit__(self, *exc) -> None:
        self.observe(time.perf_counter() - self._start)

    def family(self):
        """The histogram as the exposition format wants it: cumulative buckets, sum, count."""
        from prometheus_client.core import HistogramMetricFamily
        from prometheus_client.utils import floatToGoString

        total, cumulative = self.sum, list(itertools.accumulate(self.counts))
        buckets = [(floatToGoString(b), n) for b, n in zip(self.bounds, cumulative)] + [("+Inf", cumulative[-1])]
        return HistogramMetricFamily(self.name, self.documentation, buckets=buckets, sum_value=total)

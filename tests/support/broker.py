"""Broker fixtures for every test folder: a real Mosquitto per test, and a plain subscriber that records
what reached it.

Each test gets its own broker on a free loopback port with its own config file and persistence folder, as
Mosquitto's own tests do; its log is printed when the test fails. A missing Mosquitto fails loudly: CI
installs it (``apt-get install mosquitto``), and these tests are the point of the transport.
"""

from __future__ import annotations

import pytest

from edgekit.mqtt.broker import MosquittoBroker, find_mosquitto


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Remember each phase's report on the test item so fixtures can tell a failure at teardown."""
    outcome = yield
    setattr(item, f"rep_{call.when}", outcome.get_result())


@pytest.fixture
def mosquitto_factory(request, tmp_path):
    """Start brokers with extra config lines: ``mosquitto_factory("max_packet_size 4096")``."""
    if find_mosquitto() is None:
        pytest.fail("Mosquitto is not installed: apt-get install mosquitto (or set EDGEKIT_MOSQUITTO)")
    brokers: list[MosquittoBroker] = []

    def start(extra: str = "", **options) -> MosquittoBroker:
        """``options`` go to :class:`MosquittoBroker` (``bridge=``, ``secure=``, queue limits)."""
        broker = MosquittoBroker(workdir=tmp_path / f"broker{len(brokers)}", extra=extra, **options)
        brokers.append(broker)
        return broker.start()

    try:
        yield start
    finally:
        failed = any(getattr(getattr(request.node, f"rep_{w}", None), "failed", False) for w in ("setup", "call"))
        for broker in brokers:
            broker.close()
            if failed:
                print(f"\n---- mosquitto log ({broker.url}) ----\n{broker.log_text()}")


@pytest.fixture
def mosquitto(mosquitto_factory) -> MosquittoBroker:
    """A fresh Mosquitto on a free loopback port (``.url``, ``.restart()``, ``.stop()``, ``.log_text()``)."""
    return mosquitto_factory()


class Collector:
    """A plain subscriber that records every message it receives (for checking what reached the broker)."""

    def __init__(self, url: str, topic_filter: str, protocol: str = "5", persistent: bool = False):
        import threading

        from edgekit.mqtt.client import make_client
        from edgekit.mqtt.urls import parse_broker_url

        self.messages: list = []
        self._ready = threading.Event()
        broker = parse_broker_url(url)
        self.client = make_client(f"collector-{id(self)}", protocol, persistent=persistent)  # 3.1.1: kept session
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(topic_filter, qos=1)
        self.client.on_subscribe = lambda *a: self._ready.set()
        self.client.on_message = lambda c, u, m: self.messages.append((m.topic, bytes(m.payload), m.retain))
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        assert self._ready.wait(5), "collector could not subscribe"

    def wait_for(self, count: int, timeout: float = 20.0) -> list:
        import time

        deadline = time.monotonic() + timeout
        while len(self.messages) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.messages

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def collector():
    """``collector(url, filter)`` starts a subscriber; all are closed after the test."""
    made: list[Collector] = []

    def make(url: str, topic_filter: str, protocol: str = "5", persistent: bool = False) -> Collector:
        made.append(Collector(url, topic_filter, protocol, persistent))
        return made[-1]

    yield make
    for c in made:
        c.close()

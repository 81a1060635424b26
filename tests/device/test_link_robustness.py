"""The MQTT link under hostile conditions, against a real Mosquitto: bad results, refusing brokers, outages.

Each test pins one review finding: a callback or network-loop exception must never kill the loop thread,
a broker that refuses the CONNACK must be retried with backoff, QoS 0 sends must not pile up offline, and a
publish that raises must not skip its spool row.
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import paho.mqtt.client as mqtt
from edgekit.device.agent import Agent
from edgekit.device.publisher import Publisher
from edgekit.device.spool import Spool

from edgekit.mqtt.client_loop import ClientLoop
from edgekit.mqtt.urls import parse_broker_url
from edgekit.mqtt.topics import topic
from edgekit.latency import LatencyWindow
from support.running import start_publisher, wait_until

FEATURES = topic("dev-1", "features")
RESULTS = topic("dev-1", "results")


def _publish_raw(url: str, topic_name: str, payloads: list[bytes]) -> None:
    """Publish with a plain paho client, as a buggy or hostile server would."""
    broker = parse_broker_url(url)
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="raw-results", protocol=mqtt.MQTTv5)
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        for payload in payloads:
            client.publish(topic_name, payload, qos=1).wait_for_publish(5)
    finally:
        client.disconnect()
        client.loop_stop()


def _frames_still_flow(pub: Publisher, spool: Spool, count: int = 5) -> bool:
    """True once ``count`` new frames are acknowledged: the loop thread is alive and working."""
    before = pub.counters.acknowledged
    for i in range(count):
        spool.put(FEATURES, i.to_bytes(4, "big"))
    return wait_until(lambda: pub.counters.acknowledged >= before + count, 10)


def test_malformed_results_and_a_raising_callback_do_not_kill_the_loop(mosquitto, tmp_path):
    seen: list[dict] = []

    def on_result(result: dict) -> None:
        seen.append(result)
        result["timings"].get("capture_ns")  # raises for {"timings": 5}: a buggy user callback

    spool = Spool(tmp_path / "spool.sqlite")
    pub = start_publisher(spool, mosquitto, on_result=on_result)
    try:
        assert pub.subscribed.wait(5)
        _publish_raw(mosquitto.url, RESULTS, [b"[1, 2]", b"7", b"null", json.dumps({"timings": 5}).encode(),
                                              json.dumps({"seq": 1}).encode()])
        assert wait_until(lambda: len(seen) == 2, 5), seen
        assert pub.alive
        assert pub.counters.results == 2 and pub.counters.ignored_results == 3
        assert _frames_still_flow(pub, spool)
    finally:
        pub.stop()


def test_agent_result_handler_tolerates_malformed_timings():
    agent = SimpleNamespace(boot_id=7, results_this_boot=0, latency=LatencyWindow())
    for result in ({"boot_id": 7, "timings": 5}, {"boot_id": 7, "timings": None}, {"boot_id": 7, "timings": []}):
        Agent._on_result(agent, result)
    assert agent.results_this_boot == 3


def test_an_exception_from_the_network_loop_is_survived(mosquitto, tmp_path):
    spool = Spool(tmp_path / "spool.sqlite")
    pub = start_publisher(spool, mosquitto)
    try:
        assert pub.connected.wait(5)
        real_loop, calls = pub.client.loop, []

        def flaky_loop(*args, **kw):
            calls.append(1)
            if len(calls) == 1:
                raise RuntimeError("injected")
            return real_loop(*args, **kw)

        pub.client.loop = flaky_loop
        assert wait_until(lambda: len(calls) > 1, 5) and pub.alive
        assert _frames_still_flow(pub, spool)
    finally:
        pub.stop()


def test_a_broker_refusing_at_start_stops_the_link_with_one_clear_error(mosquitto_factory):
    """Not authorised before the first connection is a setup mistake: no retry loop (tests/mqtt/test_tls.py for later)."""
    broker = mosquitto_factory("allow_anonymous false")
    link = ClientLoop(parse_broker_url(broker.url), "refused-1", "5")
    link.start()
    try:
        assert wait_until(lambda: not link.alive, 5)
        assert "not authorized" in str(link.fatal_error) and not link.connected.is_set()
    finally:
        link.stop()
    broker.stop()  # flushes its log (stdout to a file is block-buffered)
    assert broker.log_text().count("disconnected, not authorised") == 1


def test_qos0_sends_are_dropped_not_queued_while_offline(mosquitto, tmp_path):
    spool = Spool(tmp_path / "spool.sqlite")
    pub = start_publisher(spool, mosquitto)
    try:
        assert pub.connected.wait(5)
        mosquitto.stop()
        assert wait_until(lambda: not pub.connected.is_set(), 5)
        for i in range(1000):
            pub.send(topic("dev-1", "heartbeat"), json.dumps({"n": i}), qos=0)
        assert pub.dropped_offline == 1000
        assert pub._outbox.qsize() == 0
    finally:
        pub.stop()


def test_a_publish_that_raises_does_not_skip_its_frame(mosquitto, tmp_path):
    spool = Spool(tmp_path / "spool.sqlite")
    pub = start_publisher(spool, mosquitto)
    try:
        assert pub.connected.wait(5)
        real_publish, failures = pub.client.publish, []

        def publish_failing_once(topic_name, *args, **kw):
            if topic_name == FEATURES and not failures:
                failures.append(1)
                raise OSError("injected")
            return real_publish(topic_name, *args, **kw)

        pub.client.publish = publish_failing_once
        for i in range(3):
            spool.put(FEATURES, i.to_bytes(4, "big"))
        assert wait_until(lambda: spool.depth == 0, 10), f"{spool.depth} frames left in the spool"
        assert failures and pub.counters.acknowledged == 3
    finally:
        pub.stop()

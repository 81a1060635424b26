"""The device publisher against a real Mosquitto: acks drain the spool, outages lose nothing, size limits."""

from __future__ import annotations

import time

from edgekit.device.spool import Spool
from edgekit.mqtt.topics import topic
from support.running import start_publisher, wait_until

FEATURES = topic("dev-1", "features")


def test_every_spooled_frame_is_acked_and_removed(mosquitto, collector, tmp_path):
    sub = collector(mosquitto.url, FEATURES)
    spool = Spool(tmp_path / "spool.sqlite")
    pub = start_publisher(spool, mosquitto, window=8)
    try:
        for i in range(200):
            spool.put(FEATURES, i.to_bytes(4, "big") * 8)
        assert wait_until(lambda: spool.depth == 0)
        got = sub.wait_for(200)
        assert sorted(int.from_bytes(p[:4], "big") for _, p, _ in got) == list(range(200))
        assert (pub.counters.sent, pub.counters.acknowledged) == (200, 200)
    finally:
        pub.stop()


def test_broker_outage_keeps_frames_until_acked(mosquitto, collector, tmp_path):
    spool = Spool(tmp_path / "spool.sqlite")
    pub = start_publisher(spool, mosquitto)
    try:
        assert pub.connected.wait(5)
        mosquitto.stop()
        assert wait_until(lambda: not pub.connected.is_set(), 5)
        for i in range(50):
            spool.put(FEATURES, i.to_bytes(4, "big"))
        time.sleep(0.5)
        assert spool.depth == 50 and pub.counters.acknowledged == 0
        mosquitto.start()
        sub = collector(mosquitto.url, FEATURES)
        assert wait_until(lambda: spool.depth == 0)
        got = {int.from_bytes(p, "big") for _, p, _ in sub.wait_for(50)}
        assert got == set(range(50)) and pub.connects == 2
    finally:
        pub.stop()


def test_oversized_frame_is_refused_locally_without_reconnect_loop(mosquitto_factory, collector, tmp_path):
    broker = mosquitto_factory("max_packet_size 1024")
    sub = collector(broker.url, FEATURES)
    spool = Spool(tmp_path / "spool.sqlite")
    pub = start_publisher(spool, broker)
    try:
        assert pub.connected.wait(5) and pub.max_packet_size == 1024
        spool.put(FEATURES, b"a" * 100)
        spool.put(FEATURES, b"b" * 5000)
        spool.put(FEATURES, b"c" * 100)
        assert wait_until(lambda: spool.depth == 0)
        got = [p[:1] for _, p, _ in sub.wait_for(2)]
        time.sleep(0.5)
        assert sorted(got) == [b"a", b"c"]
        assert pub.counters.refused_too_big == 1 and spool.counters.reasons == {"too-big": 1}
        assert pub.connects == 1 and pub.connected.is_set()
    finally:
        pub.stop()


def test_configured_frame_limit_applies_without_broker_hint(mosquitto, collector, tmp_path):
    spool = Spool(tmp_path / "spool.sqlite")
    pub = start_publisher(spool, mosquitto, max_frame_bytes=50)
    try:
        spool.put(FEATURES, b"x" * 51)
        spool.put(FEATURES, b"y" * 50)
        assert wait_until(lambda: spool.depth == 0)
        assert (pub.counters.refused_too_big, pub.counters.acknowledged) == (1, 1)
    finally:
        pub.stop()


def test_status_is_retained_online_then_offline(mosquitto, collector, tmp_path):
    import json

    pub = start_publisher(Spool(tmp_path / "spool.sqlite"), mosquitto, boot_id=7)
    assert pub.connected.wait(5)
    time.sleep(0.2)
    late = collector(mosquitto.url, topic("dev-1", "status"))
    (topic_name, payload, retained), = late.wait_for(1)
    assert json.loads(payload)["state"] == "online" and retained
    pub.stop()
    states = [json.loads(p)["state"] for _, p, _ in late.wait_for(2)]
    print(late.messages)
    assert states == ["online", "offline"]


def test_size_limit_is_exact_at_the_broker_boundary(mosquitto_factory, collector, tmp_path):
    """A frame whose PUBLISH is exactly max_packet_size goes through; one byte more is refused locally."""
    broker = mosquitto_factory("max_packet_size 600")
    sub = collector(broker.url, FEATURES)
    spool = Spool(tmp_path / "spool.sqlite")
    pub = start_publisher(spool, broker)
    try:
        assert pub.connected.wait(5)
        limit = pub.size_limit(FEATURES)
        spool.put(FEATURES, b"k" * limit)
        spool.put(FEATURES, b"r" * (limit + 1))
        assert wait_until(lambda: spool.depth == 0)
        assert [len(p) for _, p, _ in sub.wait_for(1)] == [limit]
        assert (pub.counters.acknowledged, pub.counters.refused_too_big, pub.connects) == (1, 1, 1)
    finally:
        pub.stop()


def test_a_late_offline_of_another_boot_does_not_leave_the_status_offline(mosquitto, collector, tmp_path):
    """A will published after our "online" (a pushed-out duplicate, a dead old connection noticed late) would
    leave the retained status reading offline while this agent runs: it restates online."""
    import json

    from edgekit.mqtt.client import make_client

    pub = start_publisher(Spool(tmp_path / "spool.sqlite"), mosquitto, boot_id=7)
    assert pub.connected.wait(5) and pub.subscribed.wait(5)
    stale = make_client("stale-will", "5")
    stale.connect(mosquitto.host, mosquitto.port)
    stale.loop_start()
    stale.publish(topic("dev-1", "status"), json.dumps({"state": "offline", "device": "dev-1", "boot_id": 9}),
                  qos=1, retain=True).wait_for_publish(5)
    stale.disconnect()
    stale.loop_stop()
    time.sleep(0.5)
    late = collector(mosquitto.url, topic("dev-1", "status"))
    (_, payload, retained), = late.wait_for(1)
    status = json.loads(payload)
    assert retained and (status["state"], status["boot_id"]) == ("online", 7), status
    pub.stop()


def test_json_nested_too_deep_on_our_topics_is_ignored_without_a_traceback(mosquitto, tmp_path, caplog):
    """``json.loads`` raises RecursionError, not ValueError, on deep nesting: junk like any other, one count."""
    import logging

    from edgekit.mqtt.client import make_client

    pub = start_publisher(Spool(tmp_path / "spool.sqlite"), mosquitto, boot_id=7)
    assert pub.connected.wait(5) and pub.subscribed.wait(5)
    sender = make_client("nester", "5")
    sender.connect(mosquitto.host, mosquitto.port)
    sender.loop_start()
    nested = b"[" * 100_000
    with caplog.at_level(logging.DEBUG, logger="edgekit"):
        for kind in ("results", "status", "acks"):
            for _ in range(3):
                sender.publish(topic("dev-1", kind), nested, qos=1).wait_for_publish(5)
        assert wait_until(lambda: pub.counters.ignored_results == 3 and pub.counters.ignored_acks == 3)
    sender.disconnect()
    sender.loop_stop()
    assert pub.connected.is_set()
    assert not [r for r in caplog.records if r.exc_info or "Traceback" in r.getMessage()]
    pub.stop()

"""MQTT 5 topic aliases on a real Mosquitto: the topic name once per connection, measured at the socket, and
unacknowledged publishes that paho re-sends after a reconnect get their topic name back."""

from __future__ import annotations

import time

from support.running import wait_until

from edgekit.mqtt.byte_meter import ByteMeter
from edgekit.device.publisher import Publisher
from edgekit.device.spool import Spool
from edgekit.mqtt.topics import TopicAliases, topic
from edgekit.mqtt.client import make_client
from edgekit.mqtt.urls import parse_broker_url

FEATURES = topic("dev-1", "features")
FRAMES = 100


def _bytes_per_frame(broker, tmp_path, name: str) -> tuple[float, int]:
    """TCP bytes per 40-byte frame the agent's publisher sends to ``broker``, and the alias maximum it saw."""
    meter = ByteMeter(parse_broker_url(broker.url))
    spool = Spool(tmp_path / f"{name}.sqlite")
    pub = Publisher(spool, parse_broker_url(meter.url), "dev-1", "5", boot_id=5, client_id=f"alias-{name}")
    pub.start()
    try:
        assert pub.connected.wait(10)
        time.sleep(0.3)
        up0, _ = meter.snapshot()
        for i in range(FRAMES):
            spool.put(FEATURES, b"\xe2" + i.to_bytes(39, "big"))  # v2-like: no MQTT 5 properties
        assert wait_until(lambda: spool.depth == 0 and pub.inflight == 0)
        return (meter.snapshot()[0] - up0) / FRAMES, pub.topic_alias_maximum
    finally:
        pub.stop()
        meter.close()


def test_the_topic_name_travels_once_per_connection(mosquitto_factory, collector, tmp_path):
    with_alias, without = mosquitto_factory(), mosquitto_factory("max_topic_alias 0")
    sub = collector(with_alias.url, FEATURES)
    aliased, maximum = _bytes_per_frame(with_alias, tmp_path, "a")
    named, zero = _bytes_per_frame(without, tmp_path, "b")
    assert (maximum, zero) == (10, 0)  # Mosquitto's default Topic Alias Maximum, and the configured 0
    got = sub.wait_for(FRAMES)
    assert len(got) == FRAMES and all(t == FEATURES for t, _, _ in got)  # the broker resolved every alias
    # no alias: 2 + 25 bytes of topic name and 1 of empty properties; alias: 2 + 0, and 1 + 3 of properties
    assert named - aliased >= 20, (named, aliased)
    assert aliased <= 40 + 2 + 2 + 2 + 4 + 0.5  # frame + fixed header + topic length + packet id + properties


def test_publishes_re_sent_after_a_reconnect_name_their_topic_again(mosquitto, collector):
    """Alias-only publishes queued while the broker is down: paho re-sends them on the new connection,
    where no alias exists yet; without their topic name the broker would drop the connection again."""
    aliases = TopicAliases()
    client = make_client("alias-resend", "5")
    client.on_connect = lambda c, u, flags, rc, props: aliases.reset(getattr(props, "TopicAliasMaximum", 0), c)
    acked: list[int] = []
    client.on_publish = lambda c, u, mid, rc, props: acked.append(mid)
    url = parse_broker_url(mosquitto.url)
    client.connect(url.host, url.port)

    def loop_until(predicate) -> bool:
        deadline = time.monotonic() + 10
        while not predicate() and time.monotonic() < deadline:
            client.loop(0.02)
        return predicate()

    assert loop_until(client.is_connected) and aliases.maximum == 10
    name, props = aliases.apply(FEATURES, None)
    assert (name, props.TopicAlias) == (FEATURES, 1)
    aliases.publish(client, FEATURES, b"first", 1, None)
    assert aliases.apply(FEATURES, None)[0] == ""  # named on this connection: the alias alone from now on
    assert loop_until(lambda: len(acked) == 1)
    mosquitto.stop()
    assert loop_until(lambda: not client.is_connected())
    for i in range(5):  # queued in paho while offline, alias only
        name, props = aliases.apply(FEATURES, None)
        assert (name, props.TopicAlias) == ("", 1)
        aliases.publish(client, FEATURES, f"queued-{i}".encode(), 1, None)
    mosquitto.start()
    sub = collector(mosquitto.url, FEATURES)
    client.reconnect()
    assert loop_until(lambda: len(acked) == 6), acked
    got = sub.wait_for(5)
    assert sorted(p for _, p, _ in got) == [f"queued-{i}".encode() for i in range(5)]
    assert all(t == FEATURES for t, _, _ in got) and client.is_connected()
    client.disconnect()


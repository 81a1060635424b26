"""Receiver-confirmed delivery across a site broker bridged to a central one (``edgekit broker --bridge``).

Two real Mosquitto processes: agents publish to the site broker, the receiver listens on the central one.
While they stream, the central broker is restarted, then the site broker (SIGTERM: it saves its persistence,
as a real restart does).

1. The agents' confirm timeout is longer than the test, so they never re-send: every frame must reach the
   database through the bridge by itself. A frame the bridge dropped would be missing (as it is with the
   bridge's ``cleansession true``: the frames the site queued for it are cleaned away).
2. What the central broker gets for the site while the site broker is down (acks, results) waits in the
   bridge's session there: a message published then reaches a subscriber with a kept session on the site.
   (It does not with ``cleansession true``, nor with ``bridge_protocol_version mqttv50``: Mosquitto 2.0
   sends no session expiry, so the central broker ends the bridge's session when it disconnects.)
3. The acks the receiver published while an agent was away from the site broker are gone with the agent's
   clean session (as with one broker), so some frames stay unconfirmed; the agents are restarted on their
   spools with a short timeout, re-send them, and every spool drains: each frame confirmed, stored once.
"""

from __future__ import annotations

from edgekit.mqtt.bridge import Bridge
from edgekit.mqtt.urls import parse_broker_url
from support.running import RunningAgent, rows, seqs, start_receiver, wait_until

FRAMES = 150  # per device
DEVICES = ("cam-a", "cam-b")


def _bridge_up(collector, site, client_id: str) -> None:
    """Wait until the bridge says it is connected (its local notification topic reads 1)."""
    state = collector(site.url, f"$SYS/broker/connection/{client_id}/state")
    assert wait_until(lambda: state.messages and state.messages[-1][1] == b"1", 30), "the bridge did not connect"


def _publish(broker, topic: str, payload: bytes) -> None:
    """One QoS 1 message, PUBACKed by ``broker`` before this returns."""
    from edgekit.mqtt.client import make_client

    url = parse_broker_url(broker.url)
    client = make_client("probe-publisher", "5")
    client.connect(url.host, url.port)
    client.loop_start()
    try:
        client.publish(topic, payload, qos=1).wait_for_publish(10)
    finally:
        client.disconnect()
        client.loop_stop()


def _stored(db) -> int:
    """Result rows so far (0 before the receiver made the table)."""
    return (rows(db, "SELECT COUNT(*) FROM results") or [(0,)])[0][0]


def _agents(bundle, site, tmp_path, source, confirm_timeout_s: float) -> list[RunningAgent]:
    return [RunningAgent(bundle, site.url, tmp_path / f"{device}.sqlite", source, device_id=device, fps=40,
                         confirm_timeout_s=confirm_timeout_s).start() for device in DEVICES]


def _finish(agents: list[RunningAgent]) -> list[dict]:
    return [agent.finish() for agent in agents]


def test_frames_cross_the_bridge_exactly_once_through_central_and_site_restarts(bundle, stream, mosquitto_factory,
                                                                                collector, tmp_path):
    central = mosquitto_factory()
    site = mosquitto_factory(bridge=Bridge(parse_broker_url(central.url), "site-test"))
    _bridge_up(collector, site, "site-test")
    device_with_session = collector(site.url, "edgekit/v1/probe/acks", "3.1.1", persistent=True)
    db = tmp_path / "r.sqlite"
    receiver = start_receiver(bundle, central.url, db)
    agents = _agents(bundle, site, tmp_path, stream(FRAMES), confirm_timeout_s=600.0)
    try:
        assert wait_until(lambda: _stored(db) >= 60, 60), "nothing came across the bridge"
        central.restart()  # the receiver and the bridge reconnect; the site queues frames meanwhile
        assert wait_until(lambda: _stored(db) >= 150, 60), _stored(db)
        site.stop()  # the agents and the bridge go away; the central broker keeps what comes down for the bridge
        _publish(central, "edgekit/v1/probe/acks", b"published while the site was down")
        site.start()  # the agents and the bridge reconnect; queued frames come from persistence
        assert wait_until(lambda: _stored(db) == FRAMES * len(DEVICES), 60), _stored(db)
        first = _finish(agents)
        assert [s["resent"] for s in first] == [0, 0]  # every frame crossed the bridge on its first send
        assert wait_until(lambda: device_with_session.messages, 30), "the bridge lost its session on the central"
        agents = _agents(bundle, site, tmp_path, stream(1), confirm_timeout_s=1.0)  # restarted on their spools
        assert wait_until(lambda: all(a.agent.counters.captured == 1 and a.agent.spool.depth == 0 for a in agents),
                          60), [a.agent.spool.depth for a in agents]
        second = _finish(agents)
        missing = receiver.ledger.missing_frames
    finally:
        _finish(agents)
        receiver.stop()
    for device, before, after in zip(DEVICES, first, second):
        assert seqs(db, device, before["boot_id"]) == list(range(FRAMES))  # UNIQUE key: each stored once
        assert seqs(db, device, after["boot_id"]) == [0]
    assert _stored(db) == (FRAMES + 1) * len(DEVICES)
    assert missing == 0 and rows(db, "SELECT COUNT(*) FROM gaps") == [(0,)]

"""A loss after a boot's last stored frame is found through the heartbeat's settled marks, and a spool
still holding frames raises no alarm. In-process agent and receiver, real Mosquitto, real SQLite files;
the faults are real: a forged ack on the device's acks topic, rows deleted from a stopped agent's spool."""

from __future__ import annotations

import json
import logging
import sqlite3
import time

from edgekit.mqtt.client import make_client
from edgekit.mqtt.urls import parse_broker_url
from edgekit.mqtt.topics import topic
from edgekit.server.stats import summarize
from support.running import RunningAgent, rows, seqs, start_receiver
from support.running import wait_until


def _forge_ack(url: str, device: str, boot_id: int, first: int, last: int) -> None:
    """Publish an ack no receiver sent (acks are not signed without frame keys): the device deletes frames."""
    broker = parse_broker_url(url)
    client = make_client("forger", "5")
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        payload = json.dumps({"boot_id": boot_id, "ranges": [[first, last]]})
        client.publish(topic(device, "acks"), payload, qos=1).wait_for_publish(10)
    finally:
        client.disconnect()
        client.loop_stop()


def _alarms(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("missing frames")]


def test_a_tail_deleted_by_a_bogus_ack_is_missing_after_the_grace(bundle, stream, mosquitto, tmp_path, caplog):
    db, spool = tmp_path / "r.sqlite", tmp_path / "spool.sqlite"
    agent = RunningAgent(bundle, mosquitto.url, spool, stream(60), heartbeat_s=0.1).start()  # no receiver yet
    try:
        assert wait_until(lambda: agent.agent.spool.depth == 60)
        boot_id = agent.agent.boot_id
        _forge_ack(mosquitto.url, "cam-d", boot_id, 50, 59)  # the last 10 frames, never stored anywhere
        assert wait_until(lambda: agent.agent.spool.depth == 50, 10)
        with caplog.at_level(logging.WARNING, logger="edgekit.server.ledger"):
            receiver = start_receiver(bundle, mosquitto.url, db, gap_grace_s=1.0)
            try:
                assert wait_until(lambda: agent.agent.spool.depth == 0, 30)
                assert seqs(db, "cam-d", boot_id) == list(range(50))
                agent.finish()  # the source has ended: the final heartbeat says how far the boot got
                assert wait_until(lambda: receiver.ledger.alarms == 1, 10)
            finally:
                receiver.stop()
    finally:
        agent.finish()
    assert _alarms(caplog) == [f"missing frames: device cam-d boot {boot_id:08x} seq 50-59 (10 frames): neither "
                               f"stored nor dropped by the device after 1 s"]
    device = summarize(db)["devices"][0]
    assert (device["stored"], device["dropped"], device["missing"]) == (50, 0, 10)


def test_a_tail_lost_from_a_stopped_agents_spool_is_missing(bundle, stream, mosquitto, tmp_path, caplog):
    db, spool = tmp_path / "r.sqlite", tmp_path / "spool.sqlite"
    first = RunningAgent(bundle, mosquitto.url, spool, stream(60)).start()  # no receiver: all stay spooled
    assert wait_until(lambda: first.agent.spool.depth == 60 and first.agent.publisher.counters.acknowledged >= 60)
    boot_id = first.finish()["boot_id"]
    with sqlite3.connect(spool) as con:  # the tail of the stopped boot lost on the device
        con.execute("DELETE FROM frames WHERE seq >= 45")
    with caplog.at_level(logging.WARNING, logger="edgekit.server.ledger"):
        receiver = start_receiver(bundle, mosquitto.url, db, gap_grace_s=1.0)
        again = RunningAgent(bundle, mosquitto.url, spool, stream(5), fps=5, heartbeat_s=0.1).start()
        try:  # the new agent drains the old boot and reports how it ended (and streams a little of its own)
            assert wait_until(lambda: len(seqs(db, "cam-d", boot_id)) == 45, 30)
            assert wait_until(lambda: receiver.ledger.alarms == 1, 10)
            again.finish()
        finally:
            receiver.stop()
    assert _alarms(caplog) == [f"missing frames: device cam-d boot {boot_id:08x} seq 45-59 (15 frames): neither "
                               f"stored nor dropped by the device after 1 s"]
    assert summarize(db)["devices"][0]["missing"] == 15


def test_a_spool_not_yet_confirmed_raises_no_alarm(bundle, stream, mosquitto, tmp_path, caplog):
    db, spool = tmp_path / "r.sqlite", tmp_path / "spool.sqlite"
    agent = RunningAgent(bundle, mosquitto.url, spool, stream(60), heartbeat_s=0.1,
                         spool_max_bytes=1000).start()  # no receiver: the oldest frames are dropped by policy
    try:
        assert wait_until(lambda: agent.agent.counters.captured == 60)
        kept = [row.seq for row in agent.agent.spool.take(0, 100)]
        assert kept == list(range(kept[0], 60)) and kept[0] > 0
        boot_id = agent.agent.boot_id
        with caplog.at_level(logging.WARNING, logger="edgekit.server.ledger"):
            receiver = start_receiver(bundle, mosquitto.url, db, gap_grace_s=0.5, ack_every_s=0)  # stores, no acks
            try:
                assert wait_until(lambda: seqs(db, "cam-d", boot_id) == kept, 30)
                assert wait_until(lambda: rows(db, "SELECT kind, first, last FROM seq_ranges WHERE kind != 'stored'"
                                               " ORDER BY kind") == [("dropped", 0, kept[0] - 1),
                                                                     ("settled", 0, kept[0] - 1)], 10)
                time.sleep(3 * 0.5)  # heartbeats keep coming, well past the grace, the frames still spooled
                receiver.ledger.check()
                assert agent.agent.spool.depth == len(kept) and receiver.ledger.alarms == 0
                assert rows(db, "SELECT first, last FROM seq_ranges WHERE kind = 'settled'") == [(0, kept[0] - 1)]
                assert rows(db, "SELECT * FROM gaps") == []
            finally:
                receiver.stop()
            receiver = start_receiver(bundle, mosquitto.url, db, gap_grace_s=0.5)  # now confirming: it drains
            try:
                assert wait_until(lambda: agent.agent.spool.depth == 0, 30)
                assert wait_until(lambda: rows(db, "SELECT first, last FROM seq_ranges WHERE kind = 'settled'")
                                  == [(0, 59)], 10)
                receiver.ledger.check()
                assert receiver.ledger.alarms == 0
            finally:
                receiver.stop()
    finally:
        agent.finish()
    assert _alarms(caplog) == []
    device = summarize(db)["devices"][0]
    assert (device["stored"], device["dropped"], device["missing"], device["pending"]) == (len(kept), kept[0], 0, 0)


def test_a_heartbeat_with_many_drop_ranges_gets_through_the_receivers_packet_limit(bundle, stream, mosquitto,
                                                                                     tmp_path):
    """200 drop ranges make a heartbeat of ~5 KB, far over the 1.5 KB a frame of this bundle needs: the
    Maximum Packet Size the receiver announces must still let it through, or those drops read as missing."""
    from edgekit.device.spool import Spool

    db, spool_path = tmp_path / "r.sqlite", tmp_path / "spool.sqlite"
    spool = Spool(spool_path)
    for seq in range(0, 400, 2):  # not adjacent: 200 ranges
        spool.record_drop(1, seq, "too-big")
    spool.close()
    receiver = start_receiver(bundle, mosquitto.url, db)
    agent = RunningAgent(bundle, mosquitto.url, spool_path, stream(5), heartbeat_s=0.1).start()
    try:
        assert wait_until(lambda: rows(db, "SELECT COUNT(*) FROM seq_ranges WHERE kind = 'dropped' AND boot_id = 1")
                          == [(200,)], 20)
    finally:
        agent.finish()
        receiver.stop()


def test_a_heartbeat_keeps_the_newest_drop_ranges_that_fit():
    from edgekit.device.agent import heartbeat_payload
    from edgekit.mqtt.topics import HEARTBEAT_MAX_BYTES

    drops = [[1, seq, seq, "broker: quota exceeded"] for seq in range(0, 4000, 2)]  # newest first
    payload = heartbeat_payload({"captured": 7, "drops": drops})
    sent = json.loads(payload)
    assert len(payload) <= HEARTBEAT_MAX_BYTES and sent["captured"] == 7
    assert 100 < len(sent["drops"]) < len(drops) and sent["drops"] == drops[:len(sent["drops"])]

"""Receiver-confirmed delivery and gap accounting, in-process against a real Mosquitto and real SQLite (the
receiver's results also in a real PostgreSQL: ``results_db``).

Faults are injected for real: rows deleted from a spool file, a spool whose SQLite file cannot grow
(``PRAGMA max_page_count``), a second agent on a locked spool. The page limit tests the policy's logic only:
it never stops the WAL, which a real full filesystem does; that is tests/device/test_spool_full_disk.py.
"""

from __future__ import annotations

import logging
import sqlite3

import pytest

from edgekit.delivery.acks import AckBatcher, parse_ack
from edgekit.cli import main
from edgekit.device.spool import Spool
from edgekit.errors import UsageError
from edgekit.delivery.ranges import subtract, to_ranges
from edgekit.server.ledger import parse_drops
from edgekit.server.stats import format_table, summarize
from support.running import RunningAgent, rows, seqs, start_receiver
from support.running import wait_until

FEATURES = "edgekit/v1/cam-d/features"


def test_acks_are_batched_seq_ranges_and_junk_acks_are_refused():
    batcher = AckBatcher(every_s=60, max_frames=5)
    for seq in (0, 1, 2, 4):
        batcher.add("cam-d", 7, seq)
    assert batcher.take_due() == []  # neither old nor many enough yet
    batcher.add("cam-d", 7, 5)
    ((device, payload),) = batcher.take_due()
    assert device == "cam-d" and parse_ack(payload) == (7, [(0, 2), (4, 5)])
    for junk in (b"", b"[]", b'{"boot_id": 1}', b'{"boot_id": 1, "ranges": [[5, 2]]}',
                 b'{"boot_id": "1", "ranges": []}', b'{"boot_id": 1, "ranges": [[1]]}',
                 b'{"boot_id": 1, "ranges": [[0, 99999999999999999999]]}', b'{"boot_id": -1, "ranges": [[0, 1]]}',
                 b'\xff\xfe', b'{"boot_id": 1, "ranges": [[true, 2]]}', b"[" * 10_000):
        assert parse_ack(junk) is None, junk
    assert parse_drops(b'{"drops": [[7, 0, 4, "full"], [7, 9, 2, "age"], [2e9, 1, 2, "x"], "junk"]}') == \
        [(7, 0, 4)]
    assert parse_drops(b"[1]") == parse_drops(b"\xff") == parse_drops(b'{"drops": 5}') == parse_drops(b"[" * 10_000) \
        == []
    assert to_ranges([5, 1, 2, 3, 9]) == [(1, 3), (5, 5), (9, 9)]
    assert subtract([(0, 10)], [(2, 3), (8, 12)]) == [(0, 1), (4, 7)]


def _fill_until_full(spool: Spool, pages: int, boot_id: int = 1) -> int:
    """Cap the spool file at its current size plus ``pages`` pages, then put frames until the cap bites."""
    current = spool._db.execute("PRAGMA page_count").fetchone()[0]
    spool._db.execute(f"PRAGMA max_page_count = {current + pages}")
    seq = 0
    while spool.counters.dropped_full == 0:
        spool.put(FEATURES, bytes(1000), boot_id=boot_id, seq=seq)
        seq += 1
        assert seq < 10_000, "the page cap never made SQLite report a full database"
    return seq


def test_a_full_spool_drops_the_oldest_logs_once_and_recovers(tmp_path, caplog):
    """The policy's logic at SQLite's page limit; a real full filesystem: tests/device/test_spool_full_disk.py."""
    spool = Spool(tmp_path / "spool.sqlite")
    with caplog.at_level(logging.WARNING, logger="edgekit.device.spool"):
        sent = _fill_until_full(spool, pages=40)
        for seq in range(sent, sent + 200):  # keeps taking frames: the oldest make room
            assert spool.put(FEATURES, bytes(1000), boot_id=1, seq=seq) is not None
        spool._db.execute("PRAGMA max_page_count = 1000000")  # space returns
        for seq in range(sent + 200, sent + 300):
            spool.put(FEATURES, bytes(1000), boot_id=1, seq=seq)
    full_lines = [r for r in caplog.records if "database or disk is full" in r.getMessage()]
    assert len(full_lines) == 1 and "dropping the oldest" in full_lines[0].getMessage()
    assert "has room again" in caplog.text
    kept = [r.seq for r in spool.take(0, 100_000)]
    dropped = spool.drop_ranges()
    assert spool.counters.dropped_full == sent + 300 - len(kept)
    assert dropped == [[1, 0, kept[0] - 1, "full"]] and kept == list(range(kept[0], sent + 300))
    spool.close()


def test_a_full_spool_with_drop_newest_refuses_new_frames(tmp_path):
    """The policy's logic at SQLite's page limit; a real full filesystem: tests/device/test_spool_full_disk.py."""
    spool = Spool(tmp_path / "spool.sqlite", policy="drop-newest")
    sent = _fill_until_full(spool, pages=10)
    assert spool.put(FEATURES, bytes(1000), boot_id=1, seq=sent) is None
    assert [r.seq for r in spool.take(0, 100_000)] == list(range(sent - 1))
    assert spool.drop_ranges() == [[1, sent - 1, sent, "full"]]
    spool.close()


def test_a_second_agent_on_the_same_spool_stops_with_one_line(bundle, stream, tmp_path, capsys):
    spool_path = tmp_path / "spool.sqlite"
    first = Spool(spool_path)
    with pytest.raises(UsageError, match="another agent is already running"):
        Spool(spool_path)
    code = main(["device", "run", "--bundle", str(bundle), "--device-id", "cam-d", "--source", str(stream(5)),
                 "--spool", str(spool_path), "--broker", "mqtt://127.0.0.1:1"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0 and "another agent is already running" in err, err
    first.close()
    Spool(spool_path).close()  # the lock goes with its holder


def test_frames_leave_the_spool_only_when_a_receiver_confirms_them(bundle, stream, mosquitto, tmp_path, results_db):
    db, spool = results_db, tmp_path / "spool.sqlite"
    agent = RunningAgent(bundle, mosquitto.url, spool, stream(40), confirm_timeout_s=0.5).start()
    try:
        pub = agent.agent.publisher
        assert wait_until(lambda: pub.counters.acknowledged >= 40, 30)
        assert wait_until(lambda: pub.counters.resent >= 40, 10)  # no receiver: re-sent, and still spooled
        assert agent.agent.spool.depth == 40 and pub.counters.confirmed == 0
        receiver = start_receiver(bundle, mosquitto.url, db)
        try:
            assert wait_until(lambda: agent.agent.spool.depth == 0, 30)
        finally:
            receiver.stop()
        stats = agent.finish()
    finally:
        agent.finish()
    assert stats["confirmed"] == 40 and stats["acks"] >= 1
    assert seqs(db, "cam-d", stats["boot_id"]) == list(range(40))  # re-sends absorbed by the store
    assert rows(db, "SELECT first, last FROM seq_ranges WHERE kind = 'stored'") == [(0, 39)]


def test_a_gap_made_in_a_spool_is_reported_missing_once(bundle, stream, mosquitto, tmp_path, caplog, results_db):
    db, spool = results_db, tmp_path / "spool.sqlite"
    first = RunningAgent(bundle, mosquitto.url, spool, stream(60)).start()  # no receiver yet: all stay spooled
    assert wait_until(lambda: first.agent.spool.depth == 60 and first.agent.publisher.counters.acknowledged >= 60)
    boot_id = first.finish()["boot_id"]
    with sqlite3.connect(spool) as con:  # frames lost on the device without a policy knowing: a real gap
        con.execute("DELETE FROM frames WHERE seq BETWEEN 20 AND 29")
    with caplog.at_level(logging.WARNING, logger="edgekit.server.ledger"):
        receiver = start_receiver(bundle, mosquitto.url, db, gap_grace_s=1.0)
        again = RunningAgent(bundle, mosquitto.url, spool, stream(1), limit=0).start()  # drains the old boot
        try:
            assert wait_until(lambda: len(seqs(db, "cam-d", boot_id)) == 50, 30)
            assert wait_until(lambda: receiver.ledger.alarms == 1, 10)
            again.finish()
        finally:
            receiver.stop()
    alarms = [r.getMessage() for r in caplog.records if r.getMessage().startswith("missing frames")]
    assert alarms == [f"missing frames: device cam-d boot {boot_id:08x} seq 20-29 (10 frames): neither stored "
                      f"nor dropped by the device after 1 s"]
    device = summarize(db)["devices"][0]
    assert (device["stored"], device["dropped"], device["missing"]) == (50, 0, 10)
    assert "cam-d" in format_table(summarize(db))

    restarted = start_receiver(bundle, mosquitto.url, db, gap_grace_s=1.0)  # persisted: no second alarm
    try:
        restarted.ledger.check()
        assert restarted.ledger.alarms == 0 and summarize(db)["devices"][0]["missing"] == 10
    finally:
        restarted.stop()


def test_a_spool_full_while_running_and_at_restart_keeps_sending(bundle, stream, mosquitto, tmp_path):
    """At SQLite's page limit, where the WAL still grows; on a real full filesystem (the WAL cannot grow
    either) the same story is tests/device/test_spool_full_disk.py."""
    db, spool = tmp_path / "r.sqlite", tmp_path / "spool.sqlite"
    first = RunningAgent(bundle, mosquitto.url, spool, stream(400)).start()  # no receiver: the spool fills
    db_spool = first.agent.spool._db
    db_spool.execute(f"PRAGMA max_page_count = {db_spool.execute('PRAGMA page_count').fetchone()[0] + 8}")
    try:
        assert wait_until(lambda: first.agent.counters.captured == 400, 60)
        assert first.agent.spool.counters.dropped_full > 0 and first.thread.is_alive()
    finally:
        stats = first.finish()
    kept = stats["queue_depth"]
    assert kept + stats["dropped"] == 400 and kept > 0

    receiver = start_receiver(bundle, mosquitto.url, db, gap_grace_s=1.0)
    again = RunningAgent(bundle, mosquitto.url, spool, stream(30))  # restarted on a still-full disk
    db_spool = again.agent.spool._db
    db_spool.execute(f"PRAGMA max_page_count = {db_spool.execute('PRAGMA page_count').fetchone()[0]}")
    again.start()

    def accounted() -> int:
        devices = summarize(db)["devices"]
        return devices[0]["stored"] + devices[0]["dropped"] if devices else 0

    try:  # every frame of both boots is stored or reported dropped by the policy (the disk stays full)
        assert wait_until(lambda: again.agent.spool.depth == 0 and accounted() == 400 + 30, 60), accounted()
    finally:
        again_stats = again.finish()
        receiver.stop()
    assert again_stats["captured"] == 30 and summarize(db)["devices"][0]["missing"] == 0


def test_a_gap_alarms_once_after_the_grace_even_when_partly_filled_late(results_db):
    from edgekit.server.ledger import find_gaps
    from edgekit.server.store import ResultStore

    store = ResultStore(results_db)
    store.add_dropped("d", [(1, 12, 13)])  # the device's policy dropped these: explained, never missing
    for first, last in ((0, 9), (20, 29)):
        store._db.execute("INSERT INTO seq_ranges VALUES ('d', 1, 'stored', ?, ?)", (first, last))

    def check(now: float):
        return store.update_gaps(lambda ranges, old: find_gaps(ranges, old, now, grace_s=5.0))

    assert check(100.0) == []  # seen, still within the grace period
    assert check(106.0) == [("d", 1, 10, 11), ("d", 1, 14, 19)]
    store._db.execute("INSERT INTO seq_ranges VALUES ('d', 1, 'stored', 10, 10)")  # a late re-send
    assert check(107.0) == []
    assert rows(results_db, "SELECT first, last, alarmed FROM gaps ORDER BY first") == [(11, 11, 1),
                                                                                                   (14, 19, 1)]
    store.close()

"""Settled marks (docs/server.md, Delivery): the spool's per-boot answer, the heartbeat field's parsing, and
the gaps they reveal after a boot's last stored frame. Real SQLite files (the store's also on PostgreSQL),
no broker."""

from __future__ import annotations

import json
import sqlite3

import pytest

from edgekit.device.spool import _SETTLED, REPORTED_BOOTS, Spool
from edgekit.server.ledger import MAX_SETTLED_BOOTS, find_gaps, parse_drops, parse_settled
from edgekit.server.stats import format_table, summarize
from edgekit.server.store import Result, ResultStore
from support.postgres import query

T = "edgekit/v1/cam-s/features"


def _put(spool: Spool, boot_id: int, seqs, topic: str = T) -> None:
    for seq in seqs:
        spool.put(topic, bytes(20), boot_id=boot_id, seq=seq)


def test_the_current_boot_is_settled_below_its_oldest_spooled_frame_or_its_next_seq(tmp_path):
    spool = Spool(tmp_path / "s.sqlite")
    assert spool.settled(T, 7, 0) == [[7, 0]]  # nothing captured yet
    _put(spool, 7, range(10))
    assert spool.settled(T, 7, 10) == [[7, 0]]  # all still spooled: nothing settled, however deep the spool
    spool.confirm(7, 0, 3)
    spool.confirm(7, 6, 6)  # a hole above the oldest spooled frame settles nothing yet
    assert spool.settled(T, 7, 10) == [[7, 4]]
    spool.confirm(7, 4, 9)
    assert spool.settled(T, 7, 12) == [[7, 12]]  # drained: two more were captured and dropped meanwhile
    spool.close()


def test_a_later_agent_reports_how_older_boots_ended(tmp_path):
    path = tmp_path / "s.sqlite"
    spool = Spool(path)
    _put(spool, 1, range(5))
    spool.settled(T, 1, 6)  # a heartbeat of boot 1: seq 5 was captured but refused (too big, say)
    spool.close()

    spool = Spool(path)  # boot 2, after a restart
    _put(spool, 2, range(3))
    assert spool.settled(T, 2, 3) == [[2, 0], [1, 0]]
    spool.confirm(1, 0, 4)
    assert spool.settled(T, 2, 3) == [[2, 0], [1, 6]]  # boot 1 drained: its remembered next seq
    spool.close()


def test_boots_of_a_crashed_agent_are_remembered_from_their_frames(tmp_path):
    path = tmp_path / "s.sqlite"
    spool = Spool(path)
    spool.settled(T, 1, 2)  # its last heartbeat, then 6 more frames and a crash (no final heartbeat)
    _put(spool, 1, range(8))
    spool._db.execute("DELETE FROM boots")  # as a spool written before the boots table existed
    spool._db.execute("DELETE FROM frames WHERE seq >= 6")  # frames the crashed agent had sent and lost
    spool.close()

    spool = Spool(path)
    spool.confirm(1, 0, 5)
    assert spool.settled(T, 2, 0) == [[2, 0], [1, 6]]  # the highest spooled seq + 1: all below it were made
    spool.close()


def test_boots_are_reported_per_topic_and_bounded(tmp_path):
    spool = Spool(tmp_path / "s.sqlite")
    _put(spool, 99, range(2), topic="edgekit/v1/old-id/features")  # the spool reused under another device id
    for boot_id in range(20):
        spool.settled(T, boot_id, 5)
    marks = spool.settled(T, 20, 1)
    assert marks == [[b, 5 if b < 20 else 1] for b in range(20, 20 - REPORTED_BOOTS, -1)]
    assert spool.settled("edgekit/v1/old-id/features", 100, 0)[0] == [100, 0]
    assert len(json.dumps(marks, separators=(",", ":"))) < 30 * REPORTED_BOOTS  # compact: the heartbeat is small
    spool.close()


def test_the_settled_query_is_one_index_lookup_per_boot(tmp_path):
    spool = Spool(tmp_path / "s.sqlite")
    plan = " ".join(row[-1] for row in spool._db.execute("EXPLAIN QUERY PLAN " + _SETTLED, (T, 8)))
    assert "SEARCH frames USING COVERING INDEX frames_seq (boot_id=?)" in plan, plan
    spool.close()


def test_a_full_spool_still_answers(tmp_path):
    spool = Spool(tmp_path / "s.sqlite")
    _put(spool, 3, range(4))
    spool.settled(T, 3, 4)
    spool.confirm(3, 0, 3)
    spool._db.execute(f"PRAGMA max_page_count = {spool._db.execute('PRAGMA page_count').fetchone()[0]}")
    other = T.replace("cam-s", "cam-z")  # rows as big as the current boot's, of another device
    with pytest.raises(sqlite3.OperationalError, match="full"):
        for i in range(100_000):
            spool._db.execute("INSERT INTO boots VALUES (?, ?, ?)", (2**20 + i, other, 2**20 + i))
    assert spool.settled(T, 2**21, 2**21) == [[3, 4]]  # the new boot cannot be remembered: not reported
    assert len(spool.settled(other, 2**21 + 1, 1)) == REPORTED_BOOTS
    spool.close()


def test_settled_entries_are_parsed_strictly_and_bounded():
    def beat(settled) -> bytes:
        return json.dumps({"settled": settled}).encode()

    assert parse_settled(beat([[7, 10], [8, 0], [9, 1]])) == [(7, 10), (9, 1)]  # 0: nothing settled
    junk = [[7], [7, 1, 2], ["7", 1], [7, "1"], [7, 1.5], [7, True], [-1, 3], [2**32, 3], [7, -2], [7, 2**63 + 1],
            {"7": 1}, "7,1", None]
    assert parse_settled(beat(junk)) == []
    assert parse_settled(beat([[7, 2**63]])) == [(7, 2**63)]  # every seq up to the largest a frame may carry
    assert len(parse_settled(beat([[b, 1] for b in range(1000)]))) == MAX_SETTLED_BOOTS
    for payload in (b"", b"\xff", b"[1]", b"null", b'{"settled": 5}', b'{"settled": {"7": 1}}', b"{}"):
        assert parse_settled(payload) == [], payload


def test_gaps_reach_up_to_the_settled_mark(tmp_path):
    def gaps(**kinds):
        return find_gaps({("d", 1): kinds}, {}, now=0.0, grace_s=5.0).get(("d", 1), [])

    assert gaps(stored=[(0, 9)], settled=[(0, 14)]) == [(10, 14, 0.0, 0)]  # the lost tail of a boot
    assert gaps(stored=[(0, 9)], settled=[(0, 14)], dropped=[(12, 14)]) == [(10, 11, 0.0, 0)]
    assert gaps(stored=[(0, 9)], settled=[(0, 4)]) == []  # the rest is still in the device's spool
    assert gaps(settled=[(0, 4)], dropped=[(0, 4)]) == gaps(dropped=[(0, 4)]) == []


def test_a_boot_with_nothing_stored_counts_for_a_device_this_database_knows():
    ranges = {("known", 1): {"stored": [(0, 9)]}, ("known", 2): {"settled": [(0, 4)]},
              ("elsewhere", 3): {"settled": [(0, 4)], "dropped": [(0, 1)]}}  # served by another receiver and DB
    assert find_gaps(ranges, {}, now=0.0, grace_s=5.0) == {("known", 2): [(0, 4, 0.0, 0)]}


def _results(device: str, boot_id: int, seqs) -> list[Result]:
    return [Result(device, boot_id, seq, "b" * 64, 0, "zero", 0.9, [("zero", 0.9)], 1, 2, 3, 1) for seq in seqs]


def test_stats_count_a_lost_tail(results_db):
    db = results_db
    store = ResultStore(db)
    store.insert(_results("cam-a", 1, range(10)) + _results("cam-b", 1, range(10)))
    store.add_settled("cam-a", [(1, 15)])
    store.add_settled("cam-a", [(1, 12)])  # an older heartbeat arriving late changes nothing
    store.add_settled("cam-b", [(2, 2**63 - 1), (3, 2**63 - 1)])  # huge (forged) marks: counted, no overflow
    assert store.update_gaps(lambda ranges, old: find_gaps(ranges, old, 100.0, 5.0)) == []
    alarms = store.update_gaps(lambda ranges, old: find_gaps(ranges, old, 106.0, 5.0))
    assert alarms == [("cam-a", 1, 10, 14), ("cam-b", 2, 0, 2**63 - 2), ("cam-b", 3, 0, 2**63 - 2)]
    store.close()
    assert query(db, "SELECT first, last FROM seq_ranges WHERE kind = 'settled' AND device = 'cam-a'") == [(0, 14)]
    a, b = summarize(db)["devices"]
    assert (a["device"], a["results"], a["stored"], a["missing"]) == ("cam-a", 10, 10, 5)
    assert (b["device"], b["results"], b["missing"]) == ("cam-b", 10, 2**64 - 2)
    assert format_table(summarize(db)).splitlines()[1].split()[-2:] == ["0", "5"]  # dropped, missing


def test_ranges_reach_the_largest_seq_a_frame_may_carry(results_db):
    """2**63 - 1 passes the wire checks, so the store merges ranges ending there (the merge used to look one seq
    past ``last``: an integer SQLite cannot hold) and the ledger takes drops and marks reaching it."""
    top = 2**63 - 1
    beat = json.dumps({"drops": [[4, top - 4, top - 3]], "settled": [[4, 2**63]]}).encode()
    assert parse_drops(beat) == [(4, top - 4, top - 3)] and parse_settled(beat) == [(4, 2**63)]
    db = results_db
    store = ResultStore(db)
    assert store.insert(_results("cam-m", 4, [top - 1, top])) == [True, True]
    store.add_dropped("cam-m", parse_drops(beat))
    store.add_settled("cam-m", parse_settled(beat))
    store.insert(_results("cam-m", 4, [top - 2]))  # fills the space between the two: one stored range
    alarms = store.update_gaps(lambda ranges, old: find_gaps(ranges, old, 10.0, 5.0))
    assert alarms == [] and store.update_gaps(lambda ranges, old: find_gaps(ranges, old, 20.0, 5.0)) == \
        [("cam-m", 4, 0, top - 5)]
    store.close()
    assert query(db, "SELECT kind, first, last FROM seq_ranges ORDER BY kind") == \
        [("dropped", top - 4, top - 3), ("settled", 0, top), ("stored", top - 2, top)]

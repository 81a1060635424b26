"""The device spool: bounded by bytes and age, drop policy counted, durable across a restart, WAL."""

from __future__ import annotations

import sqlite3

import pytest

from edgekit.device.spool import Spool
from edgekit.errors import UsageError


def test_fifo_take_and_ack(tmp_path):
    spool = Spool(tmp_path / "s.sqlite")
    ids = [spool.put("t", bytes([i]) * 10) for i in range(5)]
    assert [r.id for r in spool.take(0, 3)] == ids[:3]
    assert [r.id for r in spool.take(ids[2], 10)] == ids[3:]
    assert spool.ack(ids[0]) and not spool.ack(ids[0])
    assert (spool.depth, spool.nbytes) == (4, 40)


def test_drop_oldest_when_full_is_counted(tmp_path):
    spool = Spool(tmp_path / "s.sqlite", max_bytes=100)
    ids = [spool.put("t", b"x" * 30) for _ in range(5)]
    assert spool.depth == 3 and spool.nbytes == 90
    assert [r.id for r in spool.take(0, 10)] == ids[2:]
    assert spool.counters.dropped_full == 2


def test_drop_newest_refuses_and_counts(tmp_path):
    spool = Spool(tmp_path / "s.sqlite", max_bytes=100, policy="drop-newest")
    ids = [spool.put("t", b"x" * 30) for _ in range(5)]
    assert ids[3:] == [None, None]
    assert [r.id for r in spool.take(0, 10)] == ids[:3]
    assert spool.counters.dropped_full == 2


def test_frame_larger_than_spool_is_refused(tmp_path):
    spool = Spool(tmp_path / "s.sqlite", max_bytes=10)
    assert spool.put("t", b"x" * 11) is None
    assert spool.counters.refused_too_big == 1 and spool.depth == 0


def test_age_bound_expires_old_frames(tmp_path):
    spool = Spool(tmp_path / "s.sqlite", max_age_s=60)
    spool.put("t", b"old", now=1000.0)
    spool.put("t", b"new", now=1050.0)
    assert spool.expire(now=1070.0) == 1
    assert [r.payload for r in spool.take(0, 10)] == [b"new"]
    assert spool.counters.dropped_age == 1 and spool.counters.dropped == 1


def test_survives_restart_and_never_reuses_ids(tmp_path):
    path = tmp_path / "s.sqlite"
    spool = Spool(path)
    first = [spool.put("edgekit/v1/d/features", b"a" * 7) for _ in range(3)]
    spool.ack(first[2])
    spool.close()
    again = Spool(path)
    assert (again.depth, again.nbytes) == (2, 14)
    assert [r.id for r in again.take(0, 10)] == first[:2]
    assert again.put("t", b"b") > first[2]


def test_uses_wal(tmp_path):
    Spool(tmp_path / "s.sqlite")
    mode = sqlite3.connect(tmp_path / "s.sqlite").execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


def test_discard_counts_reason(tmp_path):
    spool = Spool(tmp_path / "s.sqlite")
    row = spool.put("t", b"x")
    assert spool.discard(row, "too-big")
    assert spool.counters.reasons == {"too-big": 1} and spool.depth == 0


def test_bad_policy_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="drop-oldest"):
        Spool(tmp_path / "s.sqlite", policy="keep-all")


def test_bad_bounds_name_the_real_flag(tmp_path):
    with pytest.raises(UsageError, match="--spool-max-mb"):
        Spool(tmp_path / "s.sqlite", max_bytes=0)


@pytest.mark.parametrize("path", ["/proc/nope/s.sqlite", "/etc/passwd"])
def test_a_path_that_cannot_hold_a_spool_is_a_usage_error(path):
    with pytest.raises(UsageError, match=f"cannot open the spool {path}.*--spool"):
        Spool(path)

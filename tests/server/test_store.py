"""The results store (idempotent by key, shared between connections) and the micro-batcher. The store's
tests run on both back ends (``results_db``: SQLite and PostgreSQL)."""

from __future__ import annotations

import threading
import time

import pytest

from edgekit.cli import main
from edgekit.errors import UsageError
from edgekit.server.batcher import Batcher
from edgekit.server.stats import format_table, summarize
from edgekit.server.store import DeadLetter, Result, ResultStore, Retention
from support.postgres import query


def _result(device="d1", boot=1, seq=0, label="3"):
    return Result(device, boot, seq, "ab" * 32, int(label), label, 0.9, [(label, 0.9), ("1", 0.1)],
                  capture_ns=1_000_000_000, received_ns=1_004_000_000, done_ns=1_010_000_000, batch_size=2)


def test_duplicates_never_create_rows(results_db):
    store = ResultStore(results_db, receiver="rx-1")
    assert store.insert([_result(seq=0), _result(seq=1)]) == [True, True]
    assert store.insert([_result(seq=1), _result(seq=2), _result(boot=2, seq=1)]) == [False, True, True]
    assert store.insert([_result(seq=3), _result(seq=3)]) == [True, False]  # twice in one batch: one row
    other = ResultStore(results_db, receiver="rx-2")  # a second receiver on the same database
    assert other.insert([_result(seq=0), _result(device="d2", seq=0)]) == [False, True]
    assert store.count() == 6
    rows = query(results_db, "SELECT receiver, value FROM counters WHERE name = 'duplicates' ORDER BY receiver")
    assert rows == [("rx-1", 2), ("rx-2", 1)]


def test_stats_table_from_the_database(results_db):
    store = ResultStore(results_db, receiver="rx-1")
    store.insert([_result(seq=i) for i in range(4)] + [_result(device="d2", seq=0)])
    store.dead_letters([DeadLetter("d1", "crc-mismatch", "crc differs", 80, time.time_ns())],
                       {("d1", "crc-mismatch"): 1}, Retention())
    store.set_counters({"received": 6, "stored": 5})
    summary = summarize(results_db)
    assert summary["results"] == 5 and summary["deadletters"] == {"crc-mismatch": 1}
    assert [d["results"] for d in summary["devices"]] == [4, 1]
    assert abs(summary["p50_ms"] - 10.0) < 1e-6
    table = format_table(summary)
    assert "crc-mismatch 1" in table and "received 6" in table


def test_batcher_fills_to_max_batch_at_once():
    batcher = Batcher(max_batch=4, max_wait_s=10.0)
    for i in range(10):
        batcher.put(i)
    assert batcher.next_batch(0.1) == [0, 1, 2, 3]
    assert batcher.next_batch(0.1) == [4, 5, 6, 7]


def test_batcher_closes_a_partial_batch_after_max_wait():
    """A partial batch waits ``max_wait_s`` for more, takes what came meanwhile, then closes: one that waited
    for a full batch would hang here (pytest's timeout). No upper bound on the wait: that is the machine's."""
    batcher = Batcher(max_batch=100, max_wait_s=0.5)
    batcher.put("a")
    threading.Timer(0.01, batcher.put, args=("b",)).start()
    start = time.monotonic()
    assert batcher.next_batch(1.0) == ["a", "b"]
    assert time.monotonic() - start >= 0.5  # it waited for more before closing
    assert batcher.next_batch(0.01) == []


@pytest.mark.parametrize("path", ["/proc/nope/r.sqlite", "/etc/passwd"])
def test_a_path_that_cannot_hold_a_results_database_is_a_usage_error(path):
    with pytest.raises(UsageError, match=f"cannot open the results database {path}.*--db"):
        ResultStore(path)


def test_server_stats_on_a_file_that_is_not_a_database_is_one_line(capsys):
    assert main(["server", "stats", "--db", "/etc/passwd"]) != 0
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "/etc/passwd" in err and err.count("\n") == 1
    assert "Traceback" not in err

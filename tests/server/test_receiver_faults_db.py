"""The results database refuses writes (SQLite full or read-only, a PostgreSQL server shut down or killed): the
receiver acknowledges nothing, says so in one line, and stores everything once it can write again. Dead-letter
samples are rate-limited and bounded."""

from __future__ import annotations

import logging
import signal
import sqlite3
import time

import pytest

from edgekit.mqtt.urls import parse_broker_url
from edgekit.server.deadletters import DeadLetterSink, SampleRate
from edgekit.server.receiver import Receiver, ReceiverConfig
from edgekit.server.store import DeadLetter, ResultStore, Retention
from support.running import db_rows, wait_until
from test_receiver_robustness import _frames, _publish

NO_LIMIT = "PRAGMA max_page_count = 1073741823"


def _receiver(bundle, mosquitto, db) -> Receiver:
    cfg = ReceiverConfig(bundles=[bundle], broker=parse_broker_url(mosquitto.url), db=db, client_id="rx-faults")
    receiver = Receiver(cfg).start()
    assert receiver.link.subscribed.wait(10), "the receiver did not subscribe"
    return receiver


def _on_connection(receiver: Receiver, sql: str) -> None:
    """Run a PRAGMA on the receiver's own connection (page limits and query_only are per connection)."""
    with receiver.store._lock:
        receiver.store._db.execute(sql)


def _fill(receiver: Receiver) -> None:
    """Make the database full: cap it at its current pages, then fill their free space with a scratch table."""
    with receiver.store._lock:
        db = receiver.store._db
        db.execute(f"PRAGMA max_page_count = {db.execute('PRAGMA page_count').fetchone()[0]}")
        with pytest.raises(sqlite3.OperationalError, match="full"):
            db.execute("CREATE TABLE IF NOT EXISTS test_filler (b BLOB)")
            for _ in range(10_000):
                db.execute("INSERT INTO test_filler VALUES (zeroblob(64))")


FAULTS = {  # name: (make the database refuse writes, let it write again, the cause the one line names)
    "full": (_fill, lambda r: _on_connection(r, NO_LIMIT), "is full"),
    "read-only": (lambda r: _on_connection(r, "PRAGMA query_only = ON"),
                  lambda r: _on_connection(r, "PRAGMA query_only = OFF"), "is read-only"),
}
POSTGRES_GONE = {"postgres shut down": signal.SIGINT, "postgres killed": signal.SIGKILL}  # a server of its own


@pytest.mark.parametrize("fault", [*FAULTS, *POSTGRES_GONE])
def test_a_database_that_refuses_writes_holds_acks_then_stores_everything(fault, bundle, mosquitto, tmp_path,
                                                                           caplog, request):
    if fault in POSTGRES_GONE:  # every connection goes with it; each retry is a new connection refused
        server = request.getfixturevalue("own_postgres")
        db, cause = server.url("results"), "cannot reach the results database postgresql://edgekit@127.0.0.1"
        refuse, allow = lambda r: server.stop(POSTGRES_GONE[fault]), lambda r: server.start()
    else:
        refuse, allow, cause = FAULTS[fault]
        db = tmp_path / "r.sqlite"
    frames = _frames(bundle, 100)  # a full database still has room in its last pages: enough to outgrow them
    receiver = _receiver(bundle, mosquitto, db)
    try:
        with caplog.at_level(logging.INFO, logger="edgekit"):
            _publish(mosquitto.url, frames[:10])
            assert wait_until(lambda: receiver.counters.stored == 10)
            refuse(receiver)
            _publish(mosquitto.url, frames[10:90])
            assert wait_until(lambda: cause in caplog.text)
            stalled = receiver.counters.stored
            time.sleep(2.0)  # several retries with backoff
            assert receiver.counters.stored == stalled < 90 and receiver.link.alive
            receiver.log_summary()  # the summary path logs, never raises
            allow(receiver)
            _publish(mosquitto.url, frames[90:])
            assert wait_until(lambda: receiver.counters.stored == 100, 30)
            assert wait_until(lambda: "writable again" in caplog.text)
    finally:
        receiver.stop()
    assert [s for (s,) in db_rows(db, "SELECT seq FROM results ORDER BY seq")] == list(range(100))
    assert db_rows(db, "SELECT value FROM counters WHERE name = 'stored'") == [(100,)]  # none counted twice
    outage_lines = [r for r in caplog.records if r.name == "edgekit.server.store_outage" and cause in r.getMessage()]
    assert len(outage_lines) == 1 and "not acknowledging" in outage_lines[0].getMessage()
    assert "cannot rollback" not in caplog.text and (fault not in POSTGRES_GONE or server.password not in caplog.text)
    assert not [r for r in caplog.records if r.exc_info], "no traceback"


def test_counters_not_recorded_is_one_line_per_outage(bundle, mosquitto, tmp_path, caplog):
    """A summary every 10 s during a 5-minute outage said "counters not recorded" 30 times."""
    refuse, allow, cause = FAULTS["read-only"]
    receiver = _receiver(bundle, mosquitto, tmp_path / "r.sqlite")
    try:
        with caplog.at_level(logging.WARNING, logger="edgekit.server.receiver"):
            refuse(receiver)
            for _ in range(5):
                receiver.log_summary()
            allow(receiver)
            for _ in range(2):
                receiver.log_summary()
    finally:
        receiver.stop()
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("counters ")]
    assert len(lines) == 2, lines
    assert lines[0].startswith("counters not recorded") and cause in lines[0]
    assert lines[1].startswith("counters recorded again")


def test_frames_not_stored_when_the_receiver_stops_come_back_after_a_restart(bundle, mosquitto, tmp_path, caplog):
    """While the database is full nothing is acknowledged: the broker keeps the frames for the session."""
    db = tmp_path / "r.sqlite"
    frames = _frames(bundle, 100)
    receiver = _receiver(bundle, mosquitto, db)
    with caplog.at_level(logging.WARNING, logger="edgekit"):
        _publish(mosquitto.url, frames[:5])
        assert wait_until(lambda: receiver.counters.stored == 5)
        _fill(receiver)
        _publish(mosquitto.url, frames[5:])
        assert wait_until(lambda: "is full" in caplog.text)
        receiver.stop()  # no traceback: one line saying the frames stay unacknowledged
    assert "stay unacknowledged" in caplog.text and not [r for r in caplog.records if r.exc_info]
    again = _receiver(bundle, mosquitto, db)
    try:
        assert wait_until(lambda: len(db_rows(db, "SELECT seq FROM results")) == 100, 30)
    finally:
        again.stop()
    assert [s for (s,) in db_rows(db, "SELECT seq FROM results ORDER BY seq")] == list(range(100))


def test_dead_letters_are_all_counted_but_sampled_per_device(results_db):
    store = ResultStore(results_db, receiver="rx")
    sink = DeadLetterSink(store, SampleRate(per_s=0.0, burst=5), Retention())
    sampled = [sink.offer(DeadLetter(device, "bad-magic", "x", 10, time.time_ns()))
               for device in ("a", "b") for _ in range(100)]
    sink.flush()
    store.close()
    assert sampled.count(True) == 10 and sink.not_sampled == 190
    db = results_db
    assert db_rows(db, "SELECT device, COUNT(*) FROM deadletters GROUP BY device") == [("a", 5), ("b", 5)]
    assert db_rows(db, "SELECT device, count FROM deadletter_totals ORDER BY device") == [("a", 100), ("b", 100)]


def test_dead_letter_retention_bounds_rows_and_age(results_db):
    store = ResultStore(results_db, receiver="rx")
    retention = Retention(max_rows=50, max_age_s=3600)
    now, old = time.time_ns(), time.time_ns() - 7200 * 10**9
    for batch in range(10):
        letters = [DeadLetter("d", "truncated", "x", 1, old if batch == 9 and i < 5 else now) for i in range(30)]
        store.dead_letters(letters, {("d", "truncated"): 30}, retention)
    store.close()
    db = results_db
    (rows, oldest), = db_rows(db, "SELECT COUNT(*), MIN(received_ns) FROM deadletters")
    assert rows == 45 and oldest >= now  # the newest 50, minus the 5 written already too old
    assert db_rows(db, "SELECT count FROM deadletter_totals") == [(300,)]

"""A PostgreSQL statement that hangs never hangs the receiver (``?statement_timeout=SECONDS`` in ``--db``).

Two real ways a statement hangs, against a real PostgreSQL: another session holds an ACCESS EXCLUSIVE lock on
the results table (the server cancels the insert after the statement timeout), and the server's processes
are stopped (SIGSTOP: the kernel still answers TCP, so keepalives see nothing, and nothing cancels; the
store's watchdog cuts the connection). Either is an outage, said in one line while the statement would
still hang: frames held unacknowledged, retried, then each stored exactly once. Without the timeout (or the
watchdog) the receiver would wait for as long as the lock or the stall lasts, and the tests would fail.
"""

from __future__ import annotations

import logging
import os
import signal

import pytest

from edgekit.mqtt.urls import parse_broker_url
from edgekit.server.receiver import Receiver, ReceiverConfig
from support.postgres import query
from support.running import db_rows, wait_until
from test_receiver_robustness import _frames, _publish


def _receiver(bundle, mosquitto, db) -> Receiver:
    cfg = ReceiverConfig(bundles=[bundle], broker=parse_broker_url(mosquitto.url), db=db, client_id="rx-timeout")
    receiver = Receiver(cfg).start()
    assert receiver.link.subscribed.wait(10), "the receiver did not subscribe"
    return receiver


def _check_stored_once(db: str, caplog, cause: str) -> None:
    assert [s for (s,) in db_rows(db, "SELECT seq FROM results ORDER BY seq")] == list(range(100))
    outage = [r.getMessage() for r in caplog.records if r.name == "edgekit.server.store_outage"
              and "not acknowledging" in r.getMessage()]
    assert len(outage) == 1 and cause in outage[0], outage
    assert not [r for r in caplog.records if r.exc_info], "no traceback"


def test_a_locked_results_table_is_an_outage_then_every_frame_is_stored_once(bundle, mosquitto, postgres_url,
                                                                            caplog):
    import psycopg

    db, frames = postgres_url + "?statement_timeout=1", _frames(bundle, 100)
    receiver = _receiver(bundle, mosquitto, db)
    locker = psycopg.connect(postgres_url)  # a transaction of its own, held open
    try:
        with caplog.at_level(logging.INFO, logger="edgekit"):
            _publish(mosquitto.url, frames[:10])
            assert wait_until(lambda: receiver.counters.stored == 10)
            locker.execute("LOCK TABLE results IN ACCESS EXCLUSIVE MODE")
            _publish(mosquitto.url, frames[10:90])
            assert wait_until(lambda: "did not answer" in caplog.text, 20)  # while the lock is still held
            assert receiver.counters.stored == 10 and receiver.link.alive
            locker.rollback()  # the lock goes with the transaction
            _publish(mosquitto.url, frames[90:])
            assert wait_until(lambda: receiver.counters.stored == 100, 30), receiver.counters.stored
            assert wait_until(lambda: "writable again" in caplog.text)
    finally:
        locker.close()
        receiver.stop()
    _check_stored_once(db, caplog, "cancelled after its statement_timeout of 1 s")


def test_a_stalled_server_is_cut_off_as_an_outage_then_every_frame_is_stored_once(bundle, mosquitto, own_postgres,
                                                                                 caplog):
    db, frames = own_postgres.url("results") + "?statement_timeout=1", _frames(bundle, 100)
    receiver = _receiver(bundle, mosquitto, db)
    stopped: list[int] = []
    try:
        with caplog.at_level(logging.INFO, logger="edgekit"):
            _publish(mosquitto.url, frames[:10])
            assert wait_until(lambda: receiver.counters.stored == 10)
            stopped = [pid for (pid,) in query(own_postgres.url("postgres"), "SELECT pid FROM pg_stat_activity "
                                               "WHERE datname = 'results' AND backend_type = 'client backend'")]
            assert stopped, "the receiver has no connection to stop"
            for pid in stopped:
                os.kill(pid, signal.SIGSTOP)  # its server processes hang: they neither answer nor cancel
            _publish(mosquitto.url, frames[10:90])
            assert wait_until(lambda: "did not answer" in caplog.text, 30)
            _publish(mosquitto.url, frames[90:])
            assert wait_until(lambda: receiver.counters.stored == 100, 30), receiver.counters.stored
            assert wait_until(lambda: "writable again" in caplog.text)
    finally:
        for pid in stopped:
            os.kill(pid, signal.SIGCONT)
        receiver.stop()
    _check_stored_once(db, caplog, "cut after 6 s without an answer")


def test_a_bad_statement_timeout_is_a_one_line_error(postgres_url):
    from edgekit.errors import UsageError
    from edgekit.server.store import open_database

    with pytest.raises(UsageError, match=r"statement_timeout='soon' is not a number of seconds"):
        open_database(postgres_url + "?statement_timeout=soon")
    database = open_database(postgres_url + "?statement_timeout=2.5&sslmode=disable")  # libpq's own still work
    try:
        assert database.conn.execute("SHOW statement_timeout").fetchone() == ("2500ms",)
    finally:
        database.close()

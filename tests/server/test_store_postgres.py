"""The results store on PostgreSQL (docs/server.md, PostgreSQL): one-line errors for a bad URL, a refused
login or a server that is not there; the schema's version; receivers writing at once; and tagged frames met
while the server is away. The store's other tests run on both back ends through ``results_db``; a server shut
down or killed under a running receiver is among tests/server/test_receiver_faults_db.py's faults."""

from __future__ import annotations

import logging
import random
import sqlite3
import threading
import time

import numpy as np
import pytest

from edgekit.cli import main
from edgekit.errors import UsageError
from edgekit.mqtt.broker import free_port
from edgekit.server.ledger import find_gaps
from edgekit.server.store import SCHEMA_VERSION, Result, ResultStore
from support.postgres import query
from support.running import wait_until
from test_receiver_robustness import _publish


def _result(device: str, seq: int) -> Result:
    return Result(device, 1, seq, "ab" * 32, 3, "3", 0.9, [("3", 0.9)], 1, 2, 3, 1)


def _bad_urls(server) -> dict[str, tuple[str, str]]:
    """name: (--db, what the one line says)."""
    return {
        "other scheme": ("mysql://edgekit@127.0.0.1/results", "mysql:// is not a database"),
        "malformed": (f"postgresql://edgekit@127.0.0.1:{server.port}:9/x", "not a valid PostgreSQL URL"),
        "malformed, quoting the password": (f"postgresql://edgekit:not my-secret@127.0.0.1:{server.port}/x",
                                            "not a valid PostgreSQL URL"),
        "wrong password": (server.url("postgres", password="my-secret"), "refused the login"),
        "no such database": (server.url("nowhere"), "does not exist"),
        "nothing listening": (f"postgresql://edgekit:pw@127.0.0.1:{free_port()}/results", "cannot reach"),
    }


@pytest.mark.parametrize("case", ["other scheme", "malformed", "malformed, quoting the password", "wrong password",
                                  "no such database", "nothing listening"])
def test_a_bad_database_url_is_one_line_naming_the_fix(case, postgres_server, capsys):
    url, says = _bad_urls(postgres_server)[case]
    with pytest.raises(UsageError, match=says):
        ResultStore(url)  # what edgekit server run opens first
    assert main(["server", "stats", "--db", url]) != 0
    err = capsys.readouterr().err
    assert err.startswith("error: ") and says in err and err.count("\n") == 1, err
    assert "Traceback" not in err and postgres_server.password not in err and "my-secret" not in err


def test_server_stats_reads_a_postgres_database(postgres_url, capsys):
    store = ResultStore(postgres_url, receiver="rx-1")
    store.insert([_result("cam-a", seq) for seq in range(5)])
    store.close()
    assert main(["server", "stats", "--db", postgres_url, "--json"]) == 0
    out = capsys.readouterr().out
    assert '"results": 5' in out and '"rx-1"' in out


def test_the_schema_carries_its_version_and_a_newer_one_is_refused(results_db):
    ResultStore(results_db).close()
    assert query(results_db, "SELECT version FROM schema_version") == [(SCHEMA_VERSION,)]
    store = ResultStore(results_db)  # opening a current database again changes nothing
    store._db.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION + 1,))
    store.close()
    with pytest.raises(UsageError, match=f"schema version {SCHEMA_VERSION + 1}, newer than this edgekit"):
        ResultStore(results_db)


def test_a_results_file_of_before_the_versions_is_migrated(tmp_path):
    db = tmp_path / "old.sqlite"
    with sqlite3.connect(db) as con:  # results only: no versions, no seq_ranges, no gaps yet
        con.execute("CREATE TABLE results (device TEXT NOT NULL, boot_id INTEGER NOT NULL, seq INTEGER NOT NULL, "
                    "bundle_id TEXT NOT NULL, label_index INTEGER NOT NULL, label TEXT NOT NULL, score REAL NOT NULL, "
                    "topk TEXT NOT NULL, capture_ns INTEGER NOT NULL, received_ns INTEGER NOT NULL, "
                    "done_ns INTEGER NOT NULL, batch_size INTEGER NOT NULL, receiver TEXT NOT NULL, "
                    "UNIQUE (device, boot_id, seq))")
        con.executemany("INSERT INTO results VALUES ('d', 1, ?, 'b', 0, '0', 1.0, '[]', 1, 2, 3, 1, 'rx')",
                        [(s,) for s in (0, 1, 2, 3, 4, 7, 8, 9)])
    con.close()
    store = ResultStore(db)
    assert store.insert([_result("d", 5)]) == [True]
    store.close()
    assert query(str(db), "SELECT version FROM schema_version") == [(SCHEMA_VERSION,)]
    assert query(str(db), "SELECT first, last FROM seq_ranges ORDER BY first") == [(0, 5), (7, 9)]


def test_receivers_writing_at_once_store_each_result_once(postgres_url):
    """Four receivers' stores (each its own connection) insert overlapping batches in random order while
    their ledgers merge settled marks and recompute gaps: one row per frame, one stored range per device, and
    the counters add up (the seq-range merges are read-modify-write: they must take turns)."""
    n, stores = 300, [ResultStore(postgres_url, receiver=f"rx-{i}") for i in range(4)]
    failures = []

    def write(store: ResultStore, rng: random.Random) -> None:
        try:
            seqs = [(device, s) for device in ("cam-a", "cam-b") for s in range(n)]
            rng.shuffle(seqs)
            for i in range(0, len(seqs), 16):
                store.insert([_result(device, s) for device, s in seqs[i:i + 16]])
                store.add_settled("cam-a", [(1, rng.randrange(1, n))])
                store.update_gaps(lambda ranges, old: find_gaps(ranges, old, time.time(), 300.0))
        except Exception as err:  # reported by the main thread
            failures.append(err)

    threads = [threading.Thread(target=write, args=(s, random.Random(i))) for i, s in enumerate(stores)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    for s in stores:
        s.close()
    assert not failures, failures
    assert query(postgres_url, "SELECT device, COUNT(*) FROM results GROUP BY device ORDER BY device") == \
        [("cam-a", n), ("cam-b", n)]
    assert query(postgres_url, "SELECT device, first, last FROM seq_ranges WHERE kind = 'stored' ORDER BY device"
                 ) == [("cam-a", 0, n - 1), ("cam-b", 0, n - 1)]
    counted = dict(query(postgres_url, "SELECT name, SUM(value) FROM counters GROUP BY name"))
    assert (counted["stored"], counted["duplicates"]) == (2 * n, 3 * 2 * n)
    assert query(postgres_url, "SELECT COUNT(*) FROM gaps") == [(0,)]


def test_tagged_frames_met_while_postgres_is_away_are_left_to_their_devices_re_sends(own_postgres, bundle, mosquitto,
                                                                                    tmp_path, caplog):
    """With --frame-keys the replay window of a new boot is read from the store as its first frame arrives:
    while the server is away, the frame is not dead-lettered (it is genuine) nor confirmed, so its device sends
    it again, and that copy is stored once the server is back."""
    from edgekit.auth.keys import KeyStore
    from edgekit.auth.tags import seal
    from edgekit.bundle.manifest import Bundle
    from edgekit.mqtt.urls import parse_broker_url
    from edgekit.server.receiver import Receiver, ReceiverConfig
    from edgekit.wire.encoder import WireEncoder

    keys = KeyStore(tmp_path / "keys", create=True)
    encoder = WireEncoder.from_bundle(Bundle.load(bundle))
    encoder.sealer = seal(keys.add("cam-r"), "cam-r")
    code = np.zeros(encoder.spec.code_shape, np.int8)
    frames = [encoder.encode(code, *encoder.spec.wire_quant, seq=seq, boot_id=7, timestamp_ns=time.time_ns())
              for seq in range(5)]
    cfg = ReceiverConfig(bundles=[bundle], broker=parse_broker_url(mosquitto.url), db=own_postgres.url("results"),
                         client_id="rx-keys", keys=tmp_path / "keys", require_auth=True)
    receiver = Receiver(cfg).start()
    try:
        assert receiver.link.subscribed.wait(10)
        own_postgres.stop()
        with caplog.at_level(logging.INFO, logger="edgekit"):
            _publish(mosquitto.url, frames)
            assert wait_until(lambda: receiver.counters.received == 5)
            assert (receiver.counters.deadlettered, receiver.counters.stored) == (0, 0)
            own_postgres.start()
            _publish(mosquitto.url, frames)  # the device's re-sends
            assert wait_until(lambda: receiver.counters.stored == 5, 30)
    finally:
        receiver.stop()
    assert [s for (s,) in query(cfg.db, "SELECT seq FROM results ORDER BY seq")] == list(range(5))
    assert not [r for r in caplog.records if r.exc_info], "no traceback"

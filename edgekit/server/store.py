"""Results in SQLite, idempotent by construction.

A result is keyed by ``(device, boot_id, seq)`` with a UNIQUE constraint and written with INSERT OR IGNORE,
so a QoS 1 re-delivery, a re-send after an agent restart or a second receiver sharing the file never creates
a second row. WAL mode and a busy timeout let several receivers (and ``edgekit server stats``) share one file.
Dead letters and per-receiver counters live beside the results, so the database alone tells the story:
every dead letter is counted in ``deadletter_totals`` (per receiver, device and reason), and a bounded sample
of them is kept in ``deadletters`` (see :class:`Retention` and edgekit.server.deadletters).
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from edgekit.errors import UsageError

__all__ = ["Result", "DeadLetter", "Retention", "ResultStore"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS results (
    device TEXT NOT NULL,
    boot_id INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    bundle_id TEXT NOT NULL,
    label_index INTEGER NOT NULL,
    label TEXT NOT NULL,
    score REAL NOT NULL,
    topk TEXT NOT NULL,           -- JSON [[label, score], ...]
    capture_ns INTEGER NOT NULL,  -- device clock, from the frame
    received_ns INTEGER NOT NULL, -- receiver clock
    done_ns INTEGER NOT NULL,
    batch_size INTEGER NOT NULL,
    receiver TEXT NOT NULL,
    UNIQUE (device, boot_id, seq)
);
CREATE TABLE IF NOT EXISTS deadletters (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    device TEXT,
    reason TEXT NOT NULL,         -- a FrameError code (bad-magic, crc-mismatch, unknown-bundle, ...)
    error TEXT NOT NULL,
    nbytes INTEGER NOT NULL,
    received_ns INTEGER NOT NULL,
    receiver TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS deadletters_by_time ON deadletters (received_ns);
CREATE TABLE IF NOT EXISTS deadletter_totals (
    receiver TEXT NOT NULL,
    device TEXT NOT NULL,
    reason TEXT NOT NULL,
    count INTEGER NOT NULL,
    PRIMARY KEY (receiver, device, reason)
);
CREATE TABLE IF NOT EXISTS auth_boots (  -- boots opened by an authenticated frame (edgekit/auth.py)
    device TEXT NOT NULL,
    boot_id INTEGER NOT NULL,
    first_seen_ns INTEGER NOT NULL,
    PRIMARY KEY (boot_id, device)
);
CREATE TABLE IF NOT EXISTS counters (
    receiver TEXT NOT NULL,
    name TEXT NOT NULL,
    value INTEGER NOT NULL,
    PRIMARY KEY (receiver, name)
);
"""


@dataclass(frozen=True)
class Result:
    device: str
    boot_id: int
    seq: int
    bundle_id: str
    label_index: int
    label: str
    score: float
    topk: list[tuple[str, float]]
    capture_ns: int
    received_ns: int
    done_ns: int
    batch_size: int


@dataclass(frozen=True)
class DeadLetter:
    device: str | None
    reason: str
    error: str
    nbytes: int
    received_ns: int


@dataclass(frozen=True)
class Retention:
    """How many dead-letter samples the ``deadletters`` table keeps: the newest ``max_rows``, none older than
    ``max_age_s``. Junk must not fill the disk that results need; the totals keep counting regardless."""

    max_rows: int = 10_000
    max_age_s: float = 7 * 24 * 3600


class ResultStore:
    """One SQLite file of results, dead letters and counters; safe to share between threads and processes."""

    def __init__(self, path: str | Path, receiver: str = "receiver"):
        self.path = Path(path)
        self.receiver = receiver
        self._lock = threading.Lock()
        self._db = _open(self.path)

    def insert(self, results: list[Result]) -> list[bool]:
        """Store results in one transaction; for each, True if it is new, False if it was a duplicate."""
        sql = ("INSERT OR IGNORE INTO results (device, boot_id, seq, bundle_id, label_index, label, score, topk,"
               " capture_ns, received_ns, done_ns, batch_size, receiver) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)")
        fresh = []
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for r in results:
                    cur = self._db.execute(sql, (r.device, r.boot_id, r.seq, r.bundle_id, r.label_index, r.label,
                                                 r.score, json.dumps(r.topk), r.capture_ns, r.received_ns,
                                                 r.done_ns, r.batch_size, self.receiver))
                    fresh.append(cur.rowcount == 1)
                self._add_counter("duplicates", fresh.count(False))
                self._db.execute("COMMIT")
            except BaseException:
                self._rollback()
                raise
        return fresh

    def dead_letters(self, samples: list[DeadLetter], totals: dict[tuple[str, str], int],
                     retention: Retention) -> None:
        """In one transaction: store dead-letter samples, add ``{(device, reason): n}`` to the totals, and
        trim the samples to ``retention``."""
        oldest_ns = time.time_ns() - int(retention.max_age_s * 1e9)
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany(
                    "INSERT INTO deadletters (device, reason, error, nbytes, received_ns, receiver) VALUES (?,?,?,?,?,?)",
                    [(d.device, d.reason, d.error, d.nbytes, d.received_ns, self.receiver) for d in samples])
                self._db.executemany(
                    "INSERT INTO deadletter_totals (receiver, device, reason, count) VALUES (?, ?, ?, ?) ON CONFLICT"
                    " (receiver, device, reason) DO UPDATE SET count = count + excluded.count",
                    [(self.receiver, device, reason, n) for (device, reason), n in totals.items()])
                self._db.execute("DELETE FROM deadletters WHERE received_ns < ?", (oldest_ns,))
                self._db.execute("DELETE FROM deadletters WHERE id <= (SELECT MAX(id) FROM deadletters) - ?",
                                 (retention.max_rows,))
                self._db.execute("COMMIT")
            except BaseException:
                self._rollback()
                raise

    def set_counters(self, values: dict[str, int]) -> None:
        """Record this receiver's running counters (for ``edgekit server stats``)."""
        with self._lock:
            self._db.executemany("INSERT INTO counters (receiver, name, value) VALUES (?, ?, ?) ON CONFLICT"
                                 " (receiver, name) DO UPDATE SET value = excluded.value",
                                 [(self.receiver, k, int(v)) for k, v in values.items() if k != "duplicates"])

    # ---- the replay window's memory (edgekit.auth.BootRecords): the results themselves, and the boots seen
    def stored_seqs(self, device: str, boot_id: int, window: int) -> tuple[int, set[int]]:
        """The highest stored seq of a boot (-1: none) and the stored seqs within ``window`` of it."""
        with self._lock:
            (top,) = self._db.execute("SELECT MAX(seq) FROM results WHERE device = ? AND boot_id = ?",
                                      (device, boot_id)).fetchone()
            if top is None:
                return -1, set()
            rows = self._db.execute("SELECT seq FROM results WHERE device = ? AND boot_id = ? AND seq > ?",
                                    (device, boot_id, top - window)).fetchall()
        return top, {seq for (seq,) in rows}

    def add_boot(self, device: str, boot_id: int) -> None:
        with self._lock:
            self._db.execute("INSERT OR IGNORE INTO auth_boots (device, boot_id, first_seen_ns) VALUES (?, ?, ?)",
                             (device, boot_id, time.time_ns()))

    def boot_devices(self, boot_id: int) -> list[str]:
        """The devices that opened a boot with this id (normally one)."""
        with self._lock:
            rows = self._db.execute("SELECT device FROM auth_boots WHERE boot_id = ?", (boot_id,)).fetchall()
        return [device for (device,) in rows]

    def count(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM results").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _rollback(self) -> None:
        """Roll back unless SQLite already has: after SQLITE_FULL (and some I/O errors) it ends the transaction
        itself, and a ROLLBACK then fails with "no transaction is active", hiding the real error."""
        if self._db.in_transaction:
            self._db.execute("ROLLBACK")

    def _add_counter(self, name: str, delta: int) -> None:
        if delta:
            self._db.execute("INSERT INTO counters (receiver, name, value) VALUES (?, ?, ?) ON CONFLICT"
                             " (receiver, name) DO UPDATE SET value = value + excluded.value",
                             (self.receiver, name, delta))


def _open(path: Path) -> sqlite3.Connection:
    """The results file, in WAL mode with its schema; a path that cannot hold one (a missing or read-only
    folder, a file that is not a database) is the user's to fix, so it is a one-line :class:`UsageError`."""
    db = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30.0)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.executescript(_SCHEMA)
        return db
    except (OSError, sqlite3.DatabaseError) as err:
        if db is not None:
            db.close()
        raise UsageError(f"cannot open the results database {path}: {err}",
                         "pass --db a SQLite file (or a new file) in a writable folder") from None

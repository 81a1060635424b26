"""Results in SQLite or PostgreSQL, idempotent by construction.

A result is keyed by ``(device, boot_id, seq)`` with a UNIQUE constraint and written with ``ON CONFLICT DO
NOTHING``, so a QoS 1 re-delivery, a re-send after an agent restart or a second receiver sharing the database
never creates a second row. ``--db`` is a SQLite file (WAL mode and a busy timeout let several receivers on
one machine, and ``edgekit server stats``, share it) or a ``postgresql://`` URL (receivers on many machines).
The SQL below is written once, with ``?`` placeholders, for both; each back end (store_sqlite.py,
store_postgres.py) opens its database, runs a write transaction (one writer at a time) and names its errors.
The schema carries a version number (``schema_version``) and is created or migrated when a store opens.
Dead letters and per-receiver counters live beside the results, so the database alone tells the story
(``stored`` and ``duplicates`` are counted by the results' own transaction, the rest recorded with it):
every dead letter is counted in ``deadletter_totals`` (per receiver, device and reason), and a bounded sample
of them is kept in ``deadletters`` (see :class:`Retention` and edgekit.server.deadletters).

Delivery accounting (docs/server.md, Every frame accounted for): per ``(device, boot_id)`` the seq ranges
stored (merged in the same transaction as the results), dropped by the device's policy and settled (no
longer in the device's spool; both from its heartbeats) live in ``seq_ranges``; the holes in ``gaps``, with
when each was first seen and whether it has been reported missing.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from edgekit.errors import UsageError
from edgekit.delivery.ranges import merge_range, to_ranges
from edgekit.server.store_sqlite import SqliteDatabase

__all__ = ["Result", "DeadLetter", "Retention", "ResultStore", "open_database", "SCHEMA_VERSION"]

# The schema of version 1, for both back ends: SQLite reads BIGINT and DOUBLE PRECISION as its INTEGER and REAL.
# Only the auto-numbered id differs ({id_column}). Statements are separated by ";" at a line end.
_SCHEMA = """
CREATE TABLE IF NOT EXISTS results (
    device TEXT NOT NULL,
    boot_id BIGINT NOT NULL,
    seq BIGINT NOT NULL,
    bundle_id TEXT NOT NULL,
    label_index BIGINT NOT NULL,
    label TEXT NOT NULL,
    score DOUBLE PRECISION NOT NULL,
    topk TEXT NOT NULL,           -- JSON [[label, score], ...]
    capture_ns BIGINT NOT NULL,   -- device clock, from the frame
    received_ns BIGINT NOT NULL,  -- receiver clock
    done_ns BIGINT NOT NULL,
    batch_size BIGINT NOT NULL,
    receiver TEXT NOT NULL,
    UNIQUE (device, boot_id, seq)
);
CREATE TABLE IF NOT EXISTS deadletters (
    id {id_column},
    device TEXT,
    reason TEXT NOT NULL,         -- a FrameError code (bad-magic, crc-mismatch, unknown-bundle, ...)
    error TEXT NOT NULL,
    nbytes BIGINT NOT NULL,
    received_ns BIGINT NOT NULL,
    receiver TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS deadletters_by_time ON deadletters (received_ns);
CREATE TABLE IF NOT EXISTS deadletter_totals (
    receiver TEXT NOT NULL,
    device TEXT NOT NULL,
    reason TEXT NOT NULL,
    count BIGINT NOT NULL,
    PRIMARY KEY (receiver, device, reason)
);
CREATE TABLE IF NOT EXISTS auth_boots (  -- boots opened by an authenticated frame (edgekit/auth/)
    device TEXT NOT NULL,
    boot_id BIGINT NOT NULL,
    first_seen_ns BIGINT NOT NULL,
    PRIMARY KEY (boot_id, device)
);
CREATE TABLE IF NOT EXISTS counters (
    receiver TEXT NOT NULL,
    name TEXT NOT NULL,
    value BIGINT NOT NULL,
    PRIMARY KEY (receiver, name)
);
CREATE TABLE IF NOT EXISTS seq_ranges (
    device TEXT NOT NULL,
    boot_id BIGINT NOT NULL,
    kind TEXT NOT NULL,           -- 'stored'; from the device's heartbeats: 'dropped' by its policy, or
                                  -- 'settled' (0..below-1: those frames have left its spool)
    first BIGINT NOT NULL,        -- inclusive seq range, merged with its neighbours
    last BIGINT NOT NULL,
    PRIMARY KEY (device, boot_id, kind, first)
);
CREATE TABLE IF NOT EXISTS gaps (
    device TEXT NOT NULL,
    boot_id BIGINT NOT NULL,
    first BIGINT NOT NULL,
    last BIGINT NOT NULL,
    since DOUBLE PRECISION NOT NULL,  -- wall-clock seconds when the hole was first seen
    alarmed BIGINT NOT NULL,      -- 1 once older than the grace period: missing, alarm logged
    PRIMARY KEY (device, boot_id, first)
);
"""

#: Counters that :meth:`ResultStore.insert` adds up in the results' own transaction: exact, whatever happens to
#: the process; :meth:`ResultStore.set_counters` leaves them alone.
_COUNTED_BY_INSERT = ("stored", "duplicates")

_INSERT_RESULTS = ("INSERT INTO results (device, boot_id, seq, bundle_id, label_index, label, score, topk, capture_ns,"
                   " received_ns, done_ns, batch_size, receiver) VALUES ")
#: Rows per INSERT statement: 13 parameters each, well inside SQLite's 32,766 and PostgreSQL's 65,535.
_ROWS_PER_INSERT = 256

# Stored ranges of a database written before seq_ranges existed (gaps and islands).
_BACKFILL = """
INSERT INTO seq_ranges (device, boot_id, kind, first, last)
SELECT device, boot_id, 'stored', MIN(seq), MAX(seq) FROM (
    SELECT device, boot_id, seq, seq - ROW_NUMBER() OVER (PARTITION BY device, boot_id ORDER BY seq) AS island
    FROM results) AS numbered
GROUP BY device, boot_id, island
"""

#: The schema's version: :func:`_migrate` brings an older database here when a store opens it.
SCHEMA_VERSION = 1


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
    """One database of results, dead letters and counters (``db``: a SQLite file or a ``postgresql://`` URL);
    safe to share between threads, processes and receivers.

    ``errors`` are the back end's error classes, ``outage_errors`` those that mean the database refuses
    writes for now (full, locked, read-only, gone away: edgekit.server.store_outage waits them out), and
    :meth:`describe` says one of them in one line (cause, fix)."""

    def __init__(self, db: str | Path, receiver: str = "receiver"):
        self.receiver = receiver
        self._lock = threading.Lock()
        self.database = open_database(db)
        self.name = self.database.name
        self.errors = self.database.errors
        self.outage_errors = self.database.outage_errors
        self._db = self.database.conn
        try:
            _migrate(self.database)
        except self.errors as err:  # e.g. a read-only SQLite file, a user without CREATE rights
            cause, fix = self.database.describe(err)
            self.database.close()
            raise UsageError(cause, fix) from None
        except UsageError:  # a newer schema
            self.database.close()
            raise

    def describe(self, err: Exception) -> tuple[str, str]:
        """``(cause, fix)`` for an error of :attr:`errors` that is the database's fault, not a frame's."""
        return self.database.describe(err)

    def insert(self, results: list[Result], counters: dict[str, int] | None = None) -> list[bool]:
        """Store results in one transaction; for each, True if it is new, False if it was a duplicate.

        The same transaction counts them (``stored``, ``duplicates``) and records ``counters`` (the receiver's
        others, as :meth:`set_counters`), so a receiver killed with ``kill -9`` has its counters as of its last
        batch: no result is ever stored without being counted."""
        with self._lock, self._transaction():
            fresh = self._insert_results(results)
            self._merge_stored([r for r, new in zip(results, fresh) if new])
            self._add_counters({"stored": fresh.count(True), "duplicates": fresh.count(False)})
            self._set_counters(counters or {})
        return fresh

    def _insert_results(self, results: list[Result]) -> list[bool]:
        """INSERT the results, :data:`_ROWS_PER_INSERT` rows per statement (one round trip each to PostgreSQL,
        not one per row); True for each that is new: its key came back from ``RETURNING`` (a key twice in one
        batch: its first)."""
        new: set[tuple[str, int, int]] = set()
        for i in range(0, len(results), _ROWS_PER_INSERT):
            chunk = results[i:i + _ROWS_PER_INSERT]
            sql = (_INSERT_RESULTS + ", ".join(["(?,?,?,?,?,?,?,?,?,?,?,?,?)"] * len(chunk))
                   + " ON CONFLICT DO NOTHING RETURNING device, boot_id, seq")
            rows = [(r.device, r.boot_id, r.seq, r.bundle_id, r.label_index, r.label, r.score, json.dumps(r.topk),
                     r.capture_ns, r.received_ns, r.done_ns, r.batch_size, self.receiver) for r in chunk]
            new.update(tuple(key) for key in self._db.execute(sql, [v for row in rows for v in row]).fetchall())
        fresh = []
        for r in results:
            key = (r.device, r.boot_id, r.seq)
            fresh.append(key in new)
            new.discard(key)
        return fresh

    def dead_letters(self, samples: list[DeadLetter], totals: dict[tuple[str, str], int],
                     retention: Retention) -> None:
        """In one transaction: store dead-letter samples, add ``{(device, reason): n}`` to the totals, and
        trim the samples to ``retention``."""
        oldest_ns = time.time_ns() - int(retention.max_age_s * 1e9)
        with self._lock, self._transaction():
            self._db.executemany(
                "INSERT INTO deadletters (device, reason, error, nbytes, received_ns, receiver) VALUES (?,?,?,?,?,?)",
                [(d.device, d.reason, d.error, d.nbytes, d.received_ns, self.receiver) for d in samples])
            self._db.executemany(
                "INSERT INTO deadletter_totals (receiver, device, reason, count) VALUES (?, ?, ?, ?) ON CONFLICT"
                " (receiver, device, reason) DO UPDATE SET count = deadletter_totals.count + excluded.count",
                [(self.receiver, device, reason, n) for (device, reason), n in totals.items()])
            self._db.execute("DELETE FROM deadletters WHERE received_ns < ?", (oldest_ns,))
            self._db.execute("DELETE FROM deadletters WHERE id <= (SELECT MAX(id) FROM deadletters) - ?",
                             (retention.max_rows,))

    def set_counters(self, values: dict[str, int]) -> None:
        """Record this receiver's running counters (for ``edgekit server stats``), but those of
        :data:`_COUNTED_BY_INSERT`, which only the results' transactions write."""
        with self._lock:
            self._set_counters(values)

    def counters(self) -> dict[str, int]:
        """This receiver's counters as last recorded (a restarted receiver continues from them)."""
        with self._lock:
            return dict(self._db.execute("SELECT name, value FROM counters WHERE receiver = ?", (self.receiver,)))

    def add_dropped(self, device: str, drops: list[tuple[int, int, int]]) -> None:
        """Merge ``(boot_id, first, last)`` ranges a device reported dropped by its policy."""
        self._add_reported(device, "dropped", drops)

    def add_settled(self, device: str, settled: list[tuple[int, int]]) -> None:
        """Merge ``(boot_id, below)`` marks a device reported: every frame of the boot below ``below`` has
        left its spool (kind ``settled``, the range ``0..below-1``)."""
        self._add_reported(device, "settled", [(boot_id, 0, below - 1) for boot_id, below in settled])

    def _add_reported(self, device: str, kind: str, ranges: list[tuple[int, int, int]]) -> None:
        with self._lock, self._transaction():
            for boot_id, first, last in ranges:
                merge_range(self._db, "seq_ranges", {"device": device, "boot_id": boot_id, "kind": kind}, first, last)

    def update_gaps(self, find_gaps) -> list[tuple[str, int, int, int]]:
        """Recompute the gaps in one transaction (several receivers may share the file):
        ``find_gaps(ranges, old_gaps)`` gets ``{(device, boot_id): {kind: [(first, last)]}}`` and the
        stored gaps ``{(device, boot_id): [(first, last, since, alarmed)]}`` and returns the new gaps in
        the same form; the gaps newly alarmed are returned as ``(device, boot_id, first, last)``."""
        with self._lock, self._transaction():
            ranges: dict[tuple[str, int], dict[str, list]] = {}
            for device, boot_id, kind, first, last in self._db.execute(
                    "SELECT device, boot_id, kind, first, last FROM seq_ranges ORDER BY device, boot_id, first"):
                ranges.setdefault((device, boot_id), {}).setdefault(kind, []).append((first, last))
            old: dict[tuple[str, int], list] = {}
            for device, boot_id, *gap in self._db.execute(
                    "SELECT device, boot_id, first, last, since, alarmed FROM gaps ORDER BY first"):
                old.setdefault((device, boot_id), []).append(tuple(gap))
            new = find_gaps(ranges, old)
            if new == old:
                return []
            self._db.execute("DELETE FROM gaps")
            self._db.executemany("INSERT INTO gaps (device, boot_id, first, last, since, alarmed) VALUES "
                                 "(?, ?, ?, ?, ?, ?)", [(*key, *g) for key, gs in new.items() for g in gs])

        def alarmed_before(key, first, last) -> bool:  # a hole partly filled late is not a new alarm
            return any(g[3] and g[0] <= last and g[1] >= first for g in old.get(key, []))

        return [(*key, g[0], g[1]) for key, gs in new.items() for g in gs
                if g[3] and not alarmed_before(key, g[0], g[1])]

    # ---- the replay window's memory (edgekit.auth.authenticator.BootRecords): the results themselves, and the boots seen
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
            self._db.execute("INSERT INTO auth_boots (device, boot_id, first_seen_ns) VALUES (?, ?, ?)"
                             " ON CONFLICT DO NOTHING", (device, boot_id, time.time_ns()))

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
            self.database.close()

    def _transaction(self):
        """One writer at a time (SQLite: BEGIN IMMEDIATE; PostgreSQL: an advisory lock), committed at the end."""
        return self.database.transaction()

    def _merge_stored(self, results: list[Result]) -> None:
        """Add newly stored results to the ``stored`` seq ranges (in the caller's transaction)."""
        seqs: dict[tuple[str, int], list[int]] = {}
        for r in results:
            seqs.setdefault((r.device, r.boot_id), []).append(r.seq)
        for (device, boot_id), values in seqs.items():
            for first, last in to_ranges(values):
                merge_range(self._db, "seq_ranges", {"device": device, "boot_id": boot_id, "kind": "stored"},
                            first, last)

    def _set_counters(self, values: dict[str, int]) -> None:
        self._db.executemany("INSERT INTO counters (receiver, name, value) VALUES (?, ?, ?) ON CONFLICT"
                             " (receiver, name) DO UPDATE SET value = excluded.value",
                             [(self.receiver, k, int(v)) for k, v in values.items() if k not in _COUNTED_BY_INSERT])

    def _add_counters(self, deltas: dict[str, int]) -> None:
        self._db.executemany("INSERT INTO counters (receiver, name, value) VALUES (?, ?, ?) ON CONFLICT"
                             " (receiver, name) DO UPDATE SET value = counters.value + excluded.value",
                             [(self.receiver, name, delta) for name, delta in deltas.items() if delta])


def open_database(db: str | Path, read_only: bool = False):
    """The back end for ``--db``: a ``postgresql://`` (or ``postgres://``) URL, or else a SQLite file path.
    Any other ``scheme://`` is a one-line :class:`UsageError` (it would otherwise become a folder name)."""
    text = str(db)
    scheme = text.split("://", 1)[0].lower() if "://" in text else None
    if scheme in ("postgresql", "postgres"):
        from edgekit.server.store_postgres import PostgresDatabase

        return PostgresDatabase(text, read_only)
    if scheme is not None:
        raise UsageError(f"--db {scheme}:// is not a database edgekit can store results in",
                         "pass a SQLite file path or a postgresql://USER@HOST:PORT/DBNAME URL")
    return SqliteDatabase(Path(db), read_only)


def _migrate(database) -> None:
    """Create the schema, or bring an older one to :data:`SCHEMA_VERSION`, in one write transaction (receivers
    starting together take turns). A database of a newer edgekit is refused: its tables may mean more."""
    statements = [s for s in _SCHEMA.format(id_column=database.id_column).split(";\n") if s.strip()]
    db = database.conn
    with database.transaction():
        db.execute("CREATE TABLE IF NOT EXISTS schema_version (version BIGINT NOT NULL)")
        version = db.execute("SELECT MAX(version) FROM schema_version").fetchone()[0] or 0
        if version > SCHEMA_VERSION:
            raise UsageError(f"the results database {database.name} has schema version {version}, newer than this "
                             f"edgekit's ({SCHEMA_VERSION})", "upgrade edgekit on this machine (pip install -U)")
        if version == SCHEMA_VERSION:
            return
        for statement in statements:  # version 1: the tables (a file of before the versions has some of them)
            db.execute(statement)
        if db.execute("SELECT NOT EXISTS (SELECT 1 FROM seq_ranges)").fetchone()[0]:
            db.execute(_BACKFILL)
        db.execute("DELETE FROM schema_version")
        db.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,))

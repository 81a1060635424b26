"""Store-and-forward: a bounded on-disk queue of encoded frames (SQLite in WAL mode).

::

    capture ──put()──► [spool.sqlite]  ──take()──► publisher ──► broker
                         ▲   bounded by bytes and age        │
                         └────────────── ack(id) ◄── PUBACK ─┘

A frame leaves the spool only when the broker has acknowledged it, so a broker outage or an agent crash
(even SIGKILL: WAL commits survive the process) loses nothing within the bounds. When the spool is full the
policy decides: ``drop-oldest`` (default: the freshest data matters most) deletes the oldest frames,
``drop-newest`` refuses the new one. Frames older than ``max_age_s`` expire. Every loss is counted.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from edgekit.errors import UsageError

__all__ = ["POLICIES", "SpoolRow", "SpoolCounters", "Spool"]

POLICIES = ("drop-oldest", "drop-newest")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS frames (
    id INTEGER PRIMARY KEY AUTOINCREMENT,   -- never reused, so a stale ack cannot hit a new frame
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    nbytes INTEGER NOT NULL,
    created REAL NOT NULL                   -- wall-clock seconds, so age survives a restart
);
"""


@dataclass(frozen=True)
class SpoolRow:
    id: int
    topic: str
    payload: bytes


@dataclass
class SpoolCounters:
    """Frames lost by policy, since this process opened the spool."""

    dropped_full: int = 0
    dropped_age: int = 0
    refused_too_big: int = 0
    reasons: dict[str, int] = field(default_factory=dict)

    @property
    def dropped(self) -> int:
        return self.dropped_full + self.dropped_age + self.refused_too_big


class Spool:
    """A thread-safe, bounded, persistent FIFO of ``(topic, payload)`` with ack-based removal."""

    def __init__(self, path: str | Path, max_bytes: int = 256 * 2**20, max_age_s: float = 7 * 24 * 3600,
                 policy: str = "drop-oldest"):
        if policy not in POLICIES:
            raise UsageError(f"unknown spool policy {policy!r}", f"use one of {', '.join(POLICIES)}")
        if max_bytes <= 0 or max_age_s <= 0:
            raise UsageError("spool bounds must be positive", "give --spool-max-mb and --spool-max-age > 0")
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.max_age_s = max_age_s
        self.policy = policy
        self.counters = SpoolCounters()
        self._lock = threading.Lock()
        self._db, self._count, self._bytes = _open(self.path)

    @property
    def depth(self) -> int:
        """Frames waiting (including those in flight, not yet acknowledged)."""
        return self._count

    @property
    def nbytes(self) -> int:
        return self._bytes

    def put(self, topic: str, payload: bytes, now: float | None = None) -> int | None:
        """Append a frame; its row id, or None when the policy refused it (counted)."""
        now = time.time() if now is None else now
        size = len(payload)
        with self._lock:
            self._expire(now)
            if size > self.max_bytes:
                self.counters.refused_too_big += 1
                return None
            if self._bytes + size > self.max_bytes:
                if self.policy == "drop-newest":
                    self.counters.dropped_full += 1
                    return None
                self._drop_oldest(self._bytes + size - self.max_bytes)
            cur = self._db.execute("INSERT INTO frames (topic, payload, nbytes, created) VALUES (?, ?, ?, ?)",
                                   (topic, payload, size, now))
            self._count += 1
            self._bytes += size
            return cur.lastrowid

    def take(self, after_id: int, limit: int) -> list[SpoolRow]:
        """Up to ``limit`` oldest frames with id > ``after_id`` (the publisher's high-water mark)."""
        with self._lock:
            rows = self._db.execute("SELECT id, topic, payload FROM frames WHERE id > ? ORDER BY id LIMIT ?",
                                    (after_id, limit)).fetchall()
        return [SpoolRow(i, t, bytes(p)) for i, t, p in rows]

    def ack(self, row_id: int) -> bool:
        """The broker has the frame: delete it. False if it was already gone (dropped or acked)."""
        return self._delete(row_id) is not None

    def discard(self, row_id: int, reason: str) -> bool:
        """Give up on a frame the broker will never take (too large, rejected), counting why."""
        if self._delete(row_id) is None:
            return False
        self.counters.reasons[reason] = self.counters.reasons.get(reason, 0) + 1
        return True

    def expire(self, now: float | None = None) -> int:
        """Delete frames older than ``max_age_s``; how many."""
        with self._lock:
            return self._expire(time.time() if now is None else now)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _delete(self, row_id: int) -> int | None:
        with self._lock:
            row = self._db.execute("DELETE FROM frames WHERE id = ? RETURNING nbytes", (row_id,)).fetchone()
            if row is None:
                return None
            self._count -= 1
            self._bytes -= row[0]
            return row[0]

    def _expire(self, now: float) -> int:
        rows = self._db.execute("DELETE FROM frames WHERE created < ? RETURNING nbytes",
                                (now - self.max_age_s,)).fetchall()
        self._forget(rows)
        self.counters.dropped_age += len(rows)
        return len(rows)

    def _drop_oldest(self, need: int) -> None:
        """Delete the oldest frames until at least ``need`` bytes are free."""
        freed = 0
        dropped = []
        for row_id, size in self._db.execute("SELECT id, nbytes FROM frames ORDER BY id"):
            dropped.append((row_id,))
            freed += size
            if freed >= need:
                break
        self._db.execute("BEGIN")
        self._db.executemany("DELETE FROM frames WHERE id = ?", dropped)
        self._db.execute("COMMIT")
        self._count -= len(dropped)
        self._bytes -= freed
        self.counters.dropped_full += len(dropped)

    def _forget(self, rows: list[tuple[int]]) -> None:
        self._count -= len(rows)
        self._bytes -= sum(r[0] for r in rows)


def _open(path: Path) -> tuple[sqlite3.Connection, int, int]:
    """The spool file in WAL mode with its schema, and the frames and bytes it already holds. A path that
    cannot hold one (a missing or read-only folder, a file that is not a database) is the user's to fix, so
    it is a one-line :class:`UsageError` rather than a traceback."""
    db = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable across a process crash
        db.executescript(_SCHEMA)
        count, total = db.execute("SELECT COUNT(*), COALESCE(SUM(nbytes), 0) FROM frames").fetchone()
        return db, count, total
    except (OSError, sqlite3.DatabaseError) as err:
        if db is not None:
            db.close()
        raise UsageError(f"cannot open the spool {path}: {err}",
                         "pass --spool a SQLite file (or a new file) in a writable folder") from None

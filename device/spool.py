"""Store-and-forward: a bounded on-disk queue of encoded frames (SQLite in WAL mode).

::

    capture ──put()──► [spool.sqlite]  ──take()──► publisher ──► broker ──► receiver: stored
                         ▲   bounded by bytes and age                               │
                         └──── confirm(boot, seq range) ◄── edgekit/v1/<id>/acks ◄──┘

A frame leaves the spool only when a receiver confirms it is stored (docs/device.md, Delivery), so a
broker crash, a dead receiver or an agent crash (even SIGKILL: WAL commits survive the process) loses
nothing within the bounds. When the spool is full (its byte bound, or the disk or file itself) the policy
decides: ``drop-oldest`` (default: the freshest data matters most) deletes the oldest frames,
``drop-newest`` refuses the new one. Frames older than ``max_age_s`` expire. Every loss is counted, and the
seq numbers lost are kept as ranges per boot (the ``drops`` table), which the heartbeat reports so the
server can tell a policy drop from a frame lost on the way. The heartbeat also reports, per boot, the seq
below which every frame has left the spool (:meth:`Spool.settled`), so the server can see a loss after the
last frame it stored. A full filesystem is one more bound, never a crash (device/spool_reserve.py). One
agent per spool: a lock file beside it.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, TypeVar

from edgekit.device.spool_reserve import (MIN_RESERVE_BYTES, RESERVE_BYTES, Reserve, SpoolDiskFull, filesystem_full,
                                          free_bytes)
from edgekit.errors import EdgekitError, UsageError
from edgekit.delivery.ranges import merge_range, to_ranges, union

__all__ = ["POLICIES", "SpoolRow", "SpoolCounters", "Spool"]

log = logging.getLogger(__name__)

POLICIES = ("drop-oldest", "drop-newest")
REPORTED_DROP_RANGES = 200  # the most recent drop ranges a heartbeat carries
REPORTED_BOOTS = 8  # the boots a heartbeat's settled marks cover (the newest); the spool remembers no more
ROOM_CHECK_S = 1.0  # on a full filesystem: how often to look for room again

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS frames (
    id INTEGER PRIMARY KEY AUTOINCREMENT,   -- never reused, so a stale ack cannot hit a new frame
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    nbytes INTEGER NOT NULL,
    created REAL NOT NULL,                  -- wall-clock seconds, so age survives a restart
    boot_id INTEGER,                        -- the frame's (boot_id, seq): what a receiver confirms;
    seq INTEGER                             -- NULL for other payloads, which leave on the broker's PUBACK
);
CREATE TABLE IF NOT EXISTS drops (          -- seq ranges lost by policy, per boot and reason, merged
    boot_id INTEGER NOT NULL,
    reason TEXT NOT NULL,
    first INTEGER NOT NULL,
    last INTEGER NOT NULL,
    PRIMARY KEY (boot_id, reason, first)
);
CREATE TABLE IF NOT EXISTS boots (          -- per boot, a seq no frame of it had reached yet: its frames
    boot_id INTEGER NOT NULL,               -- below that are settled once none is left in the spool
    topic TEXT NOT NULL,                    -- its frames' topic: the device it reports for
    next_seq INTEGER NOT NULL,
    PRIMARY KEY (boot_id, topic)
);
"""

# Per remembered boot of a topic, newest first: its smallest spooled seq (the frames_seq index: one lookup),
# else its next seq.
_SETTLED = """
SELECT boot_id, COALESCE((SELECT MIN(seq) FROM frames WHERE frames.boot_id = boots.boot_id), next_seq)
FROM boots WHERE topic = ? ORDER BY rowid DESC LIMIT ?
"""

# Boots still in a spool's frames (an agent that stopped, crashed or predates the ``boots`` table): every
# seq up to the highest spooled one was assigned, so max + 1 is a safe next seq to remember.
_BOOTS_FROM_FRAMES = """
INSERT INTO boots (boot_id, topic, next_seq)
SELECT boot_id, (SELECT topic FROM frames AS f WHERE f.boot_id = frames.boot_id LIMIT 1), MAX(seq) + 1
FROM frames WHERE seq IS NOT NULL GROUP BY boot_id
ON CONFLICT (boot_id, topic) DO UPDATE SET next_seq = MAX(next_seq, excluded.next_seq)
"""


@dataclass(frozen=True)
class SpoolRow:
    id: int
    topic: str
    payload: bytes
    boot_id: int | None = None
    seq: int | None = None


@dataclass
class SpoolCounters:
    """Frames lost by policy, since this process opened the spool."""

    dropped_full: int = 0  # over the byte bound, or the disk (or file) full
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
        self._lock_file = _lock_spool(self.path)
        self._reserve = Reserve(self.path)
        self._reserve.release()  # its room is the spool's to open with on a full filesystem
        self._db, self._count, self._bytes = _open(self.path)
        self._full_at: int | None = None  # spool bytes when the disk (or file) filled: one log line per episode
        self._cap: int | None = None  # on a full filesystem: the file's page limit before the spool capped it
        self._next_room_check = 0.0
        self._unrecorded: dict[tuple[int, str], list[tuple[int, int]]] = {}  # drop ranges not yet written
        if not self._reserve.restore() and filesystem_full(self.path):  # the reserve's room is for the WAL
            self._on_full()

    @property
    def depth(self) -> int:
        """Frames waiting (including those sent but not yet confirmed)."""
        return self._count

    @property
    def nbytes(self) -> int:
        return self._bytes

    @property
    def full(self) -> bool:
        """The disk (or the file) is full: the policy decides until there is room again."""
        return self._full_at is not None

    def put(self, topic: str, payload: bytes, now: float | None = None, *, boot_id: int | None = None,
            seq: int | None = None) -> int | None:
        """Append a frame; its row id, or None when the policy refused it (counted)."""
        now = time.time() if now is None else now
        size = len(payload)
        with self._lock:
            self._expire(now)
            if size > self.max_bytes:
                self.counters.refused_too_big += 1
                self._note_drops([(boot_id, seq)], "too-big")
                return None
            if self._full_at is not None:
                self._check_room()
            if self._bytes + size > self.max_bytes and (
                    self.policy == "drop-newest" or not self._drop_oldest(self._bytes + size - self.max_bytes)):
                self._refuse_newest(boot_id, seq)
                return None
            row_id = self._insert(topic, payload, now, boot_id, seq)
            return self._put_when_full(topic, payload, now, boot_id, seq) if row_id is None else row_id

    def take(self, after_id: int, limit: int) -> list[SpoolRow]:
        """Up to ``limit`` oldest frames with id > ``after_id`` (the publisher's high-water mark)."""
        with self._lock:
            rows = self._db.execute("SELECT id, topic, payload, boot_id, seq FROM frames WHERE id > ? ORDER BY id"
                                    " LIMIT ?", (after_id, limit)).fetchall()
        return [SpoolRow(i, t, bytes(p), b, s) for i, t, p, b, s in rows]

    def get(self, row_ids: list[int]) -> list[SpoolRow]:
        """The rows among ``row_ids`` still in the spool, oldest first (for a re-send)."""
        with self._lock:
            rows = self._db.execute(f"SELECT id, topic, payload, boot_id, seq FROM frames WHERE id IN "
                                    f"({','.join('?' * len(row_ids))}) ORDER BY id", row_ids).fetchall()
        return [SpoolRow(i, t, bytes(p), b, s) for i, t, p, b, s in rows]

    def ack(self, row_id: int) -> bool:
        """The frame is delivered: delete it. False if it was already gone (dropped or acked)."""
        return self._delete(row_id) is not None

    def confirm(self, boot_id: int, first: int, last: int) -> list[int]:
        """A receiver stored seq ``first..last`` of ``boot_id``: delete those frames; the row ids deleted."""
        with self._lock:
            rows = self._write(lambda: self._db.execute("DELETE FROM frames WHERE boot_id = ? AND seq BETWEEN ? AND ? "
                                                        "RETURNING id, nbytes", (boot_id, first, last)).fetchall())
            self._forget([(n,) for _, n in rows or []])  # None: the disk is full; the frames come again
        return [i for i, _ in rows or []]

    def discard(self, row_id: int, reason: str) -> bool:
        """Give up on a frame the broker will never take (too large, rejected), counting why."""
        with self._lock:
            row = self._write(lambda: self._db.execute("DELETE FROM frames WHERE id = ? RETURNING nbytes, boot_id, "
                                                       "seq", (row_id,)).fetchall())
            if not row:  # gone already, or the disk is full (it stays, unsent until the next start)
                return False
            row = row[0]
            self._forget([row[:1]])
            self._note_drops([row[1:]], reason)
        self.counters.reasons[reason] = self.counters.reasons.get(reason, 0) + 1
        return True

    def record_drop(self, boot_id: int, seq: int, reason: str) -> None:
        """A frame lost before it reached the spool (e.g. over the size limit), for the drop report."""
        with self._lock:
            self._note_drops([(boot_id, seq)], reason)

    def drop_ranges(self, limit: int = REPORTED_DROP_RANGES) -> list[list]:
        """The ``limit`` most recently merged drop ranges, newest first, ``[boot_id, first, last, reason]`` (for
        the heartbeat); drops not yet written (the disk was full) come first."""
        with self._lock:
            rows = self._db.execute("SELECT boot_id, first, last, reason FROM drops ORDER BY rowid DESC LIMIT ?",
                                    (limit,)).fetchall()
            pending = [[b, first, last, r] for (b, r), ranges in reversed(self._unrecorded.items())
                       for first, last in reversed(ranges)]
        return (pending + [list(r) for r in rows])[:limit]

    def settled(self, topic: str, boot_id: int, next_seq: int) -> list[list[int]]:
        """``[boot_id, settled_below]`` for the current boot (``next_seq``: the seq it assigns next) and the
        other recent boots of ``topic``, newest first: every frame of the boot below ``settled_below`` has
        left the spool (confirmed by a receiver, or dropped and in :meth:`drop_ranges`). That is the
        boot's smallest spooled seq, or its next seq when none is left. The current boot's next seq is
        remembered first, so an agent started later reports how this boot ended. One index lookup per boot."""
        with self._lock:
            try:
                self._db.execute("INSERT INTO boots (boot_id, topic, next_seq) VALUES (?, ?, ?) ON CONFLICT "
                                 "(boot_id, topic) DO UPDATE SET next_seq = MAX(next_seq, excluded.next_seq)",
                                 (boot_id, topic, next_seq))
                self._db.execute("DELETE FROM boots WHERE rowid NOT IN (SELECT rowid FROM boots ORDER BY rowid DESC "
                                 "LIMIT ?)", (REPORTED_BOOTS,))
            except sqlite3.OperationalError as err:  # a full disk: report what is already remembered
                if not _disk_full(err):
                    raise
            rows = self._db.execute(_SETTLED, (topic, REPORTED_BOOTS)).fetchall()
        return [list(r) for r in rows]

    def expire(self, now: float | None = None) -> int:
        """Delete frames older than ``max_age_s``; how many. On a full disk, also look for room again (the
        publisher calls this every second, also when no frame is captured)."""
        with self._lock:
            if self._full_at is not None:
                self._check_room()
            return self._expire(time.time() if now is None else now)

    def close(self) -> None:
        """Close the file; on a full filesystem, keep what room its WAL leaves as a reserve to start with."""
        with self._lock:
            self._note_drops([], "full")  # drops that waited in memory, if they fit now
            self._db.close()
            self._reserve.restore(at_least=MIN_RESERVE_BYTES)
            self._lock_file.close()

    # ---- internals (lock held) --------------------------------------------------------------------------
    def _write(self, work: Callable[[], T]) -> T | None:
        """``work()`` (statements returning a value that is not None) in one transaction. On a full disk: roll
        back, make room (:meth:`_on_full`) and try once more; None when it still does not fit."""
        for attempt in range(2):
            try:
                self._db.execute("BEGIN")
                result = work()
                self._db.execute("COMMIT")
                return result
            except sqlite3.OperationalError as err:
                if self._db.in_transaction:  # a failed COMMIT may or may not have rolled back already
                    self._db.execute("ROLLBACK")
                if not _disk_full(err):
                    raise
                if attempt == 0:
                    self._on_full()
        return None

    def _on_full(self) -> None:
        """SQLite reported the disk (or the file's page limit) full: log it once per episode. The first time on
        a full filesystem, release the reserve, checkpoint into its room and cap the file
        (device/spool_reserve.py); once capped, SQLite's own limit answers "full" before the disk would."""
        if self._full_at is None:
            self._full_at = self._bytes
            action = "refusing new frames" if self.policy == "drop-newest" else "dropping the oldest frames"
            log.error("spool %s: database or disk is full; %s (--spool-policy %s) until space returns",
                      self.path, action, self.policy)
        if self._cap is not None or not filesystem_full(self.path):
            return  # capped already, or the file's own page limit: nothing to release
        self._reserve.release()
        self._checkpoint()
        self._cap = self._db.execute("PRAGMA max_page_count").fetchone()[0]
        self._db.execute("PRAGMA max_page_count = 1")  # never below the pages in use: the file's size
        self._next_room_check = time.monotonic() + ROOM_CHECK_S

    def _checkpoint(self) -> None:
        """Copy the WAL into the database file, so that the WAL starts over within its own length. Best effort:
        one that cannot run now (no room to extend the file) runs again at the next room check."""
        try:
            self._db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        except sqlite3.OperationalError:
            log.debug("spool %s: checkpoint failed on a full disk", self.path, exc_info=True)

    def _check_room(self) -> None:
        """A full episode ends when there is room again: on a full filesystem once the reserve is held again
        (checked every :data:`ROOM_CHECK_S`; the cap is lifted), at a file's page limit once the spool grew
        past where it filled. The drops that waited in memory are written then."""
        if self._cap is not None:
            if time.monotonic() < self._next_room_check:
                return
            self._next_room_check = time.monotonic() + ROOM_CHECK_S
            self._checkpoint()  # SQLite checkpoints only after a commit: a WAL the disk stopped needs this one
            if free_bytes(self.path) < 2 * RESERVE_BYTES or not self._reserve.restore():
                return  # room for the reserve and as much again, or the next frames would fill it at once
            self._db.execute(f"PRAGMA max_page_count = {self._cap}")
            self._cap = None
        elif self._bytes <= self._full_at:
            return
        self._full_at = None
        log.warning("spool %s has room again", self.path)
        self._note_drops([], "full")

    def _insert(self, topic: str, payload: bytes, now: float, boot_id: int | None, seq: int | None) -> int | None:
        """The new frame's row id; None when the disk is full."""
        row_id = self._write(lambda: self._db.execute(
            "INSERT INTO frames (topic, payload, nbytes, created, boot_id, seq) VALUES (?, ?, ?, ?, ?, ?)",
            (topic, payload, len(payload), now, boot_id, seq)).lastrowid)
        if row_id is not None:
            self._count += 1
            self._bytes += len(payload)
        return row_id

    def _put_when_full(self, topic: str, payload: bytes, now: float, boot_id: int | None,
                       seq: int | None) -> int | None:
        """The disk (or the file's page limit) is full: apply the policy instead of failing the capture. When
        not even the oldest frames can be deleted, the new one is dropped (and counted) too."""
        while self.policy == "drop-oldest" and self._count:
            if not self._drop_oldest(max(len(payload), 64 * 1024)):  # whole pages must empty for SQLite to reuse
                break
            row_id = self._insert(topic, payload, now, boot_id, seq)
            if row_id is not None:
                return row_id
        self._refuse_newest(boot_id, seq)
        return None

    def _refuse_newest(self, boot_id: int | None, seq: int | None) -> None:
        self.counters.dropped_full += 1
        self._note_drops([(boot_id, seq)], "full")

    def _delete(self, row_id: int) -> int | None:
        with self._lock:
            rows = self._write(lambda: self._db.execute("DELETE FROM frames WHERE id = ? RETURNING nbytes",
                                                        (row_id,)).fetchall())
            if not rows:  # gone already, or the disk is full (it is sent again, and deleted then)
                return None
            self._forget(rows)
            return rows[0][0]

    def _expire(self, now: float) -> int:
        rows = self._write(lambda: self._db.execute("DELETE FROM frames WHERE created < ? RETURNING nbytes, boot_id, "
                                                    "seq", (now - self.max_age_s,)).fetchall()) or []
        self._forget([r[:1] for r in rows])
        self._note_drops([r[1:] for r in rows], "age")
        self.counters.dropped_age += len(rows)
        return len(rows)

    def _drop_oldest(self, need: int) -> bool:
        """Delete the oldest frames until at least ``need`` bytes are free; False when there is none, or the disk
        is too full to delete anything."""
        freed = 0
        dropped = []
        for row_id, size, boot_id, seq in self._db.execute("SELECT id, nbytes, boot_id, seq FROM frames ORDER BY id"):
            dropped.append((row_id, boot_id, seq))
            freed += size
            if freed >= need:
                break
        ids = [(r[0],) for r in dropped]
        if not ids or self._write(lambda: self._db.executemany("DELETE FROM frames WHERE id = ?", ids)) is None:
            return False
        self._count -= len(dropped)
        self._bytes -= freed
        self.counters.dropped_full += len(dropped)
        self._note_drops([r[1:] for r in dropped], "full")
        return True

    def _note_drops(self, frames: list[tuple[int | None, int | None]], reason: str) -> None:
        """Merge the dropped frames' seq numbers into the ``drops`` ranges. On a full disk they wait in
        memory as merged ranges (still reported) and are written with the next drop, or when room returns."""
        by_key: dict[tuple[int, str], list[int]] = {}
        for boot_id, seq in frames:
            if boot_id is not None and seq is not None:
                by_key.setdefault((boot_id, reason), []).append(seq)
        for key, seqs in by_key.items():
            self._unrecorded[key] = union([*self._unrecorded.get(key, []), *to_ranges(seqs)])
        if self._unrecorded and self._write(self._write_unrecorded) is not None:
            self._unrecorded = {}

    def _write_unrecorded(self) -> bool:
        for (boot_id, why), ranges in self._unrecorded.items():
            for first, last in ranges:
                merge_range(self._db, "drops", {"boot_id": boot_id, "reason": why}, first, last)
        return True

    def _forget(self, rows: list[tuple[int]]) -> None:
        self._count -= len(rows)
        self._bytes -= sum(r[0] for r in rows)


def _disk_full(err: sqlite3.OperationalError) -> bool:
    """SQLITE_FULL: the disk, or the file's ``max_page_count``, has no room."""
    return "full" in str(err)


def _remember_spooled_boots(db: sqlite3.Connection) -> None:
    """Record the boots in the spool's frames (:data:`_BOOTS_FROM_FRAMES`); a full disk must not stop an
    agent from starting and draining, so then they are reported from what was remembered before."""
    try:
        db.execute(_BOOTS_FROM_FRAMES)
    except sqlite3.OperationalError as err:
        if not _disk_full(err):
            raise


def _lock_spool(path: Path):
    """Hold an exclusive lock on ``<spool>.lock`` for this process's lifetime: two agents draining one spool
    would send every frame twice and fight over its rows."""
    import fcntl

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(path.with_name(path.name + ".lock"), "a")
    except OSError as err:
        raise _cannot_open(path, err) from None
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        raise UsageError(f"another agent is already running with the spool {path}",
                         "stop it first, or give this agent its own --device-id and --spool") from None
    return handle


def _open(path: Path) -> tuple[sqlite3.Connection, int, int]:
    """The spool file in WAL mode with its schema, and the frames and bytes it already holds. A path that
    cannot hold one (a missing or read-only folder, a file that is not a database, a full filesystem) is a
    one-line error (:func:`_cannot_open`) rather than a traceback."""
    db = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable across a process crash
        page_size = db.execute("PRAGMA page_size").fetchone()[0]
        db.execute(f"PRAGMA wal_autocheckpoint = {RESERVE_BYTES // 2 // page_size}")  # the reserve covers a WAL
        db.executescript(_SCHEMA)
        columns = {row[1] for row in db.execute("PRAGMA table_info(frames)")}
        for column in ("boot_id", "seq"):  # a spool written before receiver-confirmed delivery
            if column not in columns:
                db.execute(f"ALTER TABLE frames ADD COLUMN {column} INTEGER")
        db.execute("CREATE INDEX IF NOT EXISTS frames_seq ON frames (boot_id, seq)")  # confirm(), settled()
        _remember_spooled_boots(db)
        count, total = db.execute("SELECT COUNT(*), COALESCE(SUM(nbytes), 0) FROM frames").fetchone()
        return db, count, total
    except (OSError, sqlite3.DatabaseError) as err:
        if db is not None:
            db.close()
        raise _cannot_open(path, err) from None


def _cannot_open(path: Path, err: Exception) -> EdgekitError:
    """The one-line error for a spool that cannot be opened: a full filesystem is waited out (exit 75, restarted
    by systemd), any other cause is the user's path to fix."""
    if filesystem_full(path):
        return SpoolDiskFull(f"cannot open the spool {path}: its filesystem is full ({err})",
                             f"free some space on the filesystem of {path.parent}; the agent then starts and "
                             "sends what the spool holds")
    return UsageError(f"cannot open the spool {path}: {err}",
                      "pass --spool a SQLite file (or a new file) in a writable folder")

"""The similarity task's memory: the first text of a pair waits here for its partner, and each pair's cosine.

A pair is two frames of one device boot, ``seq = 2k`` and ``2k + 1`` (device/text_source.py), and the two may
reach the receiver in any order, in different batches, or across a receiver restart: the first one's decoded
embedding is kept in ``text_halves`` until the second arrives, then the cosine goes to ``text_pairs`` and the
half is deleted. Both live in the results database beside ``results``. Every write is idempotent (a
re-delivered frame computes and writes the same row again), so these writes need no share of the results'
transaction: a crash between the two leaves nothing a re-delivery would not repair.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np

__all__ = ["PairStore"]

# Plain SQL that SQLite and PostgreSQL both take (the results database's back ends, server/store.py).
_SCHEMA = ("""CREATE TABLE IF NOT EXISTS text_halves (  -- the first-arrived text of an open pair
    device TEXT NOT NULL,
    boot_id BIGINT NOT NULL,
    seq BIGINT NOT NULL,
    embedding TEXT NOT NULL,     -- its decoded embedding: float32 little-endian, hex
    PRIMARY KEY (device, boot_id, seq)
)""", """CREATE TABLE IF NOT EXISTS text_pairs (   -- one row per completed pair: pair = seq // 2 (= the line, from 0)
    device TEXT NOT NULL,
    boot_id BIGINT NOT NULL,
    pair BIGINT NOT NULL,
    bundle_id TEXT NOT NULL,
    cosine DOUBLE PRECISION NOT NULL,
    done_ns BIGINT NOT NULL,
    PRIMARY KEY (device, boot_id, pair)
)""")


class PairStore:
    """Open halves and completed pairs in the results database, used from the receiver's worker thread."""

    def __init__(self, db: str | Path):
        from edgekit.server.store import open_database

        self._lock = threading.Lock()
        self._database = open_database(db)
        with self._database.transaction():
            for statement in _SCHEMA:
                self._database.conn.execute(statement)

    def cosine(self, device: str, boot_id: int, pair: int) -> float | None:
        """The stored cosine of a completed pair, None while it is open."""
        row = self._one("SELECT cosine FROM text_pairs WHERE device = ? AND boot_id = ? AND pair = ?",
                        device, boot_id, pair)
        return None if row is None else row[0]

    def half(self, device: str, boot_id: int, seq: int) -> np.ndarray | None:
        """The waiting embedding of frame ``seq``, None when it has not arrived (or its pair is complete)."""
        row = self._one("SELECT embedding FROM text_halves WHERE device = ? AND boot_id = ? AND seq = ?",
                        device, boot_id, seq)
        return None if row is None else np.frombuffer(bytes.fromhex(row[0]), "<f4")

    def wait(self, device: str, boot_id: int, seq: int, embedding: np.ndarray) -> None:
        """Keep the embedding of the first text of a pair until its partner arrives."""
        with self._lock, self._database.transaction():
            self._database.conn.execute(
                "INSERT INTO text_halves (device, boot_id, seq, embedding) VALUES (?, ?, ?, ?) ON CONFLICT "
                "(device, boot_id, seq) DO UPDATE SET embedding = excluded.embedding",
                (device, boot_id, seq, np.ascontiguousarray(embedding, "<f4").tobytes().hex()))

    def complete(self, device: str, boot_id: int, pair: int, bundle_id: str, cosine: float) -> None:
        """Record a pair's cosine and forget both halves, in one transaction."""
        with self._lock, self._database.transaction():
            self._database.conn.execute(
                "INSERT INTO text_pairs (device, boot_id, pair, bundle_id, cosine, done_ns) VALUES (?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (device, boot_id, pair) DO UPDATE SET cosine = excluded.cosine",
                (device, boot_id, pair, bundle_id, cosine, time.time_ns()))
            self._database.conn.execute("DELETE FROM text_halves WHERE device = ? AND boot_id = ? AND seq IN (?, ?)",
                                        (device, boot_id, 2 * pair, 2 * pair + 1))

    def _one(self, sql: str, *args) -> tuple | None:
        with self._lock:
            return self._database.conn.execute(sql, args).fetchone()

    def close(self) -> None:
        with self._lock:
            self._database.close()

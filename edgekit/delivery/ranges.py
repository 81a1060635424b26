"""Inclusive integer ranges of frame seq numbers, in memory and in SQLite tables, always merged.

The device's spool records what it dropped by policy and the receiver's store records what it stored as
ranges, not one row per frame: a steady stream of 1,000,000 frames is one row. Standard library only (the
device imports it).
"""

from __future__ import annotations

import sqlite3
from typing import Iterable

__all__ = ["to_ranges", "union", "subtract", "size", "merge_range"]

Range = tuple[int, int]

#: SQLite's largest INTEGER (signed 64-bit), the largest seq a frame may carry: a range ending there has no
#: neighbour above it, and ``last + 1`` would not fit a query parameter.
_SQLITE_MAX = 2**63 - 1


def to_ranges(values: Iterable[int]) -> list[Range]:
    """Sorted, merged ``(first, last)`` ranges covering ``values``."""
    out: list[list[int]] = []
    for v in sorted(set(values)):
        if out and v == out[-1][1] + 1:
            out[-1][1] = v
        else:
            out.append([v, v])
    return [(a, b) for a, b in out]


def union(ranges: Iterable[Range]) -> list[Range]:
    """Sorted, merged ranges covering every given (possibly overlapping) range."""
    out: list[list[int]] = []
    for first, last in sorted(ranges):
        if out and first <= out[-1][1] + 1:
            out[-1][1] = max(out[-1][1], last)
        else:
            out.append([first, last])
    return [(a, b) for a, b in out]


def subtract(ranges: Iterable[Range], minus: Iterable[Range]) -> list[Range]:
    """``ranges`` without the values in ``minus`` (both sorted and merged)."""
    minus = list(minus)
    out = []
    for first, last in ranges:
        pieces = [(first, last)]
        for m_first, m_last in minus:
            next_pieces = []
            for a, b in pieces:
                if m_last < a or m_first > b:
                    next_pieces.append((a, b))
                    continue
                if a < m_first:
                    next_pieces.append((a, m_first - 1))
                if m_last < b:
                    next_pieces.append((m_last + 1, b))
            pieces = next_pieces
        out.extend(pieces)
    return out


def size(ranges: Iterable[Range]) -> int:
    return sum(b - a + 1 for a, b in ranges)


def merge_range(db: sqlite3.Connection, table: str, key: dict[str, object], first: int, last: int) -> None:
    """Add ``first..last`` to the ranges of ``key`` in ``table`` (columns: the key's, ``first``, ``last``),
    merging it with every range it overlaps or touches. Runs in the caller's transaction."""
    where = " AND ".join(f"{col} = ?" for col in key)
    args = list(key.values())
    neighbours = (first - 1, min(last + 1, _SQLITE_MAX))
    touching = db.execute(f"SELECT first, last FROM {table} WHERE {where} AND last >= ? AND first <= ?",
                          (*args, *neighbours)).fetchall()
    if touching:
        db.execute(f"DELETE FROM {table} WHERE {where} AND last >= ? AND first <= ?", (*args, *neighbours))
        first = min(first, *(a for a, _ in touching))
        last = max(last, *(b for _, b in touching))
    cols = ", ".join([*key, "first", "last"])
    db.execute(f"INSERT INTO {table} ({cols}) VALUES ({', '.join('?' * (len(key) + 2))})", (*args, first, last))

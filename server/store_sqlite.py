"""The results store's SQLite back end: one file, WAL mode, shared by threads, processes and receivers.

What differs from PostgreSQL lives here (edgekit.server.store_postgres is the other back end): how the file
is opened, how a write transaction takes the database (``BEGIN IMMEDIATE``: one writer at a time, the others
wait up to the busy timeout), which errors mean "the database, not the data" and how to say so in one line.
The SQL itself is shared and written in edgekit.server.store.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from edgekit.errors import UsageError

__all__ = ["SqliteDatabase"]


class SqliteDatabase:
    """One results file; ``conn`` is the :class:`sqlite3.Connection` itself (``?`` placeholders)."""

    errors = (sqlite3.Error,)  # any error of the database
    outage_errors = (sqlite3.OperationalError,)  # full, locked, read-only, I/O: wait and retry, never crash
    id_column = "INTEGER PRIMARY KEY AUTOINCREMENT"  # an auto-numbered row id, never reused

    def __init__(self, path: str | Path, read_only: bool = False):
        self.path = Path(path)
        self.name = str(self.path)
        self.conn = _open_read_only(self.path) if read_only else _open(self.path)

    def transaction(self) -> "_Transaction":
        return _Transaction(self.conn)

    def tables(self) -> set[str]:
        return {name for (name,) in self.conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}

    def describe(self, err: Exception) -> tuple[str, str]:
        """``(cause, fix)`` for an error that is the database's fault, not a frame's."""
        text = str(err).lower()
        if "full" in text:
            return (f"the results database {self.name} is full ({err})",
                    "free space on its disk (or raise the database's size limit); storing resumes by itself")
        if "locked" in text or "busy" in text:
            return (f"the results database {self.name} is locked by another process ({err})",
                    "end the other process's write transaction (e.g. an open sqlite3 shell)")
        if "readonly" in text or "read-only" in text:
            return (f"the results database {self.name} is read-only ({err})",
                    "make the file, its -wal/-shm files and its folder writable by this user")
        return f"cannot write the results database {self.name} ({err})", "check its disk and file system"

    def close(self) -> None:
        self.conn.close()


class _Transaction:
    """``BEGIN IMMEDIATE`` … ``COMMIT``; when the block or the COMMIT raises, ``ROLLBACK`` unless SQLite already
    ended the transaction itself (it does after SQLITE_FULL and some I/O errors, and a ROLLBACK then fails with
    "no transaction is active", hiding the real error)."""

    def __init__(self, db: sqlite3.Connection):
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if not exc_type:
                self.db.execute("COMMIT")
        finally:
            if self.db.in_transaction:
                self.db.execute("ROLLBACK")


def _open(path: Path) -> sqlite3.Connection:
    """The results file in WAL mode (the schema is the store's); a path that cannot hold one (a missing or
    read-only folder, a file that is not a database) is the user's to fix, so it is a one-line
    :class:`UsageError`."""
    db = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30.0)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        return db
    except (OSError, sqlite3.DatabaseError) as err:
        if db is not None:
            db.close()
        raise UsageError(f"cannot open the results database {path}: {err}",
                         "pass --db a SQLite file (or a new file) in a writable folder, or a postgresql:// URL"
                         ) from None


def _open_read_only(path: Path) -> sqlite3.Connection:
    """An existing results file, read-only (``edgekit server stats`` works on a copy, or while receivers run)."""
    if not path.is_file():
        raise UsageError(f"no results database at {path}", "pass the --db file given to edgekit server run")
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30.0)

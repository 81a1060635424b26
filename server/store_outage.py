"""When the results database cannot be written: wait it out, never crash, never lose a frame.

::

    worker ─► write() ─► ok ─────────────────────────────────────────────► ack the frames
                 │ sqlite3.OperationalError (disk full, locked, read-only, I/O)
                 ▼
         one warning line (cause + fix) ─► back off 0.2 s … 5 s ─► write() again ─► ok ─► one "resumed" line

While the worker waits, it takes no new batch and acknowledges nothing: the frames stay unacknowledged at
the broker, which stops sending once ``Receive Maximum`` of them are in flight, so memory stays bounded and
every frame is stored once space returns (or redelivered after a restart, if the receiver stops first).
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from pathlib import Path
from typing import Callable, TypeVar

__all__ = ["StoreUnavailable", "describe", "StoreOutage"]

log = logging.getLogger(__name__)

T = TypeVar("T")


class StoreUnavailable(Exception):
    """The receiver is stopping while the database still refuses writes (the frames stay unacknowledged)."""


def describe(err: sqlite3.Error, db: Path) -> tuple[str, str]:
    """``(cause, fix)`` for a SQLite error that is the database's fault, not a frame's."""
    text = str(err).lower()
    if "full" in text:
        return (f"the results database {db} is full ({err})",
                "free space on its disk (or raise the database's size limit); storing resumes by itself")
    if "locked" in text or "busy" in text:
        return (f"the results database {db} is locked by another process ({err})",
                "end the other process's write transaction (e.g. an open sqlite3 shell)")
    if "readonly" in text or "read-only" in text:
        return (f"the results database {db} is read-only ({err})",
                "make the file, its -wal/-shm files and its folder writable by this user")
    return f"cannot write the results database {db} ({err})", "check its disk and file system"


class StoreOutage:
    """Runs store writes for one thread, retrying through an outage with exponential backoff."""

    def __init__(self, db: Path, stop: threading.Event, first_s: float = 0.2, cap_s: float = 5.0):
        self.db = db
        self.stop = stop
        self.first_s, self.cap_s = first_s, cap_s
        self.outages = 0  # outages so far (each logged once)
        self.since: float | None = None  # monotonic start of the current outage, None while writes succeed

    def run(self, write: Callable[[], T]) -> T:
        """``write()``, retried until it succeeds; :class:`StoreUnavailable` if the receiver stops first."""
        delay = self.first_s
        while True:
            try:
                value = write()
            except sqlite3.OperationalError as err:
                self._failed(err)
            else:
                self._succeeded()
                return value
            if self.stop.wait(delay):
                raise StoreUnavailable(f"stopping while the results database {self.db} refuses writes: the frames "
                                       "not yet stored stay unacknowledged and come back after a restart")
            delay = min(delay * 2, self.cap_s)

    def _failed(self, err: sqlite3.OperationalError) -> None:
        if self.since is not None:
            return
        self.since = time.monotonic()
        self.outages += 1
        cause, fix = describe(err, self.db)
        log.warning("%s: not acknowledging frames, retrying with backoff — %s", cause, fix,
                    extra={"event": "store-outage", "cause": cause})

    def _succeeded(self) -> None:
        if self.since is None:
            return
        log.warning("results database %s writable again after %.1f s: storing and acknowledging resumed", self.db,
                    time.monotonic() - self.since, extra={"event": "store-resumed"})
        self.since = None


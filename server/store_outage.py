"""When the results database cannot be written: wait it out, never crash, never lose a frame.

::

    worker ─► write() ─► ok ─────────────────────────────────────────────► ack the frames
                 │ one of the store's outage_errors (SQLite: disk full, locked, read-only, I/O;
                 │ PostgreSQL: also the server gone away: restarted, failed over, unreachable)
                 ▼
         one warning line (cause + fix) ─► back off 0.2 s … 5 s ─► write() again ─► ok ─► one "resumed" line

While the worker waits, it takes no new batch and acknowledges nothing: the frames stay unacknowledged at
the broker, which stops sending once ``Receive Maximum`` of them are in flight, so memory stays bounded and
every frame is stored once the database takes writes again (or redelivered after a restart, if the receiver
stops first). A PostgreSQL store reconnects by itself on the next write.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable, TypeVar

__all__ = ["StoreUnavailable", "StoreOutage"]

log = logging.getLogger(__name__)

T = TypeVar("T")


class StoreUnavailable(Exception):
    """The receiver is stopping while the database still refuses writes (the frames stay unacknowledged)."""


class StoreOutage:
    """Runs store writes for one thread, retrying through an outage with exponential backoff."""

    def __init__(self, store, stop: threading.Event, first_s: float = 0.2, cap_s: float = 5.0):
        self.store = store  # a ResultStore: its outage_errors, describe() and name
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
            except self.store.outage_errors as err:
                self._failed(err)
            else:
                self._succeeded()
                return value
            if self.stop.wait(delay):
                raise StoreUnavailable(f"stopping while the results database {self.store.name} refuses writes: the frames "
                                       "not yet stored stay unacknowledged and come back after a restart")
            delay = min(delay * 2, self.cap_s)

    def _failed(self, err: Exception) -> None:
        if self.since is not None:
            return
        self.since = time.monotonic()
        self.outages += 1
        cause, fix = self.store.describe(err)
        log.warning("%s: not acknowledging frames, retrying with backoff — %s", cause, fix,
                    extra={"event": "store-outage", "cause": cause})

    def _succeeded(self) -> None:
        if self.since is None:
            return
        log.warning("results database %s writable again after %.1f s: storing and acknowledging resumed", self.store.name,
                    time.monotonic() - self.since, extra={"event": "store-resumed"})
        self.since = None


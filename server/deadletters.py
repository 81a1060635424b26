"""Dead letters off the frame path: count every one, keep a bounded sample, write in batches.

::

    link thread ─► offer(letter) ─► count (device, reason) ─► sampled? ─ no ──► done (acked by the caller)
                                      (always)                  │ yes: per-device token bucket
                                                                ▼
                          queue ─► sink thread, every flush_s: one transaction = samples + totals + retention

A flood of junk (a misconfigured publisher, an attack) used to cost one SQLite write, one publish and one
log line per message on the link thread, so real frames queued behind it for seconds. Now the link thread
only counts; at most ``rate`` samples per second per device (plus a ``burst``) are stored and published to
``edgekit/v1/<id>/deadletter``, by the caller and by the sink thread respectively, and the ``deadletters``
table keeps what :class:`edgekit.server.store.Retention` allows. The totals reach ``deadletter_totals``.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass

from edgekit.server.store import DeadLetter, ResultStore, Retention

__all__ = ["SampleRate", "DeadLetterSink"]

log = logging.getLogger(__name__)

MAX_TRACKED_DEVICES = 4096  # token buckets kept; beyond that they are forgotten (junk may invent device ids)
MAX_QUEUED_SAMPLES = 10_000  # samples waiting for the sink thread; beyond that they are counted, not kept


@dataclass(frozen=True)
class SampleRate:
    """At most ``per_s`` dead-letter samples per second per device, after a first ``burst``."""

    per_s: float = 1.0
    burst: int = 20


class _Buckets:
    """Per-device token buckets; not thread-safe (the sink's lock guards them)."""

    def __init__(self, rate: SampleRate):
        self.rate = rate
        self._tokens: dict[str, tuple[float, float]] = {}  # device -> (tokens, at monotonic time)

    def take(self, device: str, now: float) -> bool:
        tokens, at = self._tokens.get(device, (float(self.rate.burst), now))
        tokens = min(float(self.rate.burst), tokens + (now - at) * self.rate.per_s)
        if len(self._tokens) >= MAX_TRACKED_DEVICES and device not in self._tokens:
            self._tokens.clear()
        if tokens < 1.0:
            self._tokens[device] = (tokens, now)
            return False
        self._tokens[device] = (tokens - 1.0, now)
        return True


class DeadLetterSink:
    """Counts dead letters from any thread and stores a rate-limited sample of them from its own thread."""

    def __init__(self, store: ResultStore, rate: SampleRate = SampleRate(), retention: Retention = Retention(),
                 flush_s: float = 0.5):
        self.store = store
        self.retention = retention
        self.flush_s = flush_s
        self.not_sampled = 0  # dead letters counted but not kept as samples (rate limit or full queue)
        self._buckets = _Buckets(rate)
        self._lock = threading.Lock()
        self._totals: dict[tuple[str, str], int] = {}  # (device, reason) -> not yet written
        self._samples: queue.SimpleQueue[DeadLetter] = queue.SimpleQueue()
        self._failing = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="deadletter-sink", daemon=True)

    def start(self) -> "DeadLetterSink":
        self._thread.start()
        return self

    def stop(self) -> None:
        """Write what is pending, then stop the thread."""
        self._stop.set()
        self._thread.join(10)

    def offer(self, letter: DeadLetter) -> bool:
        """Count ``letter``; True when it is also sampled (stored, and worth publishing). Any thread, no I/O."""
        key = (letter.device or "unknown", letter.reason)
        with self._lock:
            self._totals[key] = self._totals.get(key, 0) + 1
            sampled = self._samples.qsize() < MAX_QUEUED_SAMPLES and self._buckets.take(key[0], time.monotonic())
            if not sampled:
                self.not_sampled += 1
        if sampled:
            self._samples.put(letter)
        return sampled

    def _run(self) -> None:
        while not self._stop.wait(self.flush_s):
            self.flush()
        self.flush()

    def flush(self) -> None:
        """Write the pending samples and totals in one transaction. On a database error the samples are
        dropped (they are only examples) and the totals kept for the next flush; one line per outage."""
        with self._lock:
            totals, self._totals = self._totals, {}
        samples = _drain(self._samples)
        if not totals and not samples:
            return
        try:
            self.store.dead_letters(samples, totals, self.retention)
        except self.store.errors as err:
            self._merge_back(totals)
            if not self._failing:
                cause, fix = self.store.describe(err)
                log.warning("dead letters not stored (still counted): %s — %s", cause, fix)
            self._failing = True
            return
        self._failing = False

    def _merge_back(self, totals: dict[tuple[str, str], int]) -> None:
        with self._lock:
            for key, n in totals.items():
                self._totals[key] = self._totals.get(key, 0) + n


def _drain(q: queue.SimpleQueue) -> list:
    items = []
    while True:
        try:
            items.append(q.get_nowait())
        except queue.Empty:
            return items

"""Micro-batching across devices: trade at most ``max_wait_s`` of latency for batched inference.

The first item of a batch starts a clock; the batch closes when it holds ``max_batch`` items or the clock
reaches ``max_wait_s``, whichever comes first. Under light load a frame waits at most ``max_wait_s``; under
heavy load batches fill at once and the wait vanishes.
"""

from __future__ import annotations

import queue
import time
from typing import Generic, TypeVar

__all__ = ["Batcher"]

T = TypeVar("T")


class Batcher(Generic[T]):
    """A thread-safe queue that hands out items in batches."""

    def __init__(self, max_batch: int = 32, max_wait_s: float = 0.005):
        if max_batch < 1 or max_wait_s < 0:
            raise ValueError("max_batch must be >= 1 and max_wait_s >= 0")
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self._queue: queue.SimpleQueue[T] = queue.SimpleQueue()

    def put(self, item: T) -> None:
        self._queue.put(item)

    def qsize(self) -> int:
        return self._queue.qsize()

    def next_batch(self, timeout: float | None = None, fill: bool = True) -> list[T]:
        """Block up to ``timeout`` for a first item (empty list if none), then fill the batch: for up to
        ``max_wait_s`` if ``fill``, else with the items already queued (the receiver's worker, while the model
        is busy with the previous batch: waiting would only delay storing that one)."""
        try:
            batch = [self._queue.get(timeout=timeout)]
        except queue.Empty:
            return []
        deadline = time.monotonic() + (self.max_wait_s if fill else 0.0)
        while len(batch) < self.max_batch:
            remaining = deadline - time.monotonic()
            try:
                batch.append(self._queue.get_nowait() if remaining <= 0 else self._queue.get(timeout=remaining))
            except queue.Empty:
                break
        return batch

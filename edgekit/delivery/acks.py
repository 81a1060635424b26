"""Receiver-confirmed delivery: the ack message a receiver sends a device once its frames are stored.

Topic ``edgekit/v1/<device-id>/acks`` (QoS 1), payload a JSON object::

    {"boot_id": 2864434397, "ranges": [[0, 41], [43, 50]]}

``ranges`` are inclusive seq ranges of that boot, each frame stored (a new row or an idempotent duplicate)
and committed before the ack is published. The receiver batches them (:class:`AckBatcher`: every
``every_s`` or ``max_frames`` frames, whichever first); the device deletes those frames from its spool.
Standard library only: the device imports this module.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Callable

from edgekit.delivery.ranges import to_ranges

__all__ = ["encode_ack", "parse_ack", "valid_range", "AckBatcher"]

MAX_RANGES = 4096  # more than any batch needs; bounds what a hostile ack can make a device do
MAX_BOOT_ID = 2**32 - 1  # boot ids are 32-bit, seqs fit SQLite's signed 64-bit integers
MAX_SEQ = 2**63 - 1


def valid_range(boot_id, first, last) -> bool:
    """A frame seq range a device or receiver may have produced (integers, in bounds, ordered)."""
    return all(type(v) is int for v in (boot_id, first, last)) and 0 <= boot_id <= MAX_BOOT_ID \
        and 0 <= first <= last <= MAX_SEQ


def encode_ack(boot_id: int, ranges: list[tuple[int, int]], seal: Callable[[dict], dict] | None = None) -> bytes:
    """The ack's JSON; ``seal`` may add fields first (the receiver's ``mac`` for a device with a frame key)."""
    message = {"boot_id": boot_id, "ranges": [list(r) for r in ranges]}
    return json.dumps(seal(message) if seal else message, separators=(",", ":")).encode()


def parse_ack(payload: bytes) -> tuple[int, list[tuple[int, int]]] | None:
    """``(boot_id, ranges)`` of a well-formed ack, else None (the caller counts and ignores it)."""
    try:
        ack = json.loads(payload)
        boot_id, ranges = ack["boot_id"], ack["ranges"]
        if not valid_range(boot_id, 0, 0) or not isinstance(ranges, list) or len(ranges) > MAX_RANGES:
            return None
        out = []
        for first, last in ranges:
            if not valid_range(boot_id, first, last):
                return None
            out.append((first, last))
        return boot_id, out
    except (ValueError, TypeError, KeyError, RecursionError):  # RecursionError: JSON nested too deep
        return None


class AckBatcher:
    """Collects stored frames from the worker thread; the link thread takes the ack messages when due."""

    def __init__(self, every_s: float = 0.05, max_frames: int = 256):
        self.every_s = every_s
        self.max_frames = max_frames
        self._lock = threading.Lock()
        self._pending: dict[tuple[str, int], list[int]] = {}  # (device, boot_id) -> stored seqs
        self._count = 0
        self._since = 0.0  # monotonic time of the oldest pending frame
        self.confirmed = 0  # frames in the acks taken so far (the receiver's metrics)

    def add(self, device: str, boot_id: int, seq: int) -> None:
        with self._lock:
            if not self._count:
                self._since = time.monotonic()
            self._pending.setdefault((device, boot_id), []).append(seq)
            self._count += 1

    def take_due(self, force: bool = False,
                 sealer: Callable[[str], Callable[[dict], dict] | None] | None = None) -> list[tuple[str, bytes]]:
        """``(device, payload)`` of every pending ack once the oldest has waited ``every_s`` or
        ``max_frames`` are pending (or ``force``); else nothing. ``sealer(device)`` gives that device's
        ``seal`` for :func:`encode_ack`, if any."""
        with self._lock:
            if not self._count or not (force or self._count >= self.max_frames
                                       or time.monotonic() - self._since >= self.every_s):
                return []
            self.confirmed += self._count
            pending, self._pending, self._count = self._pending, {}, 0
        return [(device, encode_ack(boot_id, to_ranges(seqs), sealer(device) if sealer else None))
                for (device, boot_id), seqs in pending.items()]

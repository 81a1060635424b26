"""The receiver status: how far behind a receiver is, said to every device so that it waits instead of re-sending.

Topic ``edgekit/v1/$receivers/<receiver>/status`` (QoS 0, not retained, every ``every_s``), payload a JSON
object of at most :data:`MAX_STATUS_BYTES`::

    {"v": 1, "receiver": "rx-1", "every_s": 1.0, "queue": 12, "oldest_s": 0.02, "caught_up_s": 31.5,
     "idle_s": 0.004, "lag_s": 0.31}

``queue`` frames were received and are not finished yet (stored, or dead-lettered), the oldest ``oldest_s``
ago; ``caught_up_s`` is how long no frame has waited more than :data:`BEHIND_S`, in the queue or unread on the
receiver's connection, and the queue stayed below the broker's in-flight window (0: behind now); ``idle_s`` is
the time since the last frame arrived; ``lag_s`` the capture → stored delay of the latest frame finished
(device and receiver clocks: for people, not for rules; null before the first). A receiver that is caught up
vouches that every frame it got has been finished, and confirmed, up to :data:`BEHIND_S` ago (docs/device.md,
Delivery). Standard library only: the device imports it.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass

__all__ = ["VERSION", "BEHIND_S", "MAX_STATUS_BYTES", "ReceiverStatus", "parse_status"]

VERSION = 1
#: A frame waiting longer than this makes its receiver "behind" (healthy ones finish a frame in milliseconds).
BEHIND_S = 0.25
MAX_STATUS_BYTES = 1024  # a status is ~200 bytes; anything larger is not one (and is not parsed)
MAX_SECONDS = 1e9  # bounds every duration field: no NaN, no infinity, no overflow in a device's arithmetic


@dataclass(frozen=True)
class ReceiverStatus:
    receiver: str
    every_s: float
    queue: int
    oldest_s: float
    caught_up_s: float
    idle_s: float
    lag_s: float | None = None

    @property
    def behind(self) -> bool:
        return self.caught_up_s == 0

    def encode(self) -> bytes:
        return json.dumps({"v": VERSION, **asdict(self)}, separators=(",", ":")).encode()


def parse_status(payload: bytes) -> ReceiverStatus | None:
    """The status in ``payload``, or None when it is not a well-formed version-1 status (ignored, never acted on)."""
    if len(payload) > MAX_STATUS_BYTES:
        return None
    try:
        message = json.loads(payload)
        if not isinstance(message, dict) or message.get("v") != VERSION:
            return None
        status = ReceiverStatus(**{k: message[k] for k in ReceiverStatus.__dataclass_fields__ if k in message})
    except (ValueError, TypeError, RecursionError):  # RecursionError: JSON nested too deep for the parser
        return None
    return status if _well_formed(status) else None


def _well_formed(s: ReceiverStatus) -> bool:
    seconds = [s.every_s, s.oldest_s, s.caught_up_s, s.idle_s] + ([s.lag_s] if s.lag_s is not None else [])
    return (isinstance(s.receiver, str) and 0 < len(s.receiver) <= 64 and type(s.queue) is int and s.queue >= 0
            and all(type(v) in (int, float) and math.isfinite(v) and abs(v) <= MAX_SECONDS for v in seconds)
            and s.every_s > 0 and min(s.oldest_s, s.caught_up_s, s.idle_s) >= 0)

"""The rate ladder of a nested code: which level the agent sends, from the uplink it measures (issue 22).

A bundle whose re-encoder is nested lists its rate levels (``wire.levels``, docs/wire-format.md, Levels): the
first c channels of one code decode on their own. The agent sends every frame at one level, chosen here::

    every frame    level ─► encode at that level ─► offered(level, frame bytes)
    every window   the bytes the broker acknowledged (the publisher's PUBACKs) against the bytes offered:
                   backlog += offered − acknowledged (what waits in the spool and in flight)
      behind       backlog above one window of offered traffic and still growing: step down to the highest
                   level whose frames fit 80% of the acknowledged rate just measured (at least one level)
      clear        backlog within one window of offered traffic for ``hold_s``: one level up, if it fits the
                   budget; a step up that falls behind again within 2 × ``hold_s`` doubles ``hold_s`` (up to
                   8×), so a link just below a level's rate does not flap
      budget       never above the highest level whose rate (frames per second × its mean frame bytes) fits
                   ``--uplink-budget``
      pinned       ``--level N``: that level, nothing measured

A level's frame size is the mean of the frames sent at it; one not sent yet is estimated from the nearest
level sent, in proportion to the channels.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from edgekit.errors import UsageError

__all__ = ["LevelChange", "UplinkLadder", "parse_rate"]

_UNITS = {"": 1, "b": 1, "kb": 1e3, "mb": 1e6, "kib": 1024, "mib": 1024**2}
_RATE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([kKmM]i?)?[bB]?\s*(/\s*s)?\s*$")
MAX_HOLD_FACTOR = 8
FIT = 0.8  # step down to a level using at most this share of the acknowledged rate


def parse_rate(text: str) -> float:
    """Bytes per second of ``2kB/s``, ``1500``, ``1.5 KiB/s``, ``64kB`` (k = 1000, Ki = 1024)."""
    match = _RATE.match(str(text))
    if not match or float(match[1]) <= 0:
        raise UsageError(f"uplink budget {text!r} is not a positive rate in bytes per second",
                         "write e.g. --uplink-budget 2kB/s, 1500B/s or 1.5KiB/s")
    unit = (match[2] or "").lower() + ("b" if match[2] else "")
    return float(match[1]) * _UNITS[unit]


@dataclass(frozen=True)
class LevelChange:
    """A change of level and the measurement that caused it (for the agent's one log line)."""

    old: int
    new: int
    why: str


class UplinkLadder:
    """The level to send (see the module docstring). ``channels`` are the bundle's ``wire.levels``; ``pinned``
    fixes one; ``budget`` is in bytes per second; times are ``time.monotonic()`` seconds."""

    def __init__(self, channels: tuple[int, ...], budget: float | None = None, pinned: int | None = None,
                 window_s: float = 1.0, hold_s: float = 3.0, now: float = 0.0):
        if not channels:
            raise UsageError("the bundle has no rate levels (wire.levels)",
                             "--uplink-budget and --level need a bundle of a nested re-encoder "
                             "(edgekit reencode --method entropic --levels ...)")
        if pinned is not None and not 0 <= pinned < len(channels):
            raise UsageError(f"--level {pinned}: the bundle has levels 0..{len(channels) - 1} "
                             f"({', '.join(map(str, channels))} channels)", "pick one of them")
        self.channels, self.budget, self.pinned = channels, budget, pinned
        self.window_s, self.base_hold_s, self.hold_s = window_s, hold_s, hold_s
        self.level = pinned if pinned is not None else len(channels) - 1
        self._sizes: list[tuple[float, int]] = [(0.0, 0)] * len(channels)  # (bytes, frames) sent per level
        self._window_start = now
        self._offered = 0  # bytes offered in this window
        self._frames = 0  # frames offered in this window
        self._acked_at_start: int | None = None
        self._backlog = 0.0
        self._clear_since: float | None = None
        self._stepped_up_at = -float("inf")

    def offered(self, level: int, nbytes: int) -> None:
        """A frame of ``nbytes`` was spooled at ``level``."""
        total, count = self._sizes[level]
        self._sizes[level] = (total + nbytes, count + 1)
        self._offered += nbytes
        self._frames += 1

    def frame_bytes(self, level: int) -> float | None:
        """Mean frame bytes at ``level``: measured, or scaled from the nearest measured level (None: none yet)."""
        sent = [i for i, (_, count) in enumerate(self._sizes) if count]
        if not sent:
            return None
        near = min(sent, key=lambda i: abs(i - level))
        total, count = self._sizes[near]
        return total / count * self.channels[level] / self.channels[near]

    def update(self, now: float, acked_bytes: int) -> LevelChange | None:
        """At most once a window: measure, and change the level when the uplink says so."""
        if self._acked_at_start is None:
            self._acked_at_start = acked_bytes
        span = now - self._window_start
        if span < self.window_s or self.pinned is not None:
            return None
        acked = acked_bytes - self._acked_at_start
        self._backlog = max(0.0, self._backlog + self._offered - acked)
        offered_rate, acked_rate, fps = self._offered / span, acked / span, self._frames / span
        grew = self._offered > acked
        self._window_start, self._acked_at_start, self._offered, self._frames = now, acked_bytes, 0, 0
        if self._backlog > offered_rate * self.window_s:  # more than a window's traffic waits
            if grew:
                return self._step_down(now, acked_rate, offered_rate, fps)
            self._clear_since = None  # draining: not clear yet
            return None
        self._clear_since = self._clear_since if self._clear_since is not None else now
        cap = self._budget_cap(fps)
        if self.level > cap:
            return self._change(cap, f"over the {self.budget:.0f} B/s budget at {fps:.1f} frames/s")
        if self.level < cap and now - self._clear_since >= self.hold_s:
            self._stepped_up_at = now
            return self._change(self.level + 1, f"uplink clear for {now - self._clear_since:.1f} s "
                                                f"(acknowledged {acked_rate:.0f} B/s)")
        return None

    def _step_down(self, now: float, acked_rate: float, offered_rate: float, fps: float) -> LevelChange | None:
        """Behind: the highest level that fits the acknowledged rate, at least one below; a failed probe up
        doubles the hold before the next one."""
        self._clear_since = None
        if self.level == 0:
            return None
        if now - self._stepped_up_at < 2 * self.hold_s:
            self.hold_s = min(self.hold_s * 2, self.base_hold_s * MAX_HOLD_FACTOR)
        fits = [i for i in range(self.level) if fps * (self.frame_bytes(i) or 0.0) <= FIT * acked_rate]
        return self._change(max(fits, default=0), f"acknowledged {acked_rate:.0f} B/s behind offered "
                                                  f"{offered_rate:.0f} B/s, {self._backlog:.0f} B waiting")

    def _budget_cap(self, fps: float) -> int:
        """The highest level whose frames fit the budget (the top one without a budget or a size yet)."""
        if self.budget is None or not fps:
            return len(self.channels) - 1
        fits = [i for i in range(len(self.channels)) if fps * (self.frame_bytes(i) or 0.0) <= self.budget]
        return max(fits, default=0)

    def _change(self, new: int, why: str) -> LevelChange | None:
        if new == self.level:
            return None
        change = LevelChange(self.level, new, why)
        self.level = new
        self._clear_since = None
        return change

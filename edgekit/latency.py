"""Latency percentiles, and the rolling window the agent and the receiver keep for their summary lines."""

from __future__ import annotations

import collections

import numpy as np

__all__ = ["LatencyWindow", "percentiles"]


def percentiles(values_ms, qs=(50, 95, 99)) -> dict[str, float]:
    """``{"p50_ms": …}`` for the given percentiles; NaN when there is nothing to measure."""
    arr = np.asarray(list(values_ms), dtype=np.float64)
    return {f"p{q}_ms": float(np.percentile(arr, q)) if arr.size else float("nan") for q in qs}


class LatencyWindow:
    """The last ``size`` latencies (ms): enough for a stable p95 without growing forever."""

    def __init__(self, size: int = 4096):
        self._values: collections.deque[float] = collections.deque(maxlen=size)

    def add(self, ms: float) -> None:
        self._values.append(ms)

    def percentiles(self) -> dict[str, float]:
        return percentiles(self._values)

"""Parity: the float model against the deployed path, measured with the runners the device and server use.

    x ──float model────────────────────────────────────────────► y_float
    x ──device runner (int8 model) ──► int8 code ──dequantize──► server runner ──► y_deployed
                   └──────── float device half ──► code_float (for the code's SQNR)

Reported per device model: top-1 agreement with the float model, accuracy (with labels), SQNR of the code,
max output error, bytes of the raw int8 code per sample, and CPU latency of the device half (median, p95;
float vs int8 as a ratio).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from edgekit.wire import dequantize

__all__ = ["sqnr_db", "deployed_outputs", "parity_metrics", "latency", "latency_comparison"]


def sqnr_db(reference: np.ndarray, approx: np.ndarray) -> float:
    """Signal-to-quantization-noise ratio in dB (inf when identical)."""
    noise = float(np.sum((reference.astype(np.float64) - approx) ** 2))
    signal = float(np.sum(reference.astype(np.float64) ** 2))
    return float("inf") if noise == 0 else 10.0 * np.log10(max(signal, 1e-30) / noise)


def deployed_outputs(device: Any, server: Any, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Run the deployed path; return (int8 codes, dequantized codes, outputs)."""
    codes = device.run(x)
    codes_float = dequantize(codes, *device.code_quant)
    return codes, codes_float, server.run(codes_float)


def _finite(value: float) -> float | None:
    """JSON has no infinity: an exact code (no noise) is reported as null."""
    return round(value, 3) if np.isfinite(value) else None


def _top1(y: np.ndarray) -> np.ndarray:
    return y.reshape(len(y), -1).argmax(axis=1)


def parity_metrics(y_float: np.ndarray, y_deployed: np.ndarray, code_float: np.ndarray, code_deq: np.ndarray,
                   labels: np.ndarray | None) -> dict[str, Any]:
    """The accuracy side of the report for one device model."""
    agree = float(np.mean(_top1(y_float) == _top1(y_deployed)))
    metrics: dict[str, Any] = {
        "samples": int(len(y_float)),
        "top1_agreement": agree,
        "code_sqnr_db": _finite(sqnr_db(code_float, code_deq)),
        "max_output_error": float(np.max(np.abs(y_float.astype(np.float64) - y_deployed))),
        "accuracy_float": None,
        "accuracy_deployed": None,
        "accuracy_drop_points": None,
    }
    if labels is not None:
        acc_float = float(np.mean(_top1(y_float) == labels))
        acc_deployed = float(np.mean(_top1(y_deployed) == labels))
        metrics.update(accuracy_float=acc_float, accuracy_deployed=acc_deployed,
                       accuracy_drop_points=round(100.0 * (acc_float - acc_deployed), 3))
    return metrics


def latency(runner: Any, sample: np.ndarray, runs: int, warmup: int = 5) -> dict[str, float]:
    """Median and p95 wall time (ms) of one batch-1 call of ``runner.run``."""
    batch = sample[None]
    for _ in range(warmup):
        runner.run(batch)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        runner.run(batch)
        times.append((time.perf_counter() - start) * 1e3)
    return {"median_ms": round(float(np.median(times)), 4), "p95_ms": round(float(np.percentile(times, 95)), 4),
            "runs": runs}


def latency_comparison(float_runner: Any, int8_runner: Any, sample: np.ndarray, runs: int) -> dict[str, Any]:
    """Float vs int8 latency of the same device half; ratio > 1 means int8 is faster."""
    float_ms, int8_ms = latency(float_runner, sample, runs), latency(int8_runner, sample, runs)
    return {"float": float_ms, "int8": int8_ms,
            "float_over_int8": round(float_ms["median_ms"] / max(int8_ms["median_ms"], 1e-9), 3)}

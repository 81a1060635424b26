"""Parity: the float model against the deployed path, measured with the runners the device and server use.

    x ──float model────────────────────────────────────────────► y_float
    x ──device runner (int8 model) ──► int8 code ──dequantize──► server runner ──► y_deployed
                   └──────── float device half ──► code_float (for the code's SQNR)

Reported per device model: top-1 agreement with the float model, accuracy (with labels), SQNR of the code,
max output error, bytes of the raw int8 code per sample, and CPU latency of the device half (median, p95;
float vs int8 as a ratio). Everything runs in chunks of ``EVAL_BATCH`` samples (bounded memory).

ONNX device models run twice: with ONNX Runtime's optimized (fused int8) kernels, as deployed, and as the
unfused QDQ reference (``ORT_DISABLE_ALL``), whose codes are the same on every CPU. :func:`kernel_check`
compares the two; a gap means the fused kernels compute differently on this CPU (x86 without VNNI
saturates U8S8/S8S8 int16 sums), which no calibration can fix.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from edgekit.cpu import describe_cpu, x86_without_vnni
from edgekit.wire.spec import dequantize

from .halves import batched

__all__ = ["EVAL_BATCH", "KERNEL_AGREEMENT_DB", "sqnr_db", "deployed_outputs", "parity_metrics", "kernel_check",
           "kernel_warnings", "KERNEL_FIX", "latency", "latency_comparison", "top1_agreement"]

EVAL_BATCH = 32
# Fused codes within 30 dB of the reference codes: a few rounding differences (measured: ≤ 4 levels on a
# handful of elements, > 60 dB); saturation measured 10-25 dB.
KERNEL_AGREEMENT_DB = 30.0


def sqnr_db(reference: np.ndarray, approx: np.ndarray) -> float:
    """Signal-to-quantization-noise ratio in dB (inf when identical)."""
    noise = float(np.sum((reference.astype(np.float64) - approx) ** 2))
    signal = float(np.sum(reference.astype(np.float64) ** 2))
    return float("inf") if noise == 0 else 10.0 * np.log10(max(signal, 1e-30) / noise)


def deployed_outputs(device: Any, server: Any, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Run the deployed path in chunks; return (int8 codes, dequantized codes, outputs)."""
    codes = batched(device.run, EVAL_BATCH)(x)
    codes_float = dequantize(codes, *device.code_quant)
    return codes, codes_float, batched(server.run, EVAL_BATCH)(codes_float)


def _finite(value: float) -> float | None:
    """JSON has no infinity: an exact code (no noise) is reported as null."""
    return round(value, 3) if np.isfinite(value) else None


def _top1(y: np.ndarray) -> np.ndarray:
    return y.reshape(len(y), -1).argmax(axis=1)


def top1_agreement(a: np.ndarray, b: np.ndarray) -> float:
    """Fraction of samples whose arg-max class agrees."""
    return float(np.mean(_top1(a) == _top1(b)))


def parity_metrics(y_float: np.ndarray, y_deployed: np.ndarray, code_float: np.ndarray, code_deq: np.ndarray,
                   labels: np.ndarray | None) -> dict[str, Any]:
    """The accuracy side of the report for one device model."""
    agree = top1_agreement(y_float, y_deployed)
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


def kernel_check(fused_codes: np.ndarray, reference_codes: np.ndarray, quant: tuple[float, int],
                 reference: dict[str, Any]) -> dict[str, Any]:
    """The deployed int8 codes (fused kernels) against the unfused reference's; ``reference``: its parity metrics."""
    diff = np.abs(fused_codes.astype(np.int16) - reference_codes.astype(np.int16))
    close = sqnr_db(dequantize(reference_codes, *quant), dequantize(fused_codes, *quant))
    return {"top1_agreement": reference["top1_agreement"], "code_sqnr_db": reference["code_sqnr_db"],
            "max_level_difference": int(diff.max(initial=0)), "differing_fraction": round(float(np.mean(diff > 0)), 6),
            "fused_vs_reference_sqnr_db": _finite(close), "kernels_agree": bool(close >= KERNEL_AGREEMENT_DB)}


KERNEL_FIX = ("quantize the ONNX device half in a scheme whose fused kernels cannot saturate (target profile "
              "onnx.activation_type and weight_type uint8, or onnx.reduce_range true; the cpu and rpi profiles do) "
              "— calibration settings cannot fix this")


def _kernel_fix(scheme: Any) -> str:
    """What to do about kernels that disagree, given the ONNX scheme the run used (``OnnxOptions`` or None):
    never advise the scheme it already has."""
    if scheme is None or not (scheme.reduce_range or (scheme.activation_type.value, scheme.weight_type.value)
                              == ("uint8", "uint8")):
        return KERNEL_FIX
    used = "reduce_range" if scheme.reduce_range else "uint8 activations and weights"
    return (f"this run already used {used}, the scheme that avoids the saturation, so the difference is the "
            "kernels' own rounding: find the layer with --debug-layers, or use this target's TFLite half")


def kernel_warnings(rows: list[dict[str, Any]], cpu: dict[str, Any], schemes: dict[str, Any]) -> list[str]:
    """One warning per ONNX device model whose fused kernels disagree with the reference, naming the cause;
    ``schemes``: target name -> the ONNX quantization scheme its profile used."""
    cause = ("ONNX Runtime's fused int8 kernels saturate on this CPU (no VNNI: VPMADDUBSW int16 sums)"
             if x86_without_vnni(cpu) else f"ONNX Runtime's fused int8 kernels compute differently on this CPU "
             f"({describe_cpu(cpu)})")
    warnings = []
    for row in rows:
        ref = row.get("reference_kernels")
        if ref and not ref["kernels_agree"]:
            warnings.append(
                f"{row['target']}/{row['runtime']}: {cause}: its codes differ from the unfused QDQ reference by up "
                f"to {ref['max_level_difference']} int8 levels (code SQNR {row['code_sqnr_db']} dB vs "
                f"{ref['code_sqnr_db']} dB, top-1 agreement {row['top1_agreement']:.4f} vs "
                f"{ref['top1_agreement']:.4f}) — {_kernel_fix(schemes.get(row['target']))}")
    return warnings


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

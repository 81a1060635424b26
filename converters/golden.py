"""Golden vectors: what the validated models compute on a few calibration inputs, stored in the bundle.

    calibration inputs ──pick 4..16──► inputs ──► each device model (the parity check's runner) ──► int8 codes
                                                  first model's codes ──dequantize──► server half ──► outputs
                          golden/golden.npz + manifest["golden"] (array names, tolerance, runtime, CPU)

The device agent and the receiver replay them at start (:mod:`edgekit.selftest`) and refuse to run when
their runtime does not reproduce them: the parity report is only worth something if the device computes
what the report measured.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from edgekit.bundle.manifest import sha256_file
from edgekit.cpu import cpu_features
from edgekit.selftest import runtime_version
from edgekit.wire.spec import dequantize

from .targets import Runtime

__all__ = ["GOLDEN_PATH", "write_golden", "tolerance"]

GOLDEN_PATH = "golden/golden.npz"
MAX_SAMPLES, MIN_SAMPLES = 16, 4
INPUT_BUDGET_BYTES = 4 << 20  # big inputs (224x224x3 floats) get fewer samples, so bundles stay small
# Int8 kernels may round an accumulator differently per CPU (x86 AVX2 vs VNNI, Arm NEON dot product): allow
# one level on a few elements. A wrong kernel or a swapped model moves most elements by many levels.
CODE_MAX_LEVEL_DIFF = 1
CODE_MAX_FRACTION_DIFF = 0.02
# Server outputs may differ by float summation order; relative to the largest golden output.
OUTPUT_RELATIVE_ERROR = {"fp32": 1e-4, "fp16": 1e-2, "int8": 5e-2}


def _pick(calib: np.ndarray) -> np.ndarray:
    """Indices of evenly spaced calibration samples, as many as fit the budget (at least 4, at most 16)."""
    per_sample = max(1, calib[0].nbytes)
    count = min(len(calib), max(MIN_SAMPLES, min(MAX_SAMPLES, INPUT_BUDGET_BYTES // per_sample)))
    return np.linspace(0, len(calib) - 1, count).astype(int)


def tolerance(outputs: np.ndarray, precision: str) -> dict[str, float]:
    """The manifest's tolerance: int8 levels for codes, an absolute error for the server's outputs."""
    scale = max(1.0, float(np.max(np.abs(outputs), initial=0.0)))
    return {"code_max_level_diff": CODE_MAX_LEVEL_DIFF, "code_max_fraction_diff": CODE_MAX_FRACTION_DIFF,
            "output_max_abs_error": OUTPUT_RELATIVE_ERROR[precision] * scale}


def write_golden(bundle: Path, calib: np.ndarray, devices: Sequence[Any], server_rel: str, precision: str,
                 threads: int | None = None, texts: Sequence[str] | None = None) -> dict[str, Any]:
    """Write ``golden/golden.npz`` under ``bundle`` and return ``manifest["golden"]``.

    ``devices`` are the converted device models (``path``, ``runtime``, ``code_quant``); models with the
    same file content share one codes array. Text bundles give int64 token ids as ``calib`` (kept int64) and
    their sentences as ``texts``, stored too so the self-test checks the tokenizer as well.
    """
    from edgekit.runtime import open_device_runner, open_server_runner

    picked = _pick(calib)
    x = np.ascontiguousarray(calib[picked], np.int64 if calib.dtype == np.int64 else np.float32)
    arrays: dict[str, np.ndarray] = {"inputs": x}
    if texts is not None:
        arrays["texts"] = np.asarray([texts[i] for i in picked], np.str_)
    entries, server_input = [], None
    for dev in devices:
        runner = open_device_runner(bundle / dev.path, runtime="onnxruntime" if dev.runtime == Runtime.ONNX else None,
                                    threads=threads, code_quant=dev.code_quant)
        name = f"codes_{sha256_file(bundle / dev.path)[:16]}"
        if name not in arrays:
            arrays[name] = runner.run(x)
        entries.append({"path": dev.path, "codes": name, "runtime": runner.runtime,
                        "runtime_version": runtime_version(runner.runtime)})
        if server_input is None:
            server_input = (name, runner.code_quant)
    codes_name, (scale, zero_point) = server_input
    arrays["server_outputs"] = np.asarray(
        open_server_runner(bundle / server_rel, threads=threads).run(dequantize(arrays[codes_name], scale, zero_point)),
        np.float32)
    (bundle / GOLDEN_PATH).parent.mkdir(parents=True, exist_ok=True)
    np.savez(bundle / GOLDEN_PATH, **arrays)
    return {
        "path": GOLDEN_PATH,
        "samples": len(x),
        "inputs": "inputs",
        **({"texts": "texts"} if texts is not None else {}),
        "device": entries,
        "server": {"codes": codes_name, "code_quant": {"scale": float(scale), "zero_point": int(zero_point)},
                   "outputs": "server_outputs", "runtime": "onnxruntime",
                   "runtime_version": runtime_version("onnxruntime")},
        "tolerance": tolerance(arrays["server_outputs"], precision),
        "cpu": cpu_features(),
    }

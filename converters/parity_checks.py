"""The checking steps of ``convert``: the bundle's device models run on the held-out samples with the runners
the device and server use, scored with :mod:`.parity`'s metrics.

    each device model (once per file content) ──► parity_metrics, latency vs the float half,
                                                  ONNX: unfused reference kernels (kernel_check)
    failing parity or --debug-layers ──► per-layer quantization errors (layer_debug)

:mod:`.parity` holds the metrics as pure functions on arrays; this module opens the models and feeds them.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.bundle.manifest import sha256_file

from .datasets import Samples
from .device_exports import float_baselines
from .parity import deployed_outputs, kernel_check, latency_comparison, parity_metrics
from .state import ConversionState, DeviceFile
from .targets import Runtime

__all__ = ["measure_parity", "layer_errors"]


def measure_parity(work: ConversionState, server_path: Path, latency_runs: int, threads: int | None,
                   progress: bool) -> tuple[list[dict[str, Any]], dict[str, Any], dict[str, Any]]:
    from tqdm import tqdm

    from edgekit.runtime import open_device_runner, open_server_runner

    x, y = work.eval.x, work.eval.y
    y_float = work.halves.reference(x)
    code_float = work.halves.device_float(x)
    server = open_server_runner(server_path, threads=threads)
    baselines = float_baselines(work)
    float_runners = {rt: open_device_runner(p, runtime="onnxruntime" if rt == "onnx" else None, threads=threads)
                     for rt, p in baselines.items()}
    measured: dict[str, dict[str, Any]] = {}
    codes: dict[str, np.ndarray] = {}
    rows = []
    for dev in tqdm(work.devices, desc="parity", unit="model", disable=not (progress and sys.stderr.isatty()),
                    leave=False):
        path = work.bundle / dev.path
        digest = sha256_file(path)
        if digest not in measured:
            runner = open_device_runner(path, runtime="onnxruntime" if dev.runtime == Runtime.ONNX else None,
                                        threads=threads, code_quant=dev.code_quant)
            code, code_deq, y_dep = deployed_outputs(runner, server, x)
            codes[digest] = code
            metrics = parity_metrics(y_float, y_dep, code_float, code_deq, y)
            metrics["latency"] = latency_comparison(float_runners[dev.runtime.value], runner, x[0], latency_runs) \
                if latency_runs > 0 else None
            metrics["reference_kernels"] = _reference_kernels(path, dev, server, work.eval, y_float, code_float, code,
                                                              threads) if dev.runtime == Runtime.ONNX else None
            measured[digest] = metrics
        size = path.stat().st_size
        float_size = baselines[dev.runtime.value].stat().st_size if dev.runtime.value in baselines else None
        rows.append({"target": dev.target, "runtime": dev.runtime.value, "path": dev.path, "sha256": digest,
                     "bytes": size, "float_bytes": float_size,
                     "size_vs_float": round(size / float_size, 4) if float_size else None, **measured[digest]})
    float_sizes = {rt: p.stat().st_size for rt, p in baselines.items()}
    first = sha256_file(work.bundle / work.devices[0].path)
    return rows, {"float_sizes": float_sizes, "y_float": y_float}, {"heldout_codes": codes[first]}


def _reference_kernels(path: Path, dev: DeviceFile, server: Any, samples: Samples, y_float: np.ndarray,
                       code_float: np.ndarray, fused_codes: np.ndarray, threads: int | None) -> dict[str, Any]:
    """The ONNX device model run unfused: the codes every CPU should give (see parity.kernel_check)."""
    from edgekit.runtime import open_device_runner

    reference = open_device_runner(path, runtime="onnxruntime", threads=threads, code_quant=dev.code_quant, fused=False)
    codes, code_deq, y_ref = deployed_outputs(reference, server, samples.x)
    reference_metrics = parity_metrics(y_float, y_ref, code_float, code_deq, samples.y)
    return kernel_check(fused_codes, codes, dev.code_quant, reference_metrics)


def layer_errors(work: ConversionState, calib_method: str) -> dict[str, list[dict[str, Any]]]:
    from .layer_debug import onnx_layer_errors, tflite_layer_errors

    samples = work.eval.x[:64]
    errors: dict[str, list[dict[str, Any]]] = {}
    tflite = [work.profiles[d.target] for d in work.devices if d.runtime == Runtime.TFLITE]
    if tflite:
        errors["tflite"] = tflite_layer_errors(work.halves.device_keras, work.input_shape, work.halves.input_name,
                                               work.calib, tflite[0].tflite, samples)
    onnx = [work.profiles[d.target] for d in work.devices if d.runtime == Runtime.ONNX]
    if onnx:
        errors["onnx"] = onnx_layer_errors(work.halves.device_onnx, work.halves.input_name, work.calib, onnx[0].onnx,
                                           calib_method, samples)
    return errors

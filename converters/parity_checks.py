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
from .onnx_quant import device_format
from .parity import deployed_outputs, kernel_check, latency_comparison, parity_metrics
from .state import ConversionState, DeviceFile
from .targets import Runtime

__all__ = ["measure_parity", "layer_errors", "original_model", "LAYER_SAMPLES"]

LAYER_SAMPLES = 64  # held-out samples the per-layer analysis runs on


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
            chosen = device_format(path) if dev.runtime == Runtime.ONNX else None
            metrics["format"] = chosen
            # Only a QDQ model has an unfused reference that differs from what it deploys.
            qdq = dev.runtime == Runtime.ONNX and (chosen is None or chosen["format"] == "qdq")
            metrics["reference_kernels"] = _reference_kernels(path, dev, server, work.eval, y_float, code_float, code,
                                                              threads) if qdq else None
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

    samples = work.eval.x[:LAYER_SAMPLES]
    errors: dict[str, list[dict[str, Any]]] = {}
    tflite = [work.profiles[d.target] for d in work.devices if d.runtime == Runtime.TFLITE]
    if tflite and work.halves.device_keras is not None:  # TF's quantization debugger needs the Keras half
        errors["tflite"] = tflite_layer_errors(work.halves.device_keras, work.input_shape, work.halves.input_name,
                                               work.calib, tflite[0].tflite, samples)
    onnx = [work.profiles[d.target] for d in work.devices if d.runtime == Runtime.ONNX]
    if onnx:
        errors["onnx"] = onnx_layer_errors(work.halves.device_onnx, work.halves.input_name, work.calib, onnx[0].onnx,
                                           calib_method, samples)
    return errors


def original_model(work: ConversionState, model_path: Path, y_float: np.ndarray) -> dict[str, Any] | None:
    """For a model made by ``edgekit reencode``: the accuracy of the model it was made from (its teacher) on
    the same evaluation samples, and how often the re-encoded float model agrees with it, so the report
    shows what the re-encoder cost beside what quantization cost (``y_float``: the re-encoded float model's
    outputs on those samples). The teacher is looked up by the name its
    record gives, beside the re-encoded model, then in the working directory, and accepted only when its
    SHA-256 is the recorded one. None for a model that was not re-encoded."""
    from .inputs import load_halves
    from .parity import top1_agreement

    if work.reencoder is None:
        return None
    record = work.reencoder.metadata
    name = Path(record["teacher"]).name
    candidates = [model_path.parent / name, Path(name)]
    found = next((p for p in candidates if p.is_file() and sha256_file(p) == record.get("teacher_sha256")), None)
    section: dict[str, Any] = {"model": name, "found": found is not None, "accuracy": None, "float_agreement": None}
    if found is None:
        section["reason"] = (f"{name} with the recorded SHA-256 is not beside {model_path.name} nor in the working "
                             "directory: copy the original model there to see its accuracy")
        return section
    scratch = work.scratch / "original"
    scratch.mkdir(exist_ok=True)
    teacher = load_halves(str(found), record["split"], None, None, scratch)
    y_original = teacher.reference(work.eval.x)
    section["float_agreement"] = top1_agreement(y_original, y_float)
    if work.eval.y is not None:
        section["accuracy"] = float(np.mean(y_original.reshape(len(y_original), -1).argmax(axis=1) == work.eval.y))
    return section

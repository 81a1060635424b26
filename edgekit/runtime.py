"""Run the two halves of a split model with whatever runtime the machine has.

The parity check (workstation), the device agent (Raspberry Pi) and the receiver (server) all run models
through this one module, so what the report measures is what the device and server execute.

    float32 batch ──► DeviceRunner.run ──► int8 code batch   (uint8 targets are shifted to int8)
    float32 code  ──► ServerRunner.run ──► output batch

TFLite runtimes are tried in the order a Raspberry Pi image prefers them: ``ai-edge-litert`` (maintained,
numpy 2), the frozen ``tflite-runtime`` (legacy extra, numpy 1), then TensorFlow's own interpreter. No
runtime is imported before a model is opened, so importing this module is free.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from edgekit.errors import BundleError, UsageError

__all__ = [
    "TFLITE_RUNTIMES",
    "RUNTIMES",
    "DeviceRunner",
    "ServerRunner",
    "open_device_runner",
    "open_server_runner",
    "available_tflite_runtime",
]

# name -> module that provides ``Interpreter`` (TensorFlow's lives at tf.lite.Interpreter).
TFLITE_RUNTIMES: dict[str, str] = {
    "litert": "ai_edge_litert.interpreter",
    "tflite-runtime": "tflite_runtime.interpreter",
    "tensorflow": "tensorflow",
}
RUNTIMES = (*TFLITE_RUNTIMES, "onnxruntime")

QuantParams = tuple[float, int]


def _interpreter_class(runtime: str) -> Callable[..., Any]:
    module = importlib.import_module(TFLITE_RUNTIMES[runtime])
    return module.lite.Interpreter if runtime == "tensorflow" else module.Interpreter


def available_tflite_runtime() -> str:
    """The first TFLite runtime that imports here; UsageError naming the extras when there is none."""
    for name in TFLITE_RUNTIMES:
        try:
            _interpreter_class(name)
        except ImportError:
            continue
        return name
    raise UsageError(
        "no TFLite runtime is installed",
        "pip install 'edgekit-split[device]' (ai-edge-litert), or 'edgekit-split[device-legacy]' on numpy-1 images",
    )


def _default_threads() -> int:
    return max(1, min(4, os.cpu_count() or 1))


def _quantize(x: np.ndarray, dtype: np.dtype, quant: QuantParams) -> np.ndarray:
    scale, zero_point = quant
    info = np.iinfo(dtype)
    q = np.round(np.asarray(x, np.float32) / np.float32(scale)) + zero_point
    return np.clip(q, info.min, info.max).astype(dtype)


def _as_int8_code(y: np.ndarray, quant: QuantParams | None) -> tuple[np.ndarray, QuantParams | None]:
    """uint8 codes become int8 with zero_point - 128: the same real values, one wire dtype."""
    if y.dtype == np.uint8:
        assert quant is not None
        return (y.astype(np.int16) - 128).astype(np.int8), (quant[0], quant[1] - 128)
    return y, quant


@dataclass
class DeviceRunner:
    """The device half, loaded. ``run`` takes float32 (N, ...), or int64 token ids (N, S) for a text model's
    ONNX half (``input_dtype`` int64, dynamic dimensions -1), and returns the code batch.

    For a quantized model the code is int8 and ``code_quant`` its (scale, zero_point); a float model (used
    for the float-vs-int8 latency comparison) returns float32 and ``code_quant`` is None.
    """

    path: Path
    runtime: str
    input_shape: tuple[int, ...]
    input_dtype: str
    code_quant: QuantParams | None
    _run: Callable[[np.ndarray], np.ndarray]

    def run(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, np.int64 if self.input_dtype == "int64" else np.float32)  # int64: a text model's token ids
        if len(x.shape) != len(self.input_shape) or any(m not in (-1, d) for m, d in zip(self.input_shape[1:], x.shape[1:])):
            raise UsageError(
                f"input shape {x.shape[1:]} does not match the device model's {self.input_shape[1:]}",
                "check the preprocessing (size, channels, layout) against the bundle manifest",
            )
        return self._run(x)


def _open_tflite(path: Path, runtime: str, threads: int) -> DeviceRunner:
    interpreter = _interpreter_class(runtime)(model_path=str(path), num_threads=threads)
    interpreter.allocate_tensors()
    inp = interpreter.get_input_details()[0]
    out = interpreter.get_output_details()[0]
    in_dtype = np.dtype(inp["dtype"])
    in_quant = tuple(inp["quantization"]) if in_dtype.kind in "iu" else None
    out_dtype = np.dtype(out["dtype"])
    raw_quant = (float(out["quantization"][0]), int(out["quantization"][1])) if out_dtype.kind in "iu" else None
    _, code_quant = _as_int8_code(np.zeros(0, out_dtype), raw_quant)

    def run_one(sample: np.ndarray) -> np.ndarray:
        value = _quantize(sample, in_dtype, in_quant) if in_quant else sample.astype(in_dtype)
        interpreter.set_tensor(inp["index"], value[None])
        interpreter.invoke()
        return interpreter.get_tensor(out["index"])[0]

    def run(x: np.ndarray) -> np.ndarray:
        # Device models have a static batch of 1 (what XNNPACK and NPUs compile for): loop over samples.
        y = np.stack([run_one(sample) for sample in x]) if len(x) else np.zeros((0, *out["shape"][1:]), out_dtype)
        return _as_int8_code(y, raw_quant)[0]

    return DeviceRunner(path, runtime, tuple(int(d) for d in inp["shape"]), in_dtype.name, code_quant, run)


def _ort_session(path: Path, threads: int, fused: bool = True, spin: bool = True) -> Any:
    """``fused=False`` runs a QDQ model as the unfused reference: no graph optimization, so every op runs in
    float between DequantizeLinear and QuantizeLinear instead of in ORT's fused int8 kernels. ``spin=False``:
    idle intra-op threads sleep instead of spinning (a receiver's other threads need those cores)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    if not spin:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if not fused:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


_ORT_DTYPES = {"tensor(float)": np.float32, "tensor(int8)": np.int8, "tensor(uint8)": np.uint8, "tensor(int64)": np.int64}


def _open_onnx_device(path: Path, threads: int, code_quant: QuantParams | None, fused: bool) -> DeviceRunner:
    session = _ort_session(path, threads, fused)
    inp = session.get_inputs()[0]
    out_type = np.dtype(_ORT_DTYPES.get(session.get_outputs()[0].type, np.float32))
    if out_type.kind in "iu" and code_quant is None:
        raise BundleError(f"{path.name} outputs {out_type.name} but no code quantization was given for it",
                          "pass the manifest's code_quant for this model (Bundle.device_model(...).code_quant)")
    _, int8_quant = _as_int8_code(np.zeros(0, out_type), code_quant)

    shape = tuple(d if isinstance(d, int) else -1 for d in inp.shape)

    def run(x: np.ndarray) -> np.ndarray:
        if shape[0] == 1 and len(x) > 1:  # a static batch-1 graph (as exported): sample by sample
            return np.concatenate([run(x[i : i + 1]) for i in range(len(x))])
        y = session.run(None, {inp.name: x})[0]
        return _as_int8_code(y, code_quant)[0]

    in_dtype = np.dtype(_ORT_DTYPES.get(inp.type, np.float32)).name
    return DeviceRunner(path, "onnxruntime", shape, in_dtype, int8_quant if out_type.kind in "iu" else None, run)


def open_device_runner(
    path: str | Path,
    runtime: str | None = None,
    threads: int | None = None,
    code_quant: QuantParams | None = None,
    fused: bool = True,
) -> DeviceRunner:
    """Load a device half (``.tflite`` or ``.onnx``) with ``runtime`` or the best one present.

    ``code_quant`` is needed only for ONNX models, whose output quantization lives in the manifest.
    ``fused=False`` opens an ONNX model as the unfused QDQ reference (parity's check of ORT's int8 kernels).
    """
    path = Path(path)
    threads = threads or _default_threads()
    if not path.is_file():
        raise BundleError(f"device model {path} not found", "check the bundle path, or re-run edgekit convert")
    if runtime is not None and runtime not in RUNTIMES:
        raise UsageError(f"unknown runtime {runtime!r}", f"choose one of {', '.join(RUNTIMES)}")
    if path.suffix == ".onnx":
        if runtime not in (None, "onnxruntime"):
            raise UsageError(f"{path.name} is an ONNX model; runtime {runtime!r} runs TFLite", "use --runtime onnxruntime")
        _require("onnxruntime", "pip install 'edgekit-split[device-onnx]'")
        return _open_onnx_device(path, threads, code_quant, fused)
    if runtime == "onnxruntime":
        raise UsageError(f"{path.name} is a TFLite model; onnxruntime runs ONNX", "pick the bundle's ONNX device model")
    if runtime is not None:
        _require(TFLITE_RUNTIMES[runtime].split(".")[0], f"install the {runtime} runtime or drop --runtime")
    return _open_tflite(path, runtime or available_tflite_runtime(), threads)


def _require(module: str, fix: str) -> None:
    try:
        importlib.import_module(module)
    except ImportError:
        raise UsageError(f"{module} is not installed", fix) from None


@dataclass
class ServerRunner:
    """The server half, loaded in ONNX Runtime. ``run`` takes the float32 code batch (N, ...)."""

    path: Path
    input_name: str
    input_shape: tuple[int, ...]
    output_names: list[str]
    _session: Any

    def run(self, code: np.ndarray) -> np.ndarray:
        code = np.asarray(code, np.float32)
        if self.input_shape[0] == 1 and len(code) != 1:
            # A static batch-1 graph: run sample by sample (convert exports a dynamic batch axis).
            return np.concatenate([self.run(code[i : i + 1]) for i in range(len(code))])
        return self._session.run(self.output_names[:1], {self.input_name: code})[0]


def open_server_runner(path: str | Path, threads: int | None = None, spin: bool = True) -> ServerRunner:
    """Load the server half for batched inference (``spin``: see :func:`_ort_session`)."""
    path = Path(path)
    if not path.is_file():
        raise BundleError(f"server model {path} not found", "check the bundle path, or re-run edgekit convert")
    _require("onnxruntime", "pip install 'edgekit-split[server]'")
    session = _ort_session(path, threads or _default_threads(), spin=spin)
    inp = session.get_inputs()[0]
    shape = tuple(d if isinstance(d, int) else -1 for d in inp.shape)
    return ServerRunner(path, inp.name, shape, [o.name for o in session.get_outputs()], session)

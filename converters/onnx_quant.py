"""ONNX halves: ONNX Runtime static quantization of the device half, precision options for the server half.

Device half: QDQ in the target profile's scheme (``OnnxOptions``: U8U8 by default, the one whose fused ORT
kernels give the same codes on x86 with and without VNNI and on Arm), per-channel by default, calibrated on
the same samples as TFLite, one batch at a time (:func:`calibrate`). ORT leaves a
QuantizeLinear→DequantizeLinear pair on the graph output; convert drops the final DequantizeLinear and pins
that QuantizeLinear to the wire quantization, so the ONNX device half outputs the same int8 code (same
scale and zero-point) as the TFLite one and one wire format holds, whatever the inner activation type.

    float ONNX ──quantize_static──► ... Q(code, s', z') → DQ → code(float)
               ──pin output──────► ... Q(code, s, z) → code(int8)      (s, z) = wire quantization
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from edgekit.errors import UsageError

from .targets import IOType, OnnxOptions

__all__ = ["CALIBRATION_METHODS", "SERVER_PRECISIONS", "CALIBRATION_BATCH", "ArrayReader", "quiet_ort", "range_quant",
           "calibrate", "quantize_static_qdq", "quantize_device_onnx", "device_format", "agreement_scorer", "export_server_onnx",
           "reader_batch"]

CALIBRATION_METHODS = ("minmax", "entropy", "percentile")
SERVER_PRECISIONS = ("fp32", "fp16", "int8")
CALIBRATION_BATCH = 16
CALIBRATION_BYTES = 4 << 20  # input bytes per calibration batch (see calibrate)
FORMAT_KEY = "edgekit.device_format"  # metadata_props key of the format choice (see quantize_device_onnx)


def range_quant(values: np.ndarray) -> tuple[float, int]:
    """Asymmetric int8 (scale, zero_point) covering ``values`` and 0, as TFLite calibrates activations."""
    low, high = min(float(values.min()), 0.0), max(float(values.max()), 0.0)
    scale = (high - low) / 255.0 or 1.0
    zero_point = int(np.clip(round(-128 - low / scale), -128, 127))
    return float(np.float32(scale)), zero_point


@contextlib.contextmanager
def quiet_ort() -> Iterator[None]:
    """Keep stdout clean for ``--json`` while ORT runs: its histogram calibrators ``print`` chatter (dropped),
    its quantizer logs 'consider pre-processing' on the root logger at every call (raised to ERROR), and
    anything native written to fd 1 goes to stderr."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    sys.stdout.flush()
    saved_fd = os.dup(1)
    os.dup2(2, 1)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        sys.stderr.flush()
        os.dup2(saved_fd, 1)
        os.close(saved_fd)
        root.setLevel(level)


def reader_batch(model_path: Path) -> int:
    """Calibration batch size for a model: 1 when its input has a static batch of 1 (as exported), else 16."""
    return _graph_batch(_load_graph(model_path))


def _load_graph(model_path: Path):  # -> onnx.GraphProto
    import onnx

    return onnx.load(str(model_path), load_external_data=False).graph


def _graph_batch(graph) -> int:
    initializers = {i.name for i in graph.initializer}
    dims = next(i for i in graph.input if i.name not in initializers).type.tensor_type.shape.dim
    return 1 if dims and dims[0].HasField("dim_value") and dims[0].dim_value == 1 else CALIBRATION_BATCH


class ArrayReader:
    """CalibrationDataReader over an array (or a memory map), sliced lazily in small batches (single pass)."""

    def __init__(self, name: str, x: np.ndarray, batch: int = CALIBRATION_BATCH):
        self._batches = ({name: np.asarray(x[i : i + batch])} for i in range(0, len(x), batch))

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._batches, None)

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:  # qdq_loss_debug iterates instead of get_next
        return iter(self.get_next, None)


def _method(name: str):  # -> CalibrationMethod
    from onnxruntime.quantization import CalibrationMethod

    if name not in CALIBRATION_METHODS:
        raise UsageError(f"unknown calibration method {name!r}", f"choose one of {', '.join(CALIBRATION_METHODS)}")
    return {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
            "percentile": CalibrationMethod.Percentile}[name]


def calibrate(float_path: Path, input_name: str, calib: np.ndarray, method: str, cache: Path,
              batch: int = CALIBRATION_BATCH) -> Path:
    """Tensor ranges of ``float_path`` on ``calib``, written as ORT's calibration cache file ``cache``.

    The calibrator is fed one batch per ``collect_data`` call, so it merges as it goes (min/max, or the
    histograms) and memory is one batch's activations whatever the sample count. Handing ORT the whole
    reader instead keeps every batch's activations until the end for entropy/percentile (issue 7 reports
    13-20 GB on a 224x224 model) and crashes when the last batch is smaller; its
    ``CalibMaxIntermediateOutputs`` clears the kept batches without merging them (ORT 1.32 calibrate.py).
    ``batch`` is what the model takes per run (1 for a static batch-1 export, see :func:`reader_batch`).
    A batch also holds at most ``CALIBRATION_BYTES`` of input: the calibrator outputs every intermediate
    tensor, and 16 images of 224x224 through EfficientNet-Lite0's first stages held 1 GB (6 images now).
    """
    from onnxruntime.quantization import create_calibrator
    from onnxruntime.quantization.calibrate import save_tensors_data
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    op_types = sorted(set(QDQRegistry) | set(QLinearOpsRegistry))  # what quantize_static calibrates
    with tempfile.TemporaryDirectory(prefix="edgekit-calib-") as tmp, quiet_ort():
        calibrator = create_calibrator(Path(float_path), op_types, str(Path(tmp) / "augmented.onnx"), _method(method))
        step = max(1, min(CALIBRATION_BATCH, CALIBRATION_BYTES // max(1, calib[:1].nbytes)))
        for start in range(0, len(calib), step):
            calibrator.collect_data(ArrayReader(input_name, calib[start : start + step], min(batch, step)))
        save_tensors_data(calibrator.compute_data(), cache)
    return cache


def _quant_type(io_type: IOType):  # -> QuantType
    from onnxruntime.quantization import QuantType

    return QuantType.QUInt8 if io_type == IOType.UINT8 else QuantType.QInt8


def quantize_static_qdq(float_path: Path, out_path: Path, input_name: str, calib: np.ndarray, options: OnnxOptions,
                        method: str, keep_float: Sequence[str] = ()) -> Path:
    """QDQ model of ``float_path`` in the scheme ``options``, calibrated on ``calib`` with ``method``; the nodes
    named in ``keep_float`` stay float."""
    with tempfile.TemporaryDirectory(prefix="edgekit-quant-") as tmp:
        cache = calibrate(float_path, input_name, calib, method, Path(tmp) / "ranges.json", reader_batch(float_path))
        return _quantize(float_path, out_path, input_name, options, method, cache, keep_float)


def _quantize(float_path: Path, out_path: Path, input_name: str, options: OnnxOptions, method: str, cache: Path,
              keep_float: Sequence[str] = (), operators: bool = False) -> Path:
    """``quantize_static`` with the ranges in ``cache``: QDQ, or with ``operators`` the QOperator format
    (QLinearConv, QLinearAdd, ...: the same scales, the int8 kernels chosen when the model is written)."""
    from onnxruntime.quantization import QuantFormat, quantize_static

    out_path.parent.mkdir(parents=True, exist_ok=True)
    # The nodes reading the input stay float with ``float_input_layers`` (see OnnxOptions).
    if options.float_input_layers:
        graph = _load_graph(float_path)
        keep_float = [*keep_float, *(node.name for node in graph.node if input_name in node.input)]
    with quiet_ort():
        quantize_static(str(float_path), str(out_path), None,
                        quant_format=QuantFormat.QOperator if operators else QuantFormat.QDQ,
                        activation_type=_quant_type(options.activation_type),
                        weight_type=_quant_type(options.weight_type), per_channel=options.per_channel,
                        reduce_range=options.reduce_range, calibrate_method=_method(method),
                        calibration_cache_path=cache, nodes_to_exclude=list(keep_float))
    return out_path


def _pin_output(path: Path, quant: tuple[float, int]) -> None:
    """Make the graph output the int8 code with exactly ``quant`` (see the module docstring)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(path))
    graph = model.graph
    out_name = graph.output[0].name
    producer = next(n for n in graph.node if out_name in n.output)
    scale_name, zp_name = f"{out_name}_wire_scale", f"{out_name}_wire_zero_point"
    graph.initializer.extend([numpy_helper.from_array(np.array(quant[0], np.float32), scale_name),
                              numpy_helper.from_array(np.array(quant[1], np.int8), zp_name)])
    if producer.op_type == "DequantizeLinear":
        quantizer = next(n for n in graph.node if producer.input[0] in n.output)
        float_input = quantizer.input[0] if quantizer.op_type == "QuantizeLinear" else None
    else:
        quantizer, float_input = None, None
    if float_input is not None:
        graph.node.remove(producer)
        quantizer.input[1:] = [scale_name, zp_name]
        quantizer.output[0] = out_name
    else:
        renamed = f"{out_name}_float"
        producer.output[list(producer.output).index(out_name)] = renamed
        graph.node.append(helper.make_node("QuantizeLinear", [renamed, scale_name, zp_name], [out_name],
                                           name=f"{out_name}_wire_quantize"))
    graph.output[0].type.tensor_type.elem_type = TensorProto.INT8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def quantize_device_onnx(float_path: Path, out_path: Path, input_name: str, calib: np.ndarray,
                         code_quant: tuple[float, int], options: OnnxOptions = OnnxOptions(),
                         method: str = "minmax", timing_runs: int = 0,
                         accept: Callable[[Path], float] | None = None, min_agreement: float = 0.0) -> Path:
    """Static int8 device half whose output is the int8 code with ``code_quant``: QDQ; with ``timing_runs``,
    whichever of QDQ, QOperator and the float half (its output quantized to the code) runs fastest here.

    ONNX Runtime's int8 kernels are not always faster than its float ones: with per-channel uint8 weights
    (the exact U8U8 scheme) fused QDQ convolutions take a slow path, 8x slower than float on
    EfficientNet-Lite0's depthwise blocks, while the QOperator model of the same scales is faster than float
    (docs/convert.md). The three are timed batch-1, one thread, interleaved in this process; with ``accept``
    (a model file -> its top-1 agreement with the float model on calibration samples, never the held-out
    ones) the fastest whose agreement reaches ``min_agreement`` is chosen, else the most faithful. The choice
    and the figures are stored in the model (:func:`device_format`) for the report.
    """
    with tempfile.TemporaryDirectory(prefix="edgekit-quant-") as tmp:
        cache = calibrate(float_path, input_name, calib, method, Path(tmp) / "ranges.json", reader_batch(float_path))
        candidates = {"qdq": _quantize(float_path, Path(tmp) / "qdq.onnx", input_name, options, method, cache)}
        if timing_runs > 0:
            candidates["qoperator"] = _quantize(float_path, Path(tmp) / "qoperator.onnx", input_name, options, method,
                                                cache, operators=True)
            candidates["float"] = Path(shutil.copyfile(float_path, Path(tmp) / "float.onnx"))
        for path in candidates.values():
            _pin_output(path, code_quant)
        choice = _fastest(candidates, input_name, calib[:1], timing_runs, accept, min_agreement) \
            if timing_runs > 0 else None
        shutil.copyfile(candidates[choice["format"] if choice else "qdq"], out_path)
    if choice:
        _set_format(out_path, choice)
    return out_path


def _fastest(candidates: dict[str, Path], input_name: str, sample: np.ndarray, runs: int,
             accept: Callable[[Path], float] | None, min_agreement: float) -> dict[str, Any]:
    """The fastest format (median batch-1 ms, one thread) that keeps ``min_agreement`` by ``accept``, scored
    fastest first until one does; when none does, the one that agrees most."""
    import onnxruntime as ort

    sessions = {}
    for name, path in candidates.items():
        options = ort.SessionOptions()
        options.intra_op_num_threads = options.inter_op_num_threads = 1
        options.log_severity_level = 3
        sessions[name] = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    times: dict[str, list[float]] = {name: [] for name in sessions}
    for round_ in range(runs + 3):  # interleaved, so a busy machine slows every format alike; 3 warm-up rounds
        for name, session in sessions.items():
            start = time.perf_counter()
            session.run(None, {input_name: sample})
            if round_ >= 3:
                times[name].append((time.perf_counter() - start) * 1e3)
    median = {name: round(float(np.median(t)), 3) for name, t in times.items()}
    choice: dict[str, Any] = {"median_ms": median, "runs": runs, "threads": 1, "agreement_on_calibration": {},
                              "min_agreement": min_agreement if accept else None}
    for name in sorted(median, key=median.__getitem__):
        if accept is None:
            return {"format": name, **choice}
        choice["agreement_on_calibration"][name] = round(accept(candidates[name]), 4)
        if choice["agreement_on_calibration"][name] >= min_agreement:
            return {"format": name, **choice}
    scores = choice["agreement_on_calibration"]
    return {"format": max(scores, key=scores.__getitem__), **choice}


def agreement_scorer(x: np.ndarray, y_float: np.ndarray, server: Callable[[np.ndarray], np.ndarray],
                     code_quant: tuple[float, int]) -> Callable[[Path], float]:
    """A device model file -> the top-1 agreement of the path it would deploy (device model, dequantized code,
    ``server``) with the float model's outputs ``y_float`` on ``x``."""
    import onnxruntime as ort

    from edgekit.wire.spec import dequantize

    from .halves import batched
    from .parity import top1_agreement

    def score(path: Path) -> float:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        size = reader_batch(path)  # 1 for a static batch-1 export
        codes = batched(lambda batch: session.run(None, {name: batch})[0], size)(x)
        return top1_agreement(y_float, batched(server, size)(dequantize(codes, *code_quant)))

    return score


def _set_format(path: Path, choice: dict[str, Any]) -> None:
    import onnx

    model = onnx.load(str(path))
    prop = model.metadata_props.add()
    prop.key, prop.value = FORMAT_KEY, json.dumps(choice, sort_keys=True)
    onnx.save(model, str(path))


def device_format(path: Path) -> dict[str, Any] | None:
    """The format choice stored in an ONNX device model by :func:`quantize_device_onnx` (None: plain QDQ)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return next((json.loads(p.value) for p in model.metadata_props if p.key == FORMAT_KEY), None)


def export_server_onnx(float_path: Path, out_path: Path, precision: str, input_name: str,
                       calib_codes: np.ndarray, method: str = "minmax") -> Path:
    """Server half in ``precision``: the float export, fp16 weights (float32 I/O), or QDQ int8 (in the scheme
    that is exact on every CPU, as servers are often x86 without VNNI)."""
    import onnx

    if precision not in SERVER_PRECISIONS:
        raise UsageError(f"unknown server precision {precision!r}", f"choose one of {', '.join(SERVER_PRECISIONS)}")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    if precision == "int8":
        return quantize_static_qdq(float_path, out_path, input_name, calib_codes, OnnxOptions(), method)
    model = onnx.load(str(float_path))
    if precision == "fp16":
        from onnxruntime.transformers.float16 import convert_float_to_float16

        model = convert_float_to_float16(model, keep_io_types=True)
    onnx.save(model, str(out_path))
    return out_path

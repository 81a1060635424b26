"""ONNX halves: ONNX Runtime static quantization of the device half, precision options for the server half.

Device half: QDQ, int8 activations and weights (S8S8), per-channel by default, calibrated on the same
samples as TFLite. ORT leaves a QuantizeLinear→DequantizeLinear pair on the graph output; convert drops the
final DequantizeLinear and pins that QuantizeLinear to the wire quantization, so the ONNX device half
outputs the same int8 code (same scale and zero-point) as the TFLite one and one wire format holds.

    float ONNX ──quantize_static──► ... Q(code, s', z') → DQ → code(float)
               ──pin output──────► ... Q(code, s, z) → code(int8)      (s, z) = wire quantization
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Iterator

import numpy as np

from edgekit.errors import UsageError

__all__ = ["CALIBRATION_METHODS", "SERVER_PRECISIONS", "ArrayReader", "quiet_ort", "range_quant", "quantize_static_qdq",
           "quantize_device_onnx", "export_server_onnx", "reader_batch"]

CALIBRATION_METHODS = ("minmax", "entropy", "percentile")
SERVER_PRECISIONS = ("fp32", "fp16", "int8")


def range_quant(values: np.ndarray) -> tuple[float, int]:
    """Asymmetric int8 (scale, zero_point) covering ``values`` and 0, as TFLite calibrates activations."""
    low, high = min(float(values.min()), 0.0), max(float(values.max()), 0.0)
    scale = (high - low) / 255.0 or 1.0
    zero_point = int(np.clip(round(-128 - low / scale), -128, 127))
    return float(np.float32(scale)), zero_point


@contextlib.contextmanager
def quiet_ort() -> Iterator[None]:
    """ORT's quantizer logs 'consider pre-processing' on the root logger at every call."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def reader_batch(model_path: Path) -> int:
    """Calibration batch size for a model: 1 when its input has a static batch of 1 (as exported), else 16."""
    import onnx

    model = onnx.load(str(model_path), load_external_data=False)
    initializers = {i.name for i in model.graph.initializer}
    dims = next(i for i in model.graph.input if i.name not in initializers).type.tensor_type.shape.dim
    return 1 if dims and dims[0].HasField("dim_value") and dims[0].dim_value == 1 else 16


class ArrayReader:
    """CalibrationDataReader over an in-memory array, in small batches (single pass)."""

    def __init__(self, name: str, x: np.ndarray, batch: int = 16):
        self._batches = iter([{name: x[i : i + batch]} for i in range(0, len(x), batch)])

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


def quantize_static_qdq(float_path: Path, out_path: Path, input_name: str, calib: np.ndarray, per_channel: bool,
                        method: str) -> Path:
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    out_path.parent.mkdir(parents=True, exist_ok=True)
    with quiet_ort():
        quantize_static(str(float_path), str(out_path), ArrayReader(input_name, calib, reader_batch(float_path)),
                        quant_format=QuantFormat.QDQ,
                        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8, per_channel=per_channel,
                        calibrate_method=_method(method))
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
                         code_quant: tuple[float, int], per_channel: bool = True, method: str = "minmax") -> Path:
    """Static QDQ int8 device half whose output is the int8 code with ``code_quant``."""
    quantize_static_qdq(float_path, out_path, input_name, calib, per_channel, method)
    _pin_output(out_path, code_quant)
    return out_path


def export_server_onnx(float_path: Path, out_path: Path, precision: str, input_name: str,
                       calib_codes: np.ndarray, method: str = "minmax") -> Path:
    """Server half in ``precision``: the float export, fp16 weights (float32 I/O), or QDQ int8."""
    import onnx

    if precision not in SERVER_PRECISIONS:
        raise UsageError(f"unknown server precision {precision!r}", f"choose one of {', '.join(SERVER_PRECISIONS)}")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    if precision == "int8":
        return quantize_static_qdq(float_path, out_path, input_name, calib_codes, per_channel=True, method=method)
    model = onnx.load(str(float_path))
    if precision == "fp16":
        from onnxruntime.transformers.float16 import convert_float_to_float16

        model = convert_float_to_float16(model, keep_io_types=True)
    onnx.save(model, str(out_path))
    return out_path

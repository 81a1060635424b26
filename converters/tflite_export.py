"""Device half → TFLite: full-integer post-training quantization with the TF converter.

The model is re-traced with a static batch of 1 (what XNNPACK and NPU compilers run; edgekit's runners
loop over samples), calibrated on the representative samples, and converted with int8 weights and
activations and the I/O types the target profile asks for. The float TFLite of the same half is exported
too, as the size and latency baseline of the report.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from edgekit.errors import ConversionError

from .sources import import_tensorflow
from .targets import IOType, TfliteOptions

__all__ = ["TfliteModel", "export_tflite", "make_converter", "quiet_native", "tflite_ops", "float_operations",
           "describe_tflite"]


@dataclass(frozen=True)
class TfliteModel:
    path: Path
    input_dtype: str
    input_quant: tuple[float, int] | None
    code_dtype: str
    code_quant: tuple[float, int] | None


@contextlib.contextmanager
def quiet_native() -> Iterator[None]:
    """Silence what the TF converter prints to the process's stdout/stderr (C++ logs, 'Saved artifact')."""
    saved = [os.dup(1), os.dup(2)]
    with tempfile.TemporaryFile() as sink, contextlib.redirect_stdout(io.StringIO()):
        try:
            os.dup2(sink.fileno(), 1)
            os.dup2(sink.fileno(), 2)
            yield
        finally:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)


def _static_model(model: Any, input_shape: tuple[int, ...], input_name: str) -> Any:
    import keras

    inp = keras.Input(batch_shape=(1, *input_shape), name=input_name)
    return keras.Model(inp, model(inp), name=f"{model.name}_static")


def make_converter(model: Any, input_shape: tuple[int, ...], input_name: str, calib: np.ndarray | None,
                   options: TfliteOptions | None) -> Any:
    """A configured ``TFLiteConverter``; ``options`` None gives the float baseline."""
    tf = import_tensorflow()
    converter = tf.lite.TFLiteConverter.from_keras_model(_static_model(model, input_shape, input_name))
    if options is None:
        return converter
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([calib[i : i + 1]] for i in range(len(calib)))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = {IOType.FLOAT32: tf.float32, IOType.INT8: tf.int8, IOType.UINT8: tf.uint8}[
        options.input_type]
    converter.inference_output_type = tf.uint8 if options.output_type == IOType.UINT8 else tf.int8
    converter._experimental_disable_per_channel = not options.per_channel  # per-tensor for the VX delegate
    return converter


def _failing_ops(message: str) -> list[str]:
    ops = re.findall(r"'(?:tf|tfl)\.([A-Za-z0-9_]+)'", message) + re.findall(r"op '([A-Za-z0-9_.]+)'", message)
    return sorted(set(ops))


def export_tflite(model: Any, input_shape: tuple[int, ...], input_name: str, calib: np.ndarray | None,
                  options: TfliteOptions | None, path: Path, target: str = "float") -> TfliteModel:
    """Convert and write ``path``; ConversionError naming the ops when full-integer conversion fails."""
    converter = make_converter(model, input_shape, input_name, calib, options)
    try:
        with quiet_native():
            flatbuffer = converter.convert()
    except Exception as err:  # the converter raises ConverterError/RuntimeError with MLIR diagnostics
        ops = _failing_ops(str(err))
        what = f"ops {', '.join(ops)}" if ops else str(err).strip().splitlines()[0][:160]
        raise ConversionError(f"target {target}: TFLite int8 conversion of the device half failed at {what}",
                              "replace those ops with int8-capable ones (Conv/Dense/ReLU/pooling) or pick another target") from None
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(flatbuffer)
    return describe_tflite(path)


def _interpreter(path: Path) -> Any:
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    return Interpreter(model_path=str(path),
                       experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)


def describe_tflite(path: Path) -> TfliteModel:
    """I/O dtypes and quantization of a TFLite device half, read back from the file."""
    interpreter = _interpreter(path)
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]

    def quant(detail: dict) -> tuple[float, int] | None:
        scale, zero_point = detail["quantization"]
        return (float(scale), int(zero_point)) if np.dtype(detail["dtype"]).kind in "iu" and scale > 0 else None

    return TfliteModel(path, np.dtype(inp["dtype"]).name, quant(inp), np.dtype(out["dtype"]).name, quant(out))


def tflite_ops(path: Path) -> list[dict[str, Any]]:
    """The operators of a TFLite model in execution order, with their tensors' dtypes and shapes."""
    interpreter = _interpreter(path)
    tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
    ops = []
    for op in interpreter._get_ops_details():
        io = [tensors[i] for i in (*op["inputs"], *op["outputs"]) if i >= 0 and i in tensors]
        # Activations: the first input and the outputs (weights and biases are the other inputs).
        activations = [tensors[i] for i in (*op["inputs"][:1], *op["outputs"]) if i >= 0 and i in tensors]
        ops.append({
            "index": op["index"],
            "op": op["op_name"],
            "output": tensors[op["outputs"][0]]["name"] if len(op["outputs"]) else "",
            "dtypes": sorted({np.dtype(t["dtype"]).name for t in io}),
            "activation_shapes": [[int(d) for d in t["shape"]] for t in activations],
        })
    return ops


def float_operations(path: Path) -> list[dict[str, Any]]:
    """Ops the converter left in float (no int8 kernel): they run between DEQUANTIZE/QUANTIZE on the CPU."""
    return [op for op in tflite_ops(path)
            if "float32" in op["dtypes"] and op["op"] not in ("QUANTIZE", "DEQUANTIZE")]

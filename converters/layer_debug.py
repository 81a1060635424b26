"""Per-layer quantization error, to name the layers to look at when parity is poor (``--debug-layers``).

TFLite: ``tf.lite.experimental.QuantizationDebugger`` runs float and int8 side by side; a layer's error is
its RMSE in units of its own quantization step (≈0.29 is plain rounding; much more means the range is
poorly calibrated). ONNX: ONNX Runtime's ``qdq_loss_debug`` compares every activation of the QDQ model
(quantized in the device model's scheme) with the float one; the error is reported as SQNR in dB (lower
is worse).

Why an ONNX layer's SQNR can be higher than the report's code SQNR: ``qdq_loss_debug`` runs the QDQ model
unfused (``ORT_DISABLE_ALL``: every op in float between DequantizeLinear/QuantizeLinear), so it matches
the *reference* code SQNR of the parity table, not the deployed one, which runs ORT's fused int8 kernels.
When the two code SQNRs differ, the fused kernels saturate (x86 without VNNI) and no layer is to blame.
"""

from __future__ import annotations

import csv
import io
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from .onnx_quant import quiet_ort, ArrayReader, quantize_static_qdq, reader_batch
from .targets import OnnxOptions, TfliteOptions
from .tflite_export import make_converter, quiet_native

__all__ = ["tflite_layer_errors", "onnx_layer_errors"]


def tflite_layer_errors(model: Any, input_shape: tuple[int, ...], input_name: str, calib: np.ndarray,
                        options: TfliteOptions, samples: np.ndarray, top: int = 5) -> list[dict[str, Any]]:
    """Worst TFLite layers by RMSE / quantization scale."""
    from .sources import import_tensorflow

    tf = import_tensorflow()
    converter = make_converter(model, input_shape, input_name, calib, options)
    dataset = lambda: ([samples[i : i + 1]] for i in range(len(samples)))  # noqa: E731
    with quiet_native():
        debugger = tf.lite.experimental.QuantizationDebugger(converter=converter, debug_dataset=dataset)
        debugger.run()
    dump = io.StringIO()
    debugger.layer_statistics_dump(dump)
    rows = []
    for row in csv.DictReader(io.StringIO(dump.getvalue())):
        scale = float(row["scale"]) or 1.0
        rows.append({"layer": row["tensor_name"], "op": row.get("op_name", ""),
                     "rmse_over_scale": round(float(np.sqrt(float(row["mean_squared_error"]))) / scale, 4)})
    return sorted(rows, key=lambda r: -r["rmse_over_scale"])[:top]


def onnx_layer_errors(float_path: Path, input_name: str, calib: np.ndarray, options: OnnxOptions, method: str,
                      samples: np.ndarray, top: int = 5) -> list[dict[str, Any]]:
    """Worst ONNX activations by SQNR between the QDQ (unfused reference kernels) and float models."""
    from onnxruntime.quantization.qdq_loss_debug import (collect_activations, compute_activation_error,
                                                         create_activation_matching,
                                                         modify_model_output_intermediate_tensors)

    with tempfile.TemporaryDirectory() as tmp, quiet_ort():
        tmp_dir = Path(tmp)
        qdq = quantize_static_qdq(float_path, tmp_dir / "qdq.onnx", input_name, calib, options, method)
        float_aug, qdq_aug = tmp_dir / "float_aug.onnx", tmp_dir / "qdq_aug.onnx"
        modify_model_output_intermediate_tensors(str(float_path), str(float_aug))
        modify_model_output_intermediate_tensors(str(qdq), str(qdq_aug))
        batch = reader_batch(float_path)
        float_acts = collect_activations(str(float_aug), ArrayReader(input_name, samples, batch))
        qdq_acts = collect_activations(str(qdq_aug), ArrayReader(input_name, samples, batch))
        errors = compute_activation_error(create_activation_matching(qdq_acts, float_acts))
    rows = [{"layer": name, "sqnr_db": round(float(err.get("xmodel_err", err.get("qdq_err", np.inf))), 3)}
            for name, err in errors.items()]
    return sorted(rows, key=lambda r: r["sqnr_db"])[:top]

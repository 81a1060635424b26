"""Per-layer quantization error, to name the layers to look at when parity is poor (``--debug-layers``).

TFLite: ``tf.lite.experimental.QuantizationDebugger`` runs float and int8 side by side; a layer's error is
its RMSE in units of its own quantization step (≈0.29 is plain rounding; much more means the range is
poorly calibrated). ONNX: ONNX Runtime's ``qdq_loss_debug`` models compare every activation of the QDQ
model (quantized in the device model's scheme) with the float one, a few samples at a time; each tensor is
reported with its SQNR in dB against the float model and ranked by the dB it loses against its inputs (the
layer that loses accuracy, not merely the deepest one: on EfficientNet-Lite0 the first depthwise block's
output loses 26 dB, every other layer under 6 dB).

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
from typing import Any, Callable

import numpy as np

from .onnx_quant import quiet_ort, quantize_static_qdq, reader_batch
from .targets import OnnxOptions, TfliteOptions
from .tflite_export import make_converter, quiet_native

__all__ = ["tflite_layer_errors", "onnx_layer_errors"]

DEBUG_BATCH = 4  # samples per run: every intermediate activation of the batch is in memory at once


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
                      samples: np.ndarray, top: int = 5, exclude: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """Worst ONNX activations by the SQNR they lose against their inputs (``drop_db``, see :func:`_drops`),
    with their SQNR against the float model (``sqnr_db``: the error accumulated up to them), both on the
    unfused reference kernels.

    Streams: both models run one small batch at a time and only each tensor's signal and noise energy is
    kept. ORT's ``collect_activations`` keeps every intermediate tensor of every sample instead (8-10 GB
    for 64 samples of a 224x224 EfficientNet-Lite device half); the SQNR is the same sum either way.
    """
    from onnxruntime.quantization.qdq_loss_debug import (create_activation_matching,
                                                         modify_model_output_intermediate_tensors)

    energy: dict[str, np.ndarray] = {}  # tensor -> [signal, noise]
    with tempfile.TemporaryDirectory() as tmp, quiet_ort():
        tmp_dir = Path(tmp)
        qdq = quantize_static_qdq(float_path, tmp_dir / "qdq.onnx", input_name, calib, options, method, exclude)
        float_aug, qdq_aug = tmp_dir / "float_aug.onnx", tmp_dir / "qdq_aug.onnx"
        modify_model_output_intermediate_tensors(str(float_path), str(float_aug))
        modify_model_output_intermediate_tensors(str(qdq), str(qdq_aug))
        float_run, qdq_run = _activations(float_aug), _activations(qdq_aug)
        batch = min(reader_batch(float_path), DEBUG_BATCH)
        for start in range(0, len(samples), batch):
            feed = {input_name: samples[start : start + batch]}
            _add_energy(energy, create_activation_matching(qdq_run(feed), float_run(feed)))
    sqnr = {name: _db(signal, noise) for name, (signal, noise) in energy.items()}
    drops = _drops(float_path, sqnr)
    rows = [{"layer": name, "drop_db": round(drops[name], 3), "sqnr_db": round(value, 3)} for name, value in sqnr.items()]
    return sorted(rows, key=lambda r: -r["drop_db"])[:top]


def _drops(float_path: Path, sqnr: dict[str, float]) -> dict[str, float]:
    """How many dB of SQNR each tensor loses against the tensors it is computed from (the nearest measured
    ones upstream): the error its own layer adds. The SQNR against the float model accumulates, so ranking
    by it names the deepest layers, not the guilty ones; nor can a tensor be compared with itself before its
    QuantizeLinear, since ORT folds a Relu/Clip into that quantization (the 'error' would be the clipping).
    A tensor computed from unquantized inputs is measured against the best SQNR any tensor reaches here."""
    import onnx

    graph = onnx.load(str(float_path), load_external_data=False).graph
    constants = {i.name for i in graph.initializer}
    producers = {out: [i for i in node.input if i and i not in constants] for node in graph.node for out in node.output}
    best = max((v for v in sqnr.values() if np.isfinite(v)), default=0.0)

    def upstream(name: str, seen: set[str]) -> float:
        values = []
        for source in producers.get(name, []):
            if source in sqnr:
                values.append(sqnr[source])
            elif source not in seen:
                seen.add(source)
                values.append(upstream(source, seen))
        return min(values, default=best)

    return {name: min(upstream(name, set()), best) - value for name, value in sqnr.items()}


def _activations(augmented: Path) -> Callable[[dict[str, np.ndarray]], dict[str, list[np.ndarray]]]:
    """A function from one input batch to {tensor: [its value]} for a model augmented by
    ``modify_model_output_intermediate_tensors``, run unfused as ORT's ``collect_activations`` does."""
    import onnxruntime as ort
    from onnxruntime.quantization.qdq_loss_debug import _TENSOR_SAVE_POSTFIX

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(str(augmented), options, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]

    def run(feed: dict[str, np.ndarray]) -> dict[str, list[np.ndarray]]:
        return {name.removesuffix(_TENSOR_SAVE_POSTFIX): [value] for name, value in zip(names, session.run(None, feed))
                if name.endswith(_TENSOR_SAVE_POSTFIX)}

    return run


def _add_energy(energy: dict[str, np.ndarray], matching: dict[str, dict[str, list[np.ndarray]]]) -> None:
    """Accumulate per tensor the float model's energy and that of its difference to the QDQ model's value."""
    for name, match in matching.items():
        reference, post = match.get("float", match.get("pre_qdq")), match.get("post_qdq")
        if reference is None or post is None:
            continue
        ref, post64 = reference[0].astype(np.float64), post[0].astype(np.float64)
        energy.setdefault(name, np.zeros(2))[:] += (np.sum(ref**2), np.sum((ref - post64) ** 2))


def _db(signal: float, noise: float) -> float:
    """SQNR in dB as ORT's ``compute_signal_to_quantization_noice_ratio`` (norms floored at float eps)."""
    eps = float(np.finfo(np.float64).eps)
    return 20.0 * float(np.log10(max(np.sqrt(signal), eps) / max(np.sqrt(noise), eps)))

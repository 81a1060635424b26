"""Simplify an exported ONNX graph before it is cut: fold what the exporter computed at run time.

Exporters write shape arithmetic into the graph: ``x.view(x.size(0), -1)`` becomes
Shape→Gather→Unsqueeze→Concat→Reshape, and a channel zero-pad becomes a chain of Constant/Slice/Concat/Cast
nodes computing the Pad amounts. Such chains make every cut look crossed (the server half would read the
input's shape) and hide static shapes from ONNX shape inference. ONNX Runtime's *basic* offline optimization
folds them (constant folding, redundant-node elimination, reshape fusion) and keeps the model in standard
ONNX ops; it does not fuse a node whose output is a graph output, so the tensors convert must keep (the
split the user named) are made graph outputs while it runs and their names survive.

    model.onnx ──(keep as outputs)──► ORT_ENABLE_BASIC, optimized_model_filepath ──► drop the extra outputs,
        unused opset imports ──► shape inference ──► simplified.onnx

The result is checked against the source on real samples later (:func:`check_same_outputs`), once convert
has read them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from edgekit.errors import ConversionError

from .sources import load_onnx

__all__ = ["simplify_onnx", "check_same_outputs"]


def _with_outputs(model: Any, keep: Sequence[str]) -> list[str]:
    """Add ``keep`` tensors as graph outputs (ORT fuses no node that produces one); the names added."""
    from onnx import helper

    present = {o.name for o in model.graph.output}
    added = [name for name in dict.fromkeys(keep) if name not in present]
    model.graph.output.extend(helper.make_empty_tensor_value_info(name) for name in added)
    return added


def _drop_unused_opsets(model: Any) -> None:
    """ORT's saved model imports every domain it knows; keep the default domain and those nodes use."""
    used = {node.domain for node in model.graph.node} | {""}
    kept = [op for op in model.opset_import if op.domain in used]
    del model.opset_import[:]
    model.opset_import.extend(kept)


def simplify_onnx(model_path: Path, out_path: Path, keep: Sequence[str] = ()) -> Any:
    """Fold the exporter's run-time shape arithmetic; tensors named in ``keep`` keep their names. Returns the model."""
    import onnx
    import onnxruntime as ort

    model = load_onnx(model_path)
    added = _with_outputs(model, keep)
    pinned = out_path.with_name(f"{out_path.stem}.pinned.onnx")
    onnx.save(model, str(pinned))
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = str(out_path)
    options.log_severity_level = 3
    try:
        ort.InferenceSession(str(pinned), options, providers=["CPUExecutionProvider"])
    except Exception as err:  # ORT raises its own exception types for graphs it cannot load
        raise ConversionError(f"ONNX Runtime cannot load {model_path.name}: {str(err).splitlines()[0][:200]}",
                              "check the export runs in ONNX Runtime (opset, custom ops)") from None
    finally:
        pinned.unlink(missing_ok=True)
    simplified = onnx.load(str(out_path))
    outputs = [o for o in simplified.graph.output if o.name not in added]
    del simplified.graph.output[:]
    simplified.graph.output.extend(outputs)
    _drop_unused_opsets(simplified)
    del simplified.graph.value_info[:]
    simplified = onnx.shape_inference.infer_shapes(simplified)
    onnx.checker.check_model(simplified)
    onnx.save(simplified, str(out_path))
    return simplified


def check_same_outputs(source: Callable[[np.ndarray], np.ndarray], cut: Callable[[np.ndarray], np.ndarray],
                       x: np.ndarray, tolerance: float = 1e-4) -> float:
    """The simplified, cut model must compute what the source does on real samples; the relative max error.

    Folding and fusing may reorder float arithmetic, so outputs may differ by rounding (the ResNet20 exports
    come out bit-identical); a larger difference means the simplification changed the model, and convert
    stops rather than ship it.
    """
    expected, got = np.asarray(source(x), np.float32), np.asarray(cut(x), np.float32)
    error = float(np.max(np.abs(expected - got)) / max(float(np.max(np.abs(expected))), 1e-12))
    if not np.isfinite(error) or error > tolerance:
        raise ConversionError(f"the simplified, cut ONNX model differs from the source by {error:.2e} (relative) on "
                              f"{len(x)} calibration samples", "report this model to the edgekit maintainers; as a "
                              "workaround pass the two halves cut by hand with --device-model/--server-model")
    return error

"""Int8 sentence encoders with ONNX Runtime: dynamic and static quantization, both measured, one chosen.

    float encoder (batch 1) ──quantize_dynamic──► int8 weights, activations quantized per call
                            ──quantize_static───► QDQ, activation ranges calibrated on sentences
    each ──► cosine with the float embedding on held-out sentences ──► the higher mean cosine wins

Weights are int8 per output channel in both (per-tensor weights cost MiniLM 2.5 points of mean cosine).
Dynamic quantization needs no calibration and adapts to each sentence's activation range, which suits
transformers (their activations have outliers that vary by input); static quantization fixes the ranges
but lets every kernel stay int8. Which keeps the embedding closer is measured, not assumed: both are
reported (report.json ``text.quantization``) and the better one deployed.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from edgekit.text import cosine

from .onnx_quant import quiet_ort

__all__ = ["QUANT_METHODS", "quantize_encoder", "choose_quantization"]

log = logging.getLogger(__name__)
QUANT_METHODS = ("dynamic", "static")
# MatMuls carry nearly all of a transformer's compute and weights; static activation ranges on Add, Softmax
# or LayerNorm outputs (outliers) cost far more accuracy than they save time.
_STATIC_OPS = ["MatMul"]


class _IdsReader:
    """ONNX Runtime calibration reader: one tokenized sentence per call (the device model's batch of 1)."""

    def __init__(self, batches: Sequence[np.ndarray]):
        self._items = iter([{"input_ids": ids} for ids in batches])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._items, None)


def quantize_encoder(float_path: Path, out: Path, method: str, calib_ids: Sequence[np.ndarray]) -> Path:
    """Write the int8 encoder (``method``: dynamic or static) of the batch-1 float encoder at ``float_path``."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static

    with quiet_ort():
        if method == "dynamic":
            quantize_dynamic(str(float_path), str(out), weight_type=QuantType.QInt8, per_channel=True)
        else:
            quantize_static(str(float_path), str(out), _IdsReader(calib_ids), quant_format=QuantFormat.QDQ,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True,
                            op_types_to_quantize=_STATIC_OPS)
    return out


def choose_quantization(float_path: Path, scratch: Path, calib_ids: Sequence[np.ndarray],
                        heldout_ids: Sequence[np.ndarray], reference: np.ndarray,
                        embed: Callable[[Path, Sequence[np.ndarray]], np.ndarray]) -> tuple[str, Path, dict[str, Any]]:
    """Quantize both ways, embed ``heldout_ids`` with each (``embed(model, ids)``), keep the one whose mean
    cosine with ``reference`` (the float embeddings) is higher. Returns (method, path, per-method figures)."""
    figures, paths = {}, {}
    for method in QUANT_METHODS:
        paths[method] = quantize_encoder(float_path, scratch / f"encoder_int8_{method}.onnx", method, calib_ids)
        cos = cosine(embed(paths[method], heldout_ids), reference)
        figures[method] = {"cosine_mean": round(float(cos.mean()), 6), "cosine_min": round(float(cos.min()), 6),
                           "bytes": paths[method].stat().st_size}
        log.info("%s int8 quantization: mean cosine %.4f (min %.4f) with the float encoder on %d sentences",
                 method, cos.mean(), cos.min(), len(heldout_ids))
    chosen = max(QUANT_METHODS, key=lambda m: figures[m]["cosine_mean"])
    return chosen, paths[chosen], figures

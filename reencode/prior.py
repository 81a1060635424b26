"""The entropic re-encoder's learned prior as probabilities of the int8 wire levels (numpy only).

Training rounds the code to integers ``v`` and models them per channel with a logistic density:
``P(v) = sigmoid((v + 0.5 - loc) / scale) - sigmoid((v - 0.5 - loc) / scale)``. On the wire a code value
``v`` travels as the int8 level ``q = round(v / s) + z`` of the wire quantization (s, z); convert gives the
entropic code s = 1, z = 0 (its FakeQuant range), so ``q = v``, but any (s, z) maps soundly: levels no
integer lands on get no mass. Levels whose probability is negligible in every channel are left to the ans
escape symbol (their mass is the escape's), which keeps the alphabet, and the frequency tables, small.

The same density is the training's rate term (:func:`logistic_bits`), written once for Keras and PyTorch:
it takes the tensor library's ops (``keras.ops``, or the PyTorch namespace in torch_layers.py).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["CODE_MIN", "CODE_MAX", "integer_pmf", "wire_pmf", "logistic_bits", "prior_record"]

CODE_MIN, CODE_MAX = -128.0, 127.0  # the integers an entropic code takes: the int8 wire levels at scale 1
_NEGLIGIBLE = 1e-6
_MIN_PROB = 1e-9  # floor of a training probability: an outlier costs ~30 bits, not infinity


def logistic_bits(ops: Any, code: Any, loc: Any, log_scale: Any, keep: Any = None) -> Any:
    """Bits per sample (batch,) of a channel-last ``code`` under the per-channel logistic prior (loc, log
    scale): ``-log2(CDF(v + 1/2) - CDF(v - 1/2))`` summed over each sample. ``ops`` is the tensor library's
    namespace (mean, sum, exp, log, sigmoid, maximum as in ``keras.ops``), so both frameworks train the same rate.
    ``keep`` (broadcast to the code, 1 or 0) counts only the channels a nested code's level sends."""
    scale = ops.exp(log_scale)
    upper = ops.sigmoid((code + 0.5 - loc) / scale)
    lower = ops.sigmoid((code - 0.5 - loc) / scale)
    bits = -ops.log(ops.maximum(upper - lower, _MIN_PROB)) / math.log(2.0)
    if keep is not None:
        bits = bits * keep
    return ops.sum(bits, axis=tuple(range(1, len(code.shape))))


def prior_record(loc: np.ndarray, log_scale: np.ndarray) -> dict[str, Any]:
    """The learned prior as the model's record stores it (read back by :func:`integer_pmf`)."""
    return {"family": "logistic", "levels": [int(CODE_MIN), int(CODE_MAX)], "axis": -1,
            "loc": [float(v) for v in np.asarray(loc)],
            "scale": [float(v) for v in np.exp(np.asarray(log_scale, np.float64))]}


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def integer_pmf(prior: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """(values -128..127, probabilities (C, 256)) of the learned prior (the two end levels take the tails)."""
    values = np.arange(-128, 128, dtype=np.float64)
    loc = np.asarray(prior["loc"], np.float64)[:, None]
    scale = np.asarray(prior["scale"], np.float64)[:, None]
    upper = _sigmoid((values + 0.5 - loc) / scale)
    lower = _sigmoid((values - 0.5 - loc) / scale)
    upper[:, -1], lower[:, 0] = 1.0, 0.0
    return values.astype(np.int64), upper - lower


def wire_pmf(prior: dict[str, Any], wire_quant: tuple[float, int]) -> tuple[int, np.ndarray]:
    """``(lo, pmf)``: ``pmf[c, i]`` is the probability of int8 level ``lo + i`` in channel c, the last
    column the mass left to the ans escape (levels outside lo..hi)."""
    values, pmf = integer_pmf(prior)
    scale, zero_point = wire_quant
    levels = np.clip(np.round(values / scale) + zero_point, -128, 127).astype(np.int64)
    by_level = np.zeros_like(pmf)
    for c in range(len(pmf)):
        np.add.at(by_level[c], levels + 128, pmf[c])
    used = np.flatnonzero(by_level.max(axis=0) > _NEGLIGIBLE)
    lo, hi = int(used.min()) - 128, int(used.max()) - 128
    inside = by_level[:, lo + 128: hi + 129]
    escape = np.clip(1.0 - inside.sum(axis=1, keepdims=True), 0.0, None)
    return lo, np.concatenate([inside, escape], axis=1)

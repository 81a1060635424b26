"""The model cut at its code, in the one shape the rest of convert works with, whatever the source format.

    source ──split──► Halves: device half (Keras for TFLite, float ONNX file)   input → code
                              server half (float ONNX file)                    code  → output
                              reference(x) = float model, device_float(x) = float code
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from edgekit.errors import ConversionError, UsageError

__all__ = ["Halves", "nearest_names_error", "crossing_error", "batched"]

Shape = tuple[int | None, ...]


@dataclass
class Halves:
    """Everything convert needs from a split model. Shapes exclude the batch axis (None = dynamic)."""

    source_format: str
    split: str
    input_name: str
    input_shape: Shape
    code_name: str
    code_shape: Shape
    output_name: str
    output_shape: Shape
    device_onnx: Path
    server_onnx: Path
    reference: Callable[[np.ndarray], np.ndarray]
    device_float: Callable[[np.ndarray], np.ndarray]
    device_keras: Any | None = None  # None: no TF graph, so no TFLite
    device_torch: Any | None = None  # a .pt2 source's device half (torch_tflite.TorchDeviceHalf): TFLite via litert-torch
    # Checks the cut halves still compute the source model on real samples (ConversionError if not); set
    # when the source graph was rewritten before cutting (ONNX simplification).
    verify: Callable[[np.ndarray], Any] | None = None

    def static_input_shape(self, x: np.ndarray) -> tuple[int, ...]:
        """The input shape with dynamic dimensions taken from real samples (TFLite needs static shapes)."""
        return tuple(int(s) if d is None else int(d) for d, s in zip(self.input_shape, x.shape[1:]))


def nearest_names_error(name: str, valid: Sequence[str], what: str,
                        cut_points: Mapping[str, str] | None = None) -> UsageError:
    """Unknown split name: list the closest valid ones so the user can copy the right one.

    ``cut_points`` (name → shape and bytes) are the real activations a cut works at; they are suggested
    before other names (an exported graph has many Shape/Constant tensors that are no use as a code).
    """
    cut_points = cut_points or {}
    close = difflib.get_close_matches(name, list(cut_points), n=5, cutoff=0.0)
    others = [v for v in valid if v not in cut_points]
    close += difflib.get_close_matches(name, others, n=5 - len(close), cutoff=0.0) if len(close) < 5 and others else []
    listed = [f"{n} ({cut_points[n]})" if n in cut_points else n for n in close]
    more = "; edgekit convert --list-splits MODEL lists every cut point" if cut_points else ""
    return UsageError(f"split {name!r} is not a {what} of the model",
                      f"nearest valid names: {', '.join(listed) if listed else '(none)'}{more}")


def crossing_error(split: str, crossing: Sequence[str], why: str = "",
                   fix: str = "choose a split point every path to the output goes through (a bottleneck), or merge "
                              "the branches first") -> ConversionError:
    """``why`` says what reads the crossing tensors after the cut, when the source format can tell."""
    return ConversionError(
        f"cannot split at {split!r}: tensors {', '.join(sorted(crossing))} cross the cut into the server half"
        + (f" ({why})" if why else ""), fix)


def batched(fn: Callable[[np.ndarray], np.ndarray], batch: int = 256,
            chunk_bytes: int = 4 << 20) -> Callable[[np.ndarray], np.ndarray]:
    """Run ``fn`` in chunks of at most ``batch`` samples and ``chunk_bytes`` of input (bounded memory for
    10k-sample evaluations and for 224x224 inputs, whose activations are many times the input: ONNX Runtime
    keeps each session's largest; with 16 MiB chunks, 27 images, convert's parity step on EfficientNet-Lite0
    peaked 1.1 GB above the samples it holds)."""

    def run(x: np.ndarray) -> np.ndarray:
        size = max(1, min(batch, chunk_bytes // max(1, x[:1].nbytes)))
        return np.concatenate([np.asarray(fn(x[i : i + size])) for i in range(0, len(x), size)])

    return run

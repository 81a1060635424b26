"""Sentences to embeddings with any runner that takes token ids: the converter's float and int8 encoders,
the server's float encoder for its documents.

``run`` is a callable from int64 ids (N, S) to float32 (N, D), e.g. ``edgekit.runtime.open_device_runner(
bundle.path / "server/encoder_fp32.onnx").run``; keeping the runner outside keeps this room free of any
runtime, so the device, the server and the converter share it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from edgekit.text.tokenize import Tokenizer

__all__ = ["Embedder", "cosine"]


@dataclass
class Embedder:
    """Tokenize and run in batches. ``batch`` 1 runs sentence by sentence, unpadded, as a device does."""

    tokenizer: Tokenizer
    run: Callable[[np.ndarray], np.ndarray]
    batch: int = 32

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """float32 (N, D) for N texts (sorted by length inside, so batches carry little padding)."""
        order = np.argsort([len(t) for t in texts], kind="stable")
        out: list[np.ndarray] = [np.empty(0)] * len(texts)
        for start in range(0, len(texts), self.batch):
            rows = order[start : start + self.batch]
            embedded = np.asarray(self.run(self.tokenizer.encode_batch([texts[i] for i in rows]).ids), np.float32)
            for row, vector in zip(rows, embedded):
                out[row] = vector
        return np.stack(out) if out else np.zeros((0, 0), np.float32)


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of two (N, D) arrays."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return np.sum(a * b, axis=1) / np.maximum(norms, 1e-12)

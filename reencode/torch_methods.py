"""Re-encoders for PyTorch programs, built from the same fits as for Keras and ONNX (pca.py), as torch modules.

PCA's projection is the same at every position: a 1×1 convolution on NCHW features (channels on axis 1), a
``Linear`` on the last axis otherwise ((N, C) vectors, (N, T, C) token features).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgekit.converters.torch_export import import_torch

from .inputs import load_inputs
from .metadata import make_record
from .pca import choose_channels, fit_pca
from .torch_graph import cut_program, save_reencoded

__all__ = ["pca_torch"]


def _channel_map(torch: Any, weight: np.ndarray, bias: np.ndarray, axis: int) -> Any:
    """``y = x @ weight + bias`` over the channel axis: (C_in, C_out) weights as a 1×1 conv or a Linear."""
    c_in, c_out = weight.shape
    layer = torch.nn.Conv2d(c_in, c_out, 1) if axis == 1 else torch.nn.Linear(c_in, c_out)
    shaped = weight.T[:, :, None, None] if axis == 1 else weight.T
    with torch.no_grad():
        layer.weight.copy_(torch.from_numpy(np.ascontiguousarray(shaped, np.float32)))
        layer.bias.copy_(torch.from_numpy(np.ascontiguousarray(bias, np.float32)))
    return layer


def pca_torch(model_path: Path, split: str, data: Any, output: Path, channels: int | None,
              target_agreement: float | None, preprocessing: Any, max_samples: int | None
              ) -> tuple[Path, dict[str, Any]]:
    """Fit PCA on the features at node ``split`` and save the program with the projection in the cut; returns
    the output path and the record stored in it."""
    torch = import_torch()
    cut = cut_program(model_path, split)
    shape = tuple(int(d) for d in cut.example.shape)
    x, _ = load_inputs(data, "x", shape[1:], preprocessing, max_samples)
    features = cut.features(x)
    axis = 1 if features.ndim == 4 else -1
    pca = fit_pca(features, axis)
    settings = choose_channels(pca, features, cut.output, channels, target_agreement, axis)
    k = settings["channels"]
    encoder = _channel_map(torch, *pca.encoder(k), axis)
    decoder = _channel_map(torch, *pca.decoder(k), axis)
    record = save_reencoded(cut, encoder, decoder, output, make_record("pca", model_path, split, settings))
    return output, record

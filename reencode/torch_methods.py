"""Re-encoders for PyTorch programs, built from the same fits and recipe as for Keras, as torch modules.

    pca                fit_pca (pca.py), the projection the same at every position: a 1×1 convolution on
                       NCHW features (channels on axis 1), a ``Linear`` on the last axis otherwise
    distill, entropic  trained.py's recipe (losses, rate, stages, loop) on torch_layers.py's modules, stepped
                       by torch_training.py; the teacher's head frozen, its tail too unless ``train_tail``
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np

from edgekit.converters.torch_export import import_torch

from .inputs import load_inputs
from .metadata import make_record
from .pca import choose_channels, fit_pca
from .torch_graph import TorchCut, cut_program, save_reencoded
from .trained import Student, TrainOptions, check_features, fit, input_pixels, record_settings

__all__ = ["pca_torch", "trained_torch"]


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
    x, _ = _inputs(cut, data, preprocessing, max_samples)
    features = cut.features(x)
    axis = 1 if features.ndim == 4 else -1
    pca = fit_pca(features, axis)
    settings = choose_channels(pca, features, cut.output, channels, target_agreement, axis)
    k = settings["channels"]
    encoder = _channel_map(torch, *pca.encoder(k), axis)
    decoder = _channel_map(torch, *pca.decoder(k), axis)
    record = save_reencoded(cut, encoder, decoder, output, make_record("pca", model_path, split, settings))
    return output, record


def _inputs(cut: TorchCut, data: Any, preprocessing: Any, max_samples: int | None, seed: int = 0
            ) -> tuple[np.ndarray, np.ndarray | None]:
    """The program's inputs (and labels) from DATA, read as convert reads calibration data."""
    return load_inputs(data, "x", tuple(int(d) for d in cut.example.shape[1:]), preprocessing, max_samples, seed)


def trained_torch(model_path: Path, split: str, method: str, data: Any, output: Path, options: TrainOptions,
                  labels: np.ndarray | None, resume: bool, preprocessing: Any, max_samples: int | None,
                  progress: bool, echo: Callable[[str], None] | None
                  ) -> tuple[Path, dict[str, Any], list[dict[str, Any]]]:
    """Distill (``method='distill'``) or rate-train (``'entropic'``) an encoder/decoder at node ``split``, in
    PyTorch; save the program with it in the cut. Returns the output path, the record and the history."""
    torch = import_torch()
    from .torch_layers import TORCH_OPS, IntegerCode, LogisticPrior, conv_decoder, conv_encoder
    from .torch_training import TorchTrainer

    cut = cut_program(model_path, split)
    x, y = _inputs(cut, data, preprocessing, max_samples, options.seed)
    y = y if labels is None else np.asarray(labels, np.int64)
    features = cut.features(x)
    feature_channels = check_features(features.shape[1:], split, options.downsample, channels_first=True)[2]
    torch.manual_seed(options.seed)
    hidden = options.hidden or feature_channels
    code = IntegerCode(options.seed) if method == "entropic" else None
    encoder = conv_encoder(feature_channels, options.channels, hidden, options.downsample, code)
    decoder = conv_decoder(options.channels, feature_channels, hidden, options.downsample, code is not None)
    prior = LogisticPrior(options.channels) if code is not None else None
    teacher_out = cut.output(features)
    tail = _unfreeze(cut.tail, options.train_tail)
    params = [*encoder.parameters(), *decoder.parameters(), *(prior.parameters() if prior else ())]
    student = Student(TORCH_OPS, encoder.train(), decoder.train(), cut.tail, prior,
                      lambda stages: TorchTrainer(stages, params + tail, list(prior.parameters()) if prior else (),
                                                  tail, code.generator if code else None),
                      latent=encoder[:-1] if code is not None else None)
    settings = record_settings(options, hidden, feature_channels, y is not None, len(x))
    history = fit(student, features, teacher_out, y, options, settings,
                  input_pixels(tuple(cut.example.shape[1:]), channels_first=True), output, resume, progress, echo)
    _unfreeze(cut.tail, False)
    record = make_record(method, model_path, split, settings, prior.to_metadata() if prior else None)
    return output, save_reencoded(cut, encoder.eval(), decoder.eval(), output, record), history


def _unfreeze(tail: Any, trainable: bool) -> list[Any]:
    """The tail's parameters made trainable (``train_tail``) or frozen; returns the trainable ones. Its batch
    norm stays the teacher's: the exported program computes it from the stored statistics."""
    for param in tail.parameters():
        param.requires_grad_(trainable)
    return list(tail.parameters()) if trainable else []

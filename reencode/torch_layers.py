"""PyTorch modules of the trained re-encoders, the counterparts of keras_graph.py's and layers.py's (imports
PyTorch: import this module only inside functions).

    encoder  Conv 3×3 (stride 2 with downsample) + ReLU ─► Conv 1×1 to K ─► [NCHW → NHWC ─► IntegerCode]
    decoder  [NHWC → NCHW ─►] Conv 3×3 (transposed, stride 2, with downsample) + ReLU ─► Conv 3×3 to the cut's C

The entropic code is channel-last, (N, H, W, K) as the Keras code: the learned prior's channels must be the
code's last axis, the axis the wire's ``ans`` codec keeps a table per channel for. The distill code stays
NCHW, as pca's (a transpose pair around a bare code would be cancelled by the ONNX export, code and all).
Weights start as Keras's do (Glorot-uniform kernels, zero biases), so both frameworks start alike.

``IntegerCode`` adds uniform noise U(-1/2, 1/2) in training (from its own seeded generator, checkpointed)
and rounds to -128..127 at inference (``round`` then ``clamp``; convert quantizes the code at scale 1, zero
point 0, so the int8 wire levels are the trained integers). ``LogisticPrior`` is the rate of prior.py.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import torch
from torch import nn

from .prior import CODE_MAX, CODE_MIN, logistic_bits, prior_record

__all__ = ["TORCH_OPS", "IntegerCode", "LogisticPrior", "conv_encoder", "conv_decoder"]

#: The few tensor functions the shared objective (trained.py) and prior.py call, as ``keras.ops`` names them.
TORCH_OPS = SimpleNamespace(
    mean=torch.mean, square=torch.square, log=torch.log, exp=torch.exp, sigmoid=torch.sigmoid, clip=torch.clamp,
    softmax=lambda x: torch.softmax(x, -1), log_softmax=lambda x: torch.log_softmax(x, -1),
    sum=lambda x, axis: torch.sum(x, dim=axis), maximum=lambda x, floor: torch.clamp(x, min=floor),
    take_along_axis=lambda x, index, axis: torch.take_along_dim(x, index, dim=axis),
    round=torch.round, abs=torch.abs, stop_gradient=torch.Tensor.detach)


class _Permute(nn.Module):
    """NCHW ↔ NHWC (the code is channel-last)."""

    def __init__(self, *dims: int):
        super().__init__()
        self.dims = dims

    def forward(self, x):
        return x.permute(*self.dims)


class IntegerCode(nn.Module):
    """Noise in training, integers in -128..127 at inference."""

    def __init__(self, seed: int = 0):
        super().__init__()
        self.generator = torch.Generator().manual_seed(seed)

    def forward(self, x):
        if self.training:
            return x + (torch.rand(x.shape, generator=self.generator) - 0.5)
        return torch.clamp(torch.round(x), CODE_MIN, CODE_MAX)


class LogisticPrior(nn.Module):
    """Per-channel logistic prior over a channel-last integer code; ``forward`` returns bits per sample."""

    def __init__(self, channels: int):
        super().__init__()
        self.loc = nn.Parameter(torch.zeros(channels))
        self.log_scale = nn.Parameter(torch.zeros(channels))

    def forward(self, code):
        return logistic_bits(TORCH_OPS, code, self.loc, self.log_scale)

    def to_metadata(self) -> dict[str, Any]:
        """The prior as stored in the model's record (read by :mod:`edgekit.reencode.prior`)."""
        return prior_record(self.loc.detach().numpy(), self.log_scale.detach().numpy())


def _keras_init(module: nn.Module) -> nn.Module:
    """Glorot-uniform kernels and zero biases, as Keras starts its convolutions."""
    for layer in module.modules():
        if isinstance(layer, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)
    return module


def conv_encoder(feature_channels: int, channels: int, hidden: int, downsample: bool,
                 code: IntegerCode | None = None) -> nn.Sequential:
    """NCHW features → the K-channel code (``code`` given: channel-last and rounded by it, for entropic)."""
    layers = [nn.Conv2d(feature_channels, hidden, 3, 2 if downsample else 1, padding=1), nn.ReLU(),
              nn.Conv2d(hidden, channels, 1)]
    return _keras_init(nn.Sequential(*layers, *([_Permute(0, 2, 3, 1), code] if code is not None else [])))


def conv_decoder(channels: int, feature_channels: int, hidden: int, upsample: bool,
                 channels_last: bool) -> nn.Sequential:
    """The code (channel-last for entropic) → NCHW features of the cut."""
    first = (nn.ConvTranspose2d(channels, hidden, 3, 2, padding=1, output_padding=1) if upsample
             else nn.Conv2d(channels, hidden, 3, padding=1))
    layers = [first, nn.ReLU(), nn.Conv2d(hidden, feature_channels, 3, padding=1)]
    return _keras_init(nn.Sequential(*([_Permute(0, 3, 1, 2)] if channels_last else []), *layers))

"""Quantization-aware fine-tuning of the entropic code, written once for Keras and PyTorch (numpy only at import).

Why: the device half runs int8 and writes the code as integers (scale 1), so its code is the rounding of a
latent computed with int8 error; the float model rounds the exact latent. Measured on a validation split
(docs/reencode.md, "Quantization-aware training"), every symbol the two disagree on had a float latent
within 0.04 of a rounding boundary (x.5), and the noise-trained latents sit anywhere between integers
(median distance 0.25), so ≈ 9 of 512 symbols flipped per image and the server half, whose codes are
mostly -2..2, changed its top-1 on 8% of images.

The ``qat`` stage therefore trains on the code as deployed and away from the boundaries:

    latent ─► round (straight-through: forward the integers the wire carries, backward the identity) ─► code
       └────► margin: mean of max(0, MARGIN - distance to the nearest x.5)²  (× MARGIN_WEIGHT in the loss)

Moving a latent towards its own integer never changes its rounding, so the margin costs the float model
nothing by itself; it only stops the other losses from parking latents where int8 error decides the symbol.
"""

from __future__ import annotations

from typing import Any

from .prior import CODE_MAX, CODE_MIN

__all__ = ["MARGIN", "MARGIN_WEIGHT", "straight_through_round", "boundary_margin"]

#: Wanted distance of every latent from a rounding boundary (code units). The int8 device half's latent error
#: measured ≈ 0.02 (standard deviation) on the CIFAR-10 recipe: 0.2 is ≈ 10 of them.
MARGIN = 0.2
#: Weight of the margin term against the stage's distortion (the KD cross-entropy ≈ 1, the normalised MSE ≈ 0.5):
#: the squared shortfall of uniform latents is ≈ 0.005. Chosen on the validation split with MARGIN (docs/reencode.md).
MARGIN_WEIGHT = 300.0


def straight_through_round(ops: Any, latent: Any) -> Any:
    """The integers -128..127 the deployed code carries, with the identity as gradient (``ops``: ``keras.ops``
    or torch_layers' ``TORCH_OPS``)."""
    rounded = ops.clip(ops.round(latent), CODE_MIN, CODE_MAX)
    return latent + ops.stop_gradient(rounded - latent)


def boundary_margin(ops: Any, latent: Any, margin: float = MARGIN) -> Any:
    """Mean squared shortfall of the latents' distance to the nearest rounding boundary below ``margin`` (0 when
    every latent is at least ``margin`` from one; largest on a boundary, where int8 error decides the symbol)."""
    distance = 0.5 - ops.abs(latent - ops.stop_gradient(ops.round(latent)))
    return ops.mean(ops.square(ops.maximum(margin - distance, 0.0)))

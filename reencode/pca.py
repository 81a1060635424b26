"""PCA of the features at the cut: the post-training re-encoder (no training, no labels).

The code is the first K principal components of the cut's channels (the same projection at every spatial
position, i.e. a 1×1 convolution); the server adds the back-projection and the mean. The components stay
orthonormal (no whitening): int8 quantization then uses one step for all components, so small-variance
components cost few bits, the high-rate optimum for transform coding (reverse water-filling).

    features (N, ..., C) ──fit──► mean (C,), components (C, C) by decreasing variance
    code  = (f - mean) @ components[:, :K]          device side, named ``code``
    f_hat = code @ components[:, :K].T + mean        server side, before the rest of the model
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from edgekit.converters.parity import top1_agreement
from edgekit.errors import UsageError

__all__ = ["Pca", "fit_pca", "choose_channels", "channels_for_agreement"]


@dataclass(frozen=True)
class Pca:
    """``components[:, i]`` is the i-th principal direction; ``variance[i]`` its variance on the fit data."""

    mean: np.ndarray  # (C,) float64
    components: np.ndarray  # (C, C) float64, orthonormal columns
    variance: np.ndarray  # (C,) float64, decreasing

    @property
    def channels(self) -> int:
        return int(self.mean.shape[0])

    def encoder(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Weights (C, K) and bias (K,) of the projection ``code = f @ W + b``."""
        w = self.components[:, :k]
        return w.astype(np.float32), (-self.mean @ w).astype(np.float32)

    def decoder(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Weights (K, C) and bias (C,) of the back-projection ``f_hat = code @ W + b``."""
        return self.components[:, :k].T.astype(np.float32), self.mean.astype(np.float32)

    def reconstruct(self, features: np.ndarray, k: int, channel_axis: int = -1) -> np.ndarray:
        """Project onto K components and back (float32, same layout as ``features``)."""
        f = np.moveaxis(features, channel_axis, -1)
        w_enc, b_enc = self.encoder(k)
        w_dec, b_dec = self.decoder(k)
        return np.moveaxis((f @ w_enc + b_enc) @ w_dec + b_dec, -1, channel_axis).astype(np.float32)


def fit_pca(features: np.ndarray, channel_axis: int = -1) -> Pca:
    """PCA over the channel axis, every sample and spatial position one observation."""
    f = np.moveaxis(np.asarray(features, np.float64), channel_axis, -1)
    rows = f.reshape(-1, f.shape[-1])
    if len(rows) <= 1:
        raise UsageError("PCA needs more than one feature vector", "give more calibration samples")
    mean = rows.mean(axis=0)
    cov = np.cov(rows - mean, rowvar=False).reshape(len(mean), len(mean))
    variance, vectors = np.linalg.eigh(cov)
    order = np.argsort(variance)[::-1]
    vectors = vectors[:, order]
    # Deterministic signs: the largest entry of each direction positive.
    signs = np.sign(vectors[np.abs(vectors).argmax(axis=0), np.arange(vectors.shape[1])])
    return Pca(mean, vectors * np.where(signs == 0, 1.0, signs), np.clip(variance[order], 0.0, None))


def channels_for_agreement(pca: Pca, features: np.ndarray, tail: Callable[[np.ndarray], np.ndarray],
                           target: float, channel_axis: int = -1) -> tuple[int, float]:
    """The smallest K whose reconstruction keeps ``target`` top-1 agreement with the model through ``tail``.

    Binary search over K (agreement grows with K up to noise, and K = C is the identity); returns
    ``(K, agreement)``. ``tail`` maps features at the cut to the model output.
    """
    reference = tail(features)

    def agreement(k: int) -> float:
        return top1_agreement(tail(pca.reconstruct(features, k, channel_axis)), reference)

    lo, hi = 1, pca.channels - 1
    best: tuple[int, float] | None = None
    while lo <= hi:
        k = (lo + hi) // 2
        measured = agreement(k)
        if measured >= target:
            best, hi = (k, measured), k - 1
        else:
            lo = k + 1
    return best or (pca.channels, agreement(pca.channels))


def choose_channels(pca: Pca, features: np.ndarray, tail: Callable[[np.ndarray], np.ndarray], channels: int | None,
                    target: float | None, channel_axis: int = -1) -> dict[str, Any]:
    """K as given (checked), or by :func:`channels_for_agreement`; the settings to record."""
    settings: dict[str, Any] = {"feature_channels": pca.channels, "channel_axis": channel_axis}
    if channels is None:
        channels, agreement = channels_for_agreement(pca, features, tail, target, channel_axis)
        settings.update(target_agreement=target, agreement_on_data=agreement)
    elif not 1 <= channels <= pca.channels:
        raise UsageError(f"--channels {channels} is outside 1..{pca.channels} (the channels at the cut)",
                         f"choose K between 1 and {pca.channels}")
    settings.update(channels=channels,
                    explained_variance=float(pca.variance[:channels].sum() / max(pca.variance.sum(), 1e-30)))
    return settings

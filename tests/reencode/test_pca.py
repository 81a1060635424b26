"""PCA itself (numpy): orthonormal components, exact reconstruction at K = C, K chosen by agreement."""

from __future__ import annotations

import numpy as np
import pytest

from edgekit.errors import UsageError
from edgekit.converters.parity import top1_agreement
from edgekit.reencode.pca import channels_for_agreement, choose_channels, fit_pca


def _features(n: int = 300, c: int = 6) -> np.ndarray:
    rng = np.random.default_rng(0)
    mixing = rng.normal(size=(c, c)) * np.array([4.0, 2.0, 1.0, 0.5, 0.1, 0.01])[:, None]
    return (rng.normal(size=(n, 5, 5, c)) @ mixing + 3.0).astype(np.float32)


def test_components_are_orthonormal_and_sorted():
    pca = fit_pca(_features())
    assert np.allclose(pca.components.T @ pca.components, np.eye(6), atol=1e-9)
    assert np.all(np.diff(pca.variance) <= 0)


def test_all_components_reconstruct_exactly_and_fewer_lose_the_discarded_variance():
    f = _features()
    pca = fit_pca(f)
    assert np.allclose(pca.reconstruct(f, 6), f, atol=1e-4)
    err = np.mean(np.sum((pca.reconstruct(f, 3).astype(np.float64) - f) ** 2, axis=-1))
    assert err == pytest.approx(pca.variance[3:].sum(), rel=0.01)


def test_channel_axis_one_is_the_same_fit_as_channel_last():
    f = _features()
    last, first = fit_pca(f), fit_pca(np.moveaxis(f, -1, 1), channel_axis=1)
    assert np.allclose(last.components, first.components)
    assert np.allclose(first.reconstruct(np.moveaxis(f, -1, 1), 2, 1), np.moveaxis(last.reconstruct(f, 2), -1, 1),
                       atol=1e-4)


def test_agreement_search_returns_the_smallest_k_reaching_the_target():
    f = _features()
    weights = np.random.default_rng(1).normal(size=(6, 4))

    def tail(x: np.ndarray) -> np.ndarray:
        return x.mean(axis=(1, 2)) @ weights

    pca = fit_pca(f)
    k, agreement = channels_for_agreement(pca, f, tail, 0.95)
    assert agreement >= 0.95 and agreement == top1_agreement(tail(pca.reconstruct(f, k)), tail(f))
    assert k == 1 or top1_agreement(tail(pca.reconstruct(f, k - 1)), tail(f)) < 0.95


def test_channels_outside_the_cut_are_a_usage_error():
    f = _features()
    with pytest.raises(UsageError, match="outside 1..6"):
        choose_channels(fit_pca(f), f, lambda x: x, 7, None)

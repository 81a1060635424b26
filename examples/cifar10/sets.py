"""The npz files ``edgekit convert`` and ``edgekit reencode`` read: preprocessed calibration, training and test sets."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from data import load_split
from teacher import preprocess

__all__ = ["write_sets"]


def write_sets(out: Path, data: str | None, calib: int = 500, test: int | None = None, seed: int = 0) -> dict[str, Path]:
    """calib.npz (``calib`` random training images), test.npz (the first ``test`` test images, labelled).

    Preprocessed float32 NHWC, so the bundle, the re-encoders and the device agent all see the same tensors.
    """
    out.mkdir(parents=True, exist_ok=True)
    paths = {"calib": out / "calib.npz", "test": out / f"test{test or ''}.npz"}
    if not paths["calib"].is_file():
        x, _ = load_split("train", data)
        pick = np.random.default_rng(seed).choice(len(x), calib, replace=False)
        np.savez(paths["calib"], x=preprocess(x[pick]))
    if not paths["test"].is_file():
        x, y = load_split("test", data)
        np.savez(paths["test"], x=preprocess(x[:test]), y=y[:test])
    return paths

"""The npz files ``edgekit convert`` and ``edgekit reencode`` read: calibration, training and test sets.

All preprocessed float32 NHWC (the teacher's input), so the bundle, the re-encoders and the device agent
see the same tensors.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from data import load_split, shuffled
from teacher import preprocess

__all__ = ["write_sets"]


def write_sets(out: Path, data: str | None, test: int | None, train: int, calib: int = 500,
               seed: int = 0) -> dict[str, Path]:
    """calib.npz (``calib`` random training images), train.npz (``train`` random training images with labels,
    for the trained re-encoders), test.npz (the first ``test`` shuffled test images, or all, with labels)."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {"calib": out / "calib.npz", "train": out / "train.npz", "test": out / "test.npz"}
    if not (paths["calib"].is_file() and paths["train"].is_file()):
        x, y = shuffled(*load_split("train", data), seed)
        np.savez(paths["calib"], x=preprocess(x[:calib]))
        np.savez(paths["train"], x=preprocess(x[:train]), y=y[:train])
    if not paths["test"].is_file():
        x, y = shuffled(*load_split("test", data), seed)
        np.savez(paths["test"], x=preprocess(x[:test]), y=y[:test])
    return paths

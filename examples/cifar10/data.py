"""CIFAR-10 from the shared tarballs, decoded once and cached as uint8 arrays under ``build/``.

    ../shared/data/cifar10/cifar10-{train,test}-jpeg.tar.gz   (read in place, never copied)
        └─ {split}/<class>/<NNNN>.jpg ──PIL──► x uint8 (N, 32, 32, 3) RGB, y int64 ──► build/cifar10/{split}.npz

Class indices follow the sorted folder names, which is CIFAR-10's own order (airplane … truck), so they
match the pretrained teacher's logits. The images went through JPEG once already (see the data README):
every method here starts from the same decoded pixels.
"""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import numpy as np

__all__ = ["CLASSES", "data_dir", "load_split", "shuffled", "teacher_path"]

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def data_dir(path: str | Path | None = None) -> Path:
    """The shared data folder: ``path``, else ``$EDGEKIT_DATA``, else ``../shared/data``."""
    return Path(path or os.environ.get("EDGEKIT_DATA", "../shared/data"))


def teacher_path(data: str | Path | None = None) -> Path:
    """The pretrained ResNet20 (Keras port) used as the teacher."""
    return data_dir(data) / "pretrained" / "resnet-cifar10" / "resnet20.keras"


def load_split(split: str, data: str | Path | None = None, cache: str | Path = "build/cifar10") -> tuple[np.ndarray, np.ndarray]:
    """(x uint8 NHWC, y int64) for ``train`` or ``test``; decodes the tarball on first use only."""
    cached = Path(cache) / f"{split}.npz"
    if cached.is_file():
        with np.load(cached) as arrays:
            return arrays["x"], arrays["y"]
    tar_path = data_dir(data) / "cifar10" / f"cifar10-{split}-jpeg.tar.gz"
    if not tar_path.is_file():
        raise SystemExit(f"error: {tar_path} not found; pass --data DIR (the folder holding cifar10/) or set EDGEKIT_DATA")
    x, y = _decode_tar(tar_path)
    cached.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cached, x=x, y=y)
    return x, y


def _decode_tar(tar_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Every ``<split>/<class>/<name>.jpg`` member, in sorted path order (reproducible across tar layouts)."""
    from PIL import Image

    images: dict[str, tuple[np.ndarray, int]] = {}
    with tarfile.open(tar_path, "r:gz") as tar:
        for member in tar:
            parts = member.name.split("/")
            if not member.isfile() or len(parts) != 3 or parts[1] not in CLASSES:
                continue
            with Image.open(io.BytesIO(tar.extractfile(member).read())) as im:
                images[member.name] = (np.asarray(im.convert("RGB"), np.uint8), CLASSES.index(parts[1]))
    names = sorted(images)
    return np.stack([images[n][0] for n in names]), np.array([images[n][1] for n in names], np.int64)


def shuffled(x: np.ndarray, y: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A fixed permutation: the tarballs are sorted by class, so any prefix of the shuffled set is a fair sample."""
    order = np.random.default_rng(seed).permutation(len(x))
    return x[order], y[order]

"""Calibration and held-out data: ``.npz``, ``.npy`` or a folder of images, checked against the model input.

Quantization ranges come from these samples, so bad data silently ruins a bundle; every check here fails
loudly with the file, the problem and the fix instead (shape, dtype, NaN/Inf, too few samples).

    .npz  one array per model input (keyed by input name) or ``x``; ``y`` labels and ``labels`` names for --eval
    .npy  the input array
    dir/  image files (``class/*.jpg`` gives labels), turned into tensors by :class:`Preprocessing`
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgekit.errors import UsageError
from edgekit.preprocess import IMAGE_SUFFIXES, Preprocessing

__all__ = ["Samples", "load_samples", "check_samples", "MIN_CALIB_SAMPLES"]

MIN_CALIB_SAMPLES = 16


@dataclass
class Samples:
    """Model inputs (float32, N × input shape), optional integer labels and class names."""

    x: np.ndarray
    y: np.ndarray | None = None
    labels: list[str] | None = None


def load_samples(path: str | Path, input_name: str, role: str, preprocessing: Preprocessing | None = None) -> Samples:
    """Read ``path`` (``role`` is ``calibration`` or ``eval``, used in messages)."""
    path = Path(path)
    if not path.exists():
        raise UsageError(f"{role} data {path} not found", "check the path")
    if path.is_dir():
        if preprocessing is None:
            raise UsageError(f"{role} data {path} is an image folder but no preprocessing is known",
                             "pass --image-size/--scale/--mean/--std/--layout")
        return _load_image_folder(path, preprocessing, role)
    if path.suffix == ".npy":
        return Samples(_load_npy(path, role))
    if path.suffix == ".npz":
        return _load_npz(path, input_name, role)
    raise UsageError(f"{role} data {path} has an unknown format", "use .npz, .npy or a folder of images")


def _load_npy(path: Path, role: str) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise UsageError(f"cannot read {role} data {path}: {err}", "save it with numpy.save") from None


def _load_npz(path: Path, input_name: str, role: str) -> Samples:
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
    except (OSError, ValueError) as err:
        raise UsageError(f"cannot read {role} data {path}: {err}", "save it with numpy.savez") from None
    for key in (input_name, "x"):
        if key in arrays:
            x = arrays[key]
            break
    else:
        candidates = [k for k in arrays if k not in ("y", "labels")]
        if len(candidates) != 1:
            raise UsageError(f"{role} data {path} has arrays {sorted(arrays)} but none named {input_name!r} or 'x'",
                             f"save the inputs under 'x' (or '{input_name}')")
        x = arrays[candidates[0]]
    y = arrays.get("y")
    if y is not None:
        if y.ndim == 2:  # one-hot
            y = y.argmax(axis=1)
        if y.ndim != 1 or len(y) != len(x) or y.dtype.kind not in "iu":
            raise UsageError(f"{role} labels 'y' in {path} have shape {y.shape} dtype {y.dtype}",
                             f"save {len(x)} integer class indices as 'y'")
    labels = [str(v) for v in arrays["labels"]] if "labels" in arrays else None
    return Samples(x, y.astype(np.int64) if y is not None else None, labels)


def _load_image_folder(path: Path, pre: Preprocessing, role: str) -> Samples:
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise UsageError(f"{role} folder {path} contains no images ({', '.join(IMAGE_SUFFIXES)})", "point it at image files")
    first = pre.apply_file(files[0])
    x = np.empty((len(files), *first.shape), first.dtype)  # filled in place: a list then np.stack holds it twice
    x[0] = first
    for i, f in enumerate(files[1:], 1):
        x[i] = pre.apply_file(f)
    classes = sorted({f.parent.relative_to(path).as_posix() for f in files})
    if classes == ["."]:
        return Samples(x)
    index = {name: i for i, name in enumerate(classes)}
    y = np.array([index[f.parent.relative_to(path).as_posix()] for f in files], np.int64)
    return Samples(x, y, classes)


def check_samples(samples: Samples, input_shape: tuple[int | None, ...], role: str, source: str | Path,
                  minimum: int = 1) -> Samples:
    """Validate against the model input (without batch axis; None = any size); return float32 samples."""
    x = samples.x
    if x.dtype.kind not in "f":
        raise UsageError(
            f"{role} data {source} is {x.dtype} but the model takes float32 inputs",
            "save the preprocessed float inputs (e.g. x.astype('float32') / 255), or use an image folder with --scale",
        )
    if x.ndim != len(input_shape) + 1 or any(d is not None and d != s for d, s in zip(input_shape, x.shape[1:])):
        expected = "(N, " + ", ".join("?" if d is None else str(d) for d in input_shape) + ")"
        raise UsageError(f"{role} data {source} has shape {x.shape} but the model input is {expected}",
                         "reshape the data (channels, layout, image size) to the model input")
    if len(x) < minimum:
        raise UsageError(f"{role} data {source} has {len(x)} samples, fewer than the {minimum} needed",
                         f"provide at least {minimum} representative samples")
    bad = ~np.isfinite(x)
    if bad.any():
        first = int(np.argwhere(bad.reshape(len(x), -1).any(axis=1))[0, 0])
        raise UsageError(f"{role} data {source} contains NaN/Inf (first in sample {first})",
                         "clean or drop those samples")
    return Samples(np.ascontiguousarray(x, np.float32), samples.y, samples.labels)

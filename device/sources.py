"""Where frames come from: a dataset file, a folder of images, a camera or a video.

Every source yields float32 model inputs (one sample, no batch axis), preprocessed with the bundle's own
``Preprocessing`` from the manifest, never with re-typed numbers::

    --source x.npz | x.npy | npz:PATH      uint8 arrays: pixels, preprocessed; float arrays: model inputs as-is
    --source images:DIR | images:GLOB      image files in name order (Pillow)
    --source camera:0 | video:PATH         OpenCV (pip install 'edgekit-split[camera]')
"""

from __future__ import annotations

import glob
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from edgekit.errors import UsageError
from edgekit.preprocess import IMAGE_SUFFIXES, Preprocessing

__all__ = ["Source", "open_source", "source_kind", "check_preprocessing", "is_endless"]

NPZ_KEYS = ("x", "images", "x_test", "inputs")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".webm")
IMAGE_KINDS = ("images", "camera", "video")  # sources of pixels, which need the bundle's preprocessing
SOURCE_HELP = "use x.npz, npz:PATH, images:DIR, images:'GLOB', camera:0 or video:PATH"


@dataclass
class Source:
    """A named, possibly finite sequence of model inputs."""

    description: str
    length: int | None  # None: endless (camera) or unknown
    _frames: Callable[[], Iterator[np.ndarray]]

    def __iter__(self) -> Iterator[np.ndarray]:
        return self._frames()


def open_source(spec: str, pre: Preprocessing | None, input_shape: tuple[int, ...]) -> Source:
    """Parse ``--source`` and open it; a one-line UsageError for anything that cannot work."""
    kind, target = source_kind(spec)
    if kind in ("npz", "npy"):
        return _array_source(Path(target), pre, tuple(input_shape))
    if kind == "images":
        return _image_source(target, _require_pre(pre, spec))
    return _opencv_source(kind, target, _require_pre(pre, spec))


def source_kind(spec: str) -> tuple[str, str]:
    """``(kind, target)`` of a ``--source``: kind is npz, npy, images, camera or video (guessed from the path when
    it has no prefix); a one-line UsageError when it cannot be told."""
    kind, _, rest = spec.partition(":")
    if kind in ("npz", "npy", "images", "camera", "video") and rest:
        return kind, rest
    return _guess_kind(spec), spec


def check_preprocessing(spec: str, pre: Preprocessing | None) -> None:
    """Refuse an image source (a folder, a camera, a video) when the bundle records no preprocessing, before
    anything is opened: ``edgekit device systemd-unit`` checks it, so no unit restarts into this error."""
    if source_kind(spec)[0] in IMAGE_KINDS:
        _require_pre(pre, spec)


def is_endless(spec: str) -> bool:
    """Whether a source never ends by itself (a camera): only then does an agent that exits 0 need a restart."""
    return source_kind(spec)[0] == "camera"


def _guess_kind(spec: str) -> str:
    path = Path(spec)
    if path.suffix in (".npz", ".npy"):
        return "npz"
    if path.is_dir() or any(ch in spec for ch in "*?[") or path.suffix.lower() in IMAGE_SUFFIXES:
        return "images"
    if path.suffix.lower() in VIDEO_SUFFIXES:
        return "video"
    raise UsageError(f"cannot tell what kind of source {spec!r} is", SOURCE_HELP)


def _require_pre(pre: Preprocessing | None, spec: str) -> Preprocessing:
    if pre is None:
        raise UsageError(f"source {spec!r} needs image preprocessing but the bundle has none",
                         "record it at convert time: edgekit convert ... --image-size HxW, with --color, --scale, "
                         "--mean, --std and --layout as the model was trained (any one of them records it); "
                         "or stream model inputs from an .npz")
    return pre


def _load_array(path: Path) -> np.ndarray:
    if not path.is_file():
        raise UsageError(f"source file {path} not found", SOURCE_HELP)
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise UsageError(f"cannot read {path}: {err}", "pass an .npz/.npy written by numpy") from None
    if isinstance(data, np.ndarray):
        return data
    keys = [k for k in NPZ_KEYS if k in data.files] or list(data.files[:1])
    if not keys:
        raise UsageError(f"{path} holds no arrays", f"store the inputs under one of {', '.join(NPZ_KEYS)}")
    return data[keys[0]]


def _array_source(path: Path, pre: Preprocessing | None, input_shape: tuple[int, ...]) -> Source:
    """uint8 arrays are raw pixels (preprocessed per sample); float arrays must already be model inputs."""
    array = _load_array(path)
    sample_shape = tuple(input_shape[1:])
    if array.dtype == np.uint8:
        prep = _require_pre(pre, str(path))
        frames = lambda: (prep.apply_array(sample) for sample in array)  # noqa: E731
    elif np.issubdtype(array.dtype, np.floating):
        if tuple(array.shape[1:]) != sample_shape:
            raise UsageError(f"{path} holds inputs of shape {array.shape[1:]}, the model takes {sample_shape}",
                             "store float model inputs of the bundle's input shape, or uint8 pixels")
        frames = lambda: (np.asarray(sample, np.float32) for sample in array)  # noqa: E731
    else:
        raise UsageError(f"{path} holds {array.dtype} data", "store uint8 pixels or float32 model inputs")
    return Source(f"{path} ({len(array)} samples)", len(array), frames)


def _image_source(target: str, pre: Preprocessing) -> Source:
    path = Path(target)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    else:
        files = sorted(Path(p) for p in glob.glob(target, recursive=True) if Path(p).suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise UsageError(f"no images found at {target!r}", f"point images: at a folder or glob of {'/'.join(IMAGE_SUFFIXES)}")
    return Source(f"{target} ({len(files)} images)", len(files), lambda: (pre.apply_file(f) for f in files))


def _opencv_source(kind: str, target: str, pre: Preprocessing) -> Source:
    try:
        import cv2
    except ImportError:
        raise UsageError(f"{kind} sources need OpenCV", "pip install 'edgekit-split[camera]'") from None
    device = int(target) if kind == "camera" and target.isdigit() else target
    if kind == "video" and not Path(target).is_file():
        raise UsageError(f"video {target} not found", SOURCE_HELP)

    def frames() -> Iterator[np.ndarray]:
        capture = cv2.VideoCapture(device)
        if not capture.isOpened():
            raise UsageError(f"cannot open {kind} {target!r}", "check the device index or file")
        try:
            while True:
                ok, bgr = capture.read()
                if not ok:
                    return
                yield pre.apply_array(bgr[..., ::-1] if bgr.ndim == 3 else bgr)
        finally:
            capture.release()

    return Source(f"{kind} {target}", None, frames)

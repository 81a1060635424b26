"""The honest baseline: what the *input* would cost on the wire as an ordinary image file.

A split only pays when its frame is smaller than simply sending the picture. For image inputs, convert
recovers the pixels each model input was made from (at the model input size), encodes them as JPEG q75,
JPEG q90, WebP (Pillow's default quality 80, method 4) and PNG, and sets the frame bytes beside them::

    float model inputs ─► undo (value*std + mean) / scale ─► uint8 H×W×C pixels (exact for image folders)
        ─► encode_image per format ─► mean / p95 bytes ─► compared with the chosen codec's mean frame bytes
        ─► a warning in words when the frame is bigger than the smallest of them

The pixels come from inverting the preprocessing, not from re-reading files: image folders were turned into
inputs by :class:`edgekit.preprocess.Preprocessing` (resize, then normalize), so inverting the normalization
gives back exactly the resized uint8 pixels. ``.npz``/``.npy`` inputs get a baseline when their
preprocessing is known (``--scale/--mean/--std``) or their values are plain pixels (0..1 in steps of
1/255, or 0..255 integers); otherwise the report says the baseline is unavailable and why.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np

from edgekit.errors import UsageError
from edgekit.preprocess import Preprocessing

__all__ = ["encode_image", "image_bytes", "input_pixels", "input_baseline", "compare_with_frames", "FORMATS",
           "MAX_IMAGES", "MAX_PIXELS"]

# name -> (Pillow format, quality). WebP at Pillow's own default quality (80) and method (4).
FORMATS: dict[str, tuple[str, int | None]] = {
    "jpeg_q75": ("jpeg", 75), "jpeg_q90": ("jpeg", 90), "webp_q80": ("webp", 80), "png": ("png", None)}
LABELS = {"jpeg_q75": "JPEG q75", "jpeg_q90": "JPEG q90", "webp_q80": "WebP q80", "png": "PNG"}
MAX_IMAGES = 200  # enough for a stable mean ...
MAX_PIXELS = 7_500_000  # ... and on time (H×W×C values): 200 224×224×3 images in 4 formats took 36 s here; 49 do
_PIXEL_STEP_TOLERANCE = 1e-3


def encode_image(image_uint8_hwc: np.ndarray, fmt: str, quality: int | None = None) -> bytes:
    """The bytes of one uint8 image (H×W, H×W×1 or H×W×3) as a ``jpeg``, ``webp``, ``avif`` (Pillow ≥ 11.3
    built with libavif) or ``png`` file."""
    from PIL import Image

    pixels = np.asarray(image_uint8_hwc)
    if pixels.dtype != np.uint8 or pixels.ndim not in (2, 3) or (pixels.ndim == 3 and pixels.shape[-1] not in (1, 3)):
        raise UsageError(f"an image to encode must be uint8 H×W or H×W×{{1,3}}, got {pixels.dtype} {pixels.shape}",
                         "pass decoded 8-bit pixels")
    if pixels.ndim == 3 and pixels.shape[-1] == 1:
        pixels = pixels[..., 0]
    options: dict[str, Any] = {}
    if fmt == "jpeg":
        options = {"quality": 75 if quality is None else quality}
    elif fmt == "webp":
        options = {"quality": 80 if quality is None else quality, "method": 4}
    elif fmt == "avif":
        options = {"quality": 75 if quality is None else quality}
    elif fmt == "png":
        options = {"optimize": False}
    else:
        raise UsageError(f"unknown image format {fmt!r}", "use jpeg, webp, avif or png")
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format=fmt.upper(), **options)
    return out.getvalue()


def image_bytes(images: np.ndarray) -> dict[str, dict[str, Any]]:
    """Mean and p95 file bytes of ``images`` (N×H×W×C uint8) in every format of :data:`FORMATS`."""
    result = {}
    for name, (fmt, quality) in FORMATS.items():
        sizes = np.array([len(encode_image(img, fmt, quality)) for img in images], dtype=np.float64)
        result[name] = {"format": fmt, "quality": quality, "mean_bytes": float(sizes.mean()),
                        "p95_bytes": float(np.percentile(sizes, 95))}
    return result


def input_pixels(x: np.ndarray, pre: Preprocessing | None) -> tuple[np.ndarray | None, str]:
    """uint8 N×H×W×C pixels behind the float model inputs ``x``, and how they were found (or why not)."""
    if x.ndim != 4:
        return None, f"the model input {tuple(x.shape[1:])} is not an image (H×W×C or C×H×W)"
    if pre is not None:
        hwc = x.transpose(0, 2, 3, 1) if pre.layout == "nchw" else x
        pixels = (hwc * np.asarray(pre.std, np.float32) + np.asarray(pre.mean, np.float32)) / np.float32(pre.scale)
        low, high = float(pixels.min()), float(pixels.max())
        if low < -0.5 or high > 255.5:
            return None, (f"the inputs with the preprocessing undone span {low:.1f}..{high:.1f}, not 0..255 pixels: "
                          "the given --scale/--mean/--std do not match the data")
        return _to_uint8(pixels), "pixels recovered by undoing the recorded preprocessing"
    channels_last = x.shape[-1] in (1, 3)
    if not channels_last and x.shape[1] not in (1, 3):
        return None, f"the model input {tuple(x.shape[1:])} has no 1- or 3-channel axis, so it is not an image"
    hwc = x if channels_last else x.transpose(0, 2, 3, 1)
    for scale, what in ((255.0, "values 0..1 in steps of 1/255"), (1.0, "values 0..255 integers")):
        pixels = hwc * np.float32(scale)
        if pixels.min() >= -0.5 and pixels.max() <= 255.5 and \
                np.abs(pixels - np.round(pixels)).max() < _PIXEL_STEP_TOLERANCE:
            return _to_uint8(pixels), f"the inputs are plain pixels ({what})"
    return None, ("the inputs are not plain pixels and no preprocessing is known: pass --scale/--mean/--std "
                  "(how the pixels became inputs) to get the image baseline")


def _to_uint8(pixels: np.ndarray) -> np.ndarray:
    return np.clip(np.round(pixels), 0, 255).astype(np.uint8)


def input_baseline(x: np.ndarray, pre: Preprocessing | None) -> dict[str, Any]:
    """The ``baseline`` section of report.json before the frame bytes are known (a bounded number of inputs)."""
    count = int(np.clip(MAX_PIXELS // max(1, int(np.prod(x.shape[1:]))), 1, MAX_IMAGES))
    pixels, how = input_pixels(x[:count], pre)
    if pixels is None:
        return {"available": False, "reason": how}
    return {"available": True, "source": how, "images": int(len(pixels)), "image_shape": list(pixels.shape[1:]),
            "raw_pixel_bytes": int(np.prod(pixels.shape[1:])), "formats": image_bytes(pixels)}


def compare_with_frames(baseline: dict[str, Any], wire: dict[str, Any] | None) -> str | None:
    """Add the frame bytes to ``baseline``; return a warning when the split sends more than the input would."""
    if not baseline["available"] or not wire:
        return None
    codec = wire["default_codec"]
    frame = wire["codecs"][codec]["mean_frame_bytes"]
    smallest = min(baseline["formats"], key=lambda n: baseline["formats"][n]["mean_bytes"])
    image = baseline["formats"][smallest]["mean_bytes"]
    baseline["frame"] = {"codec": codec, "mean_frame_bytes": frame, "int8_code_bytes": wire["raw_code_bytes"],
                         "float32_code_bytes": wire["float32_bytes"]}
    baseline["smallest_format"] = smallest
    baseline["frame_vs_smallest"] = frame / image
    if frame <= image:
        return None
    baseline["warning"] = (f"the split sends {frame / image:.1f}× the bytes of a {LABELS[smallest]} of the input "
            f"({frame:.0f} B per frame with {codec} vs {image:.0f} B): sending the image would be cheaper; a "
            "re-encoder at the cut (a trained bottleneck, `edgekit reencode`) or a later split point sends less")
    return baseline["warning"]

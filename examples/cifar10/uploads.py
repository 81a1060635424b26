"""The baseline a split must beat: upload the image (JPEG, WebP, PNG) and run the whole teacher on the server.

    x uint8 ──encode_image(fmt, q)──► bytes (what would cross the link) ──decode──► teacher ──► top-1

Bytes are the image file alone, with no transport header (frames are counted with their 64-byte header),
so the comparison is tilted in the image's favour, never against it. The encoder is convert's own
(``edgekit.converters.image_baseline.encode_image``), so the report's baseline and this one are the same bytes.
"""

from __future__ import annotations

import io
from typing import Callable

import numpy as np

from edgekit.converters.image_baseline import encode_image

__all__ = ["JPEG_QUALITIES", "WEBP_QUALITIES", "upload_points"]

JPEG_QUALITIES = (10, 30, 50, 70, 75, 80, 90, 95)
WEBP_QUALITIES = (10, 30, 50, 70, 80, 90, 95, 100)


def _decode_image(data: bytes) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB"), np.uint8)


def upload_points(x: np.ndarray, y: np.ndarray, classify: Callable[[np.ndarray], np.ndarray], teacher_top1: float,
                  progress: Callable[[str], None] = print) -> list[dict]:
    """One row per (format, quality): mean/p95 bytes and top-1 of the teacher on the decoded images."""
    settings = [("jpeg", q) for q in JPEG_QUALITIES] + [("webp", q) for q in WEBP_QUALITIES] + [("png", None)]
    rows = []
    for fmt, quality in settings:
        blobs = [encode_image(img, fmt, quality) for img in x]
        decoded = np.stack([_decode_image(b) for b in blobs])
        sizes = np.array([len(b) for b in blobs])
        # Lossless PNG gives back the very pixels: the teacher's top-1 on x, checked rather than re-run.
        acc = teacher_top1 if fmt == "png" and np.array_equal(decoded, x) else float(np.mean(classify(decoded) == y))
        rows.append({"method": fmt, "setting": f"q={quality}" if quality else "lossless",
                     "mean_bytes": float(sizes.mean()), "p95_bytes": float(np.percentile(sizes, 95)), "top1": acc})
        progress(f"  {fmt:<5} {rows[-1]['setting']:<9} {sizes.mean():8.1f} B  top-1 {100 * acc:.2f}%")
    return rows

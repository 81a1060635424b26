"""The baseline a split must beat: upload the image (JPEG, WebP, PNG) and run the whole teacher on the server.

    x uint8 ──encode_image(fmt, q)──► bytes (what would cross the link) ──decode──► teacher ──► top-1

Bytes are the image file alone, with no transport header (frames are counted with their header), so the
comparison is tilted in the image's favour, never against it. The encoder is convert's own
(``edgekit.converters.image_baseline.encode_image``), so the report's baseline and this one are the same bytes.
JPEG and WebP are swept at every quality 1..100 by :mod:`grid`; the table shows the coarse qualities below.
"""

from __future__ import annotations

import io

import numpy as np

from edgekit.converters.image_baseline import encode_image

__all__ = ["JPEG_QUALITIES", "WEBP_QUALITIES", "encode_decode", "upload_row", "png_row", "listed"]

# The qualities the table lists (the plot and the acceptance use the whole grid).
JPEG_QUALITIES = (10, 30, 50, 70, 75, 80, 90, 95)
WEBP_QUALITIES = (10, 30, 50, 70, 80, 90, 95, 100)


def _decode_image(data: bytes) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB"), np.uint8)


def encode_decode(x: np.ndarray, fmt: str, quality: int | None) -> tuple[np.ndarray, np.ndarray]:
    """(bytes per image, the decoded images) of ``x`` (N×H×W×3 uint8) as ``fmt`` files at ``quality``."""
    blobs = [encode_image(img, fmt, quality) for img in x]
    return np.array([len(b) for b in blobs], np.int64), np.stack([_decode_image(b) for b in blobs])


def upload_row(fmt: str, quality: int | None, sizes: np.ndarray, correct: np.ndarray) -> dict:
    """One table row: mean/p95 bytes and top-1 of the teacher on the decoded images."""
    return {"method": fmt, "setting": f"q={quality}" if quality else "lossless", "quality": quality,
            "mean_bytes": float(np.mean(sizes)), "p95_bytes": float(np.percentile(sizes, 95)),
            "top1": float(np.mean(correct))}


def png_row(x: np.ndarray, y: np.ndarray, predicted: np.ndarray) -> dict:
    """Lossless PNG gives back the very pixels: the teacher's own predictions on ``x``, checked, not re-run."""
    sizes, decoded = encode_decode(x, "png", None)
    if not np.array_equal(decoded, x):
        raise RuntimeError("PNG did not give back the pixels it was given")
    return upload_row("png", None, sizes, predicted == y)


def listed(row: dict) -> bool:
    """Whether the main table lists this upload row: PNG and the coarse qualities of the earlier sweeps."""
    coarse = {"jpeg": JPEG_QUALITIES, "webp": WEBP_QUALITIES, "avif": WEBP_QUALITIES}
    return row.get("quality") is None or row["quality"] in coarse.get(row["method"], ())

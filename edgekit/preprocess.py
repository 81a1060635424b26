"""Image preprocessing that the workstation and the device apply identically.

Convert records the preprocessing it calibrated with in the manifest; the device reads it back from there,
so a camera frame on the Raspberry Pi becomes exactly the tensor the quantized model was calibrated on:

    image file / uint8 array ──► color (rgb | grayscale) ──► resize (H, W, bilinear)
        ──► value * scale ──► (value - mean) / std ──► layout (nhwc | nchw) ──► float32

Only Pillow is needed (imported when an image file is opened), so this module is cheap on a device.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.errors import UsageError

__all__ = ["Preprocessing", "IMAGE_SUFFIXES"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
COLORS = ("rgb", "grayscale")
LAYOUTS = ("nhwc", "nchw")


@dataclass(frozen=True)
class Preprocessing:
    """How raw pixels become the model input (one sample, without the batch axis)."""

    size: tuple[int, int]  # (height, width)
    color: str = "rgb"
    scale: float = 1.0 / 255.0
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    layout: str = "nhwc"

    def __post_init__(self) -> None:
        if self.color not in COLORS:
            raise UsageError(f"unknown color mode {self.color!r}", f"use one of {', '.join(COLORS)}")
        if self.layout not in LAYOUTS:
            raise UsageError(f"unknown layout {self.layout!r}", f"use one of {', '.join(LAYOUTS)}")
        if len(self.size) != 2 or min(self.size) < 1:
            raise UsageError(f"image size {self.size} is not (height, width)", "pass e.g. --image-size 32x32")
        for name, values in (("mean", self.mean), ("std", self.std)):
            if len(values) not in (1, self.channels):
                raise UsageError(
                    f"--{name} has {len(values)} values but {self.color} images have {self.channels} channels",
                    f"give one value or {self.channels}",
                )
        if any(s == 0 for s in self.std):
            raise UsageError("--std contains 0", "standard deviations must be non-zero")

    @property
    def channels(self) -> int:
        return 3 if self.color == "rgb" else 1

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """The per-sample tensor shape this preprocessing produces."""
        h, w = self.size
        return (h, w, self.channels) if self.layout == "nhwc" else (self.channels, h, w)

    def to_dict(self) -> dict[str, Any]:
        return {
            "size": list(self.size),
            "color": self.color,
            "scale": self.scale,
            "mean": list(self.mean),
            "std": list(self.std),
            "layout": self.layout,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Preprocessing":
        return cls(
            size=tuple(int(v) for v in data["size"]),
            color=data.get("color", "rgb"),
            scale=float(data.get("scale", 1.0 / 255.0)),
            mean=tuple(float(v) for v in data.get("mean", (0.0,))),
            std=tuple(float(v) for v in data.get("std", (1.0,))),
            layout=data.get("layout", "nhwc"),
        )

    def apply_file(self, path: str | Path) -> np.ndarray:
        """Read one image file and return the float32 model input for it."""
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(path) as image:
                image.load()
                return self.apply_image(image)
        except (OSError, UnidentifiedImageError) as err:
            raise UsageError(f"cannot read image {path}: {err}", "remove or replace the file") from None

    def apply_image(self, image: Any) -> np.ndarray:
        """A PIL image → float32 model input (resized with bilinear filtering, like the device does)."""
        from PIL import Image

        image = image.convert("RGB" if self.color == "rgb" else "L")
        height, width = self.size
        if image.size != (width, height):
            image = image.resize((width, height), Image.BILINEAR)
        return self._normalize(np.asarray(image))

    def apply_array(self, pixels: np.ndarray) -> np.ndarray:
        """A decoded uint8 frame (H, W), (H, W, 1) or (H, W, 3) → float32 model input."""
        from PIL import Image

        pixels = np.asarray(pixels)
        if pixels.ndim == 3 and pixels.shape[-1] == 1:
            pixels = pixels[..., 0]
        if pixels.dtype != np.uint8:
            raise UsageError(f"frame dtype is {pixels.dtype}, expected uint8 pixels", "pass the decoded 8-bit image")
        return self.apply_image(Image.fromarray(pixels))

    def _normalize(self, pixels: np.ndarray) -> np.ndarray:
        value = pixels.astype(np.float32)
        if value.ndim == 2:
            value = value[..., None]
        value = value * np.float32(self.scale)
        value = (value - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        return np.ascontiguousarray(value.transpose(2, 0, 1) if self.layout == "nchw" else value)

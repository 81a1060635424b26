"""The state one conversion's steps share: where the bundle is staged, the split model, the samples, and what
each step has produced so far (device models, compiler reports, wire quantization, warnings).

It lives apart from :mod:`.pipeline` so the step modules (:mod:`.device_exports`, :mod:`.parity_checks`,
:mod:`.bundle_writer`) can take it without importing the pipeline that calls them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.reencode.for_convert import ReencoderHints

from .datasets import Samples
from .halves import Halves
from .targets import Runtime, TargetProfile

__all__ = ["DeviceFile", "ConversionState"]


@dataclass
class DeviceFile:
    """One device model written into the bundle."""

    target: str
    runtime: Runtime
    path: str  # relative to the bundle
    input_dtype: str
    input_quant: tuple[float, int] | None
    code_dtype: str
    code_quant: tuple[float, int]


@dataclass
class ConversionState:
    """State shared by the conversion steps."""

    bundle: Path
    scratch: Path
    halves: Halves
    calib: np.ndarray
    eval: Samples
    input_shape: tuple[int, ...]
    wire_quant: tuple[float, int] | None = None
    devices: list[DeviceFile] = field(default_factory=list)
    compiled: dict[str, dict[str, Any] | None] = field(default_factory=dict)
    artifacts: dict[str, list[str]] = field(default_factory=dict)
    profiles: dict[str, TargetProfile] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    cache: dict[tuple, Path] = field(default_factory=dict)
    reencoder: ReencoderHints | None = None  # the record of a model made by edgekit reencode

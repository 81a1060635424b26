"""The training inputs of a re-encoder: the same data files convert takes for calibration, read the same way."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from edgekit.preprocess import Preprocessing

__all__ = ["load_inputs"]


def load_inputs(data: str | Path | np.ndarray, input_name: str, input_shape: tuple[int | None, ...],
                preprocessing: Preprocessing | dict[str, Any] | None, max_samples: int | None,
                seed: int = 0) -> tuple[np.ndarray, np.ndarray | None]:
    """Model inputs (and labels, if the data has them) from the inputs convert takes for calibration."""
    from edgekit.converters.datasets import Samples, check_samples, load_samples
    from edgekit.converters.inputs import preprocessing_for

    if isinstance(data, np.ndarray):
        samples, source = Samples(data), "array"
    else:
        pre = preprocessing_for(preprocessing, SimpleNamespace(input_shape=input_shape), str(data), None)
        samples, source = load_samples(data, input_name, "data", pre), data
    samples = check_samples(samples, input_shape, "data", source, minimum=2)
    if max_samples is not None and len(samples.x) > max_samples:
        keep = np.sort(np.random.default_rng(seed).choice(len(samples.x), max_samples, replace=False))
        return samples.x[keep], None if samples.y is None else samples.y[keep]
    return samples.x, samples.y

"""What ``convert`` is given, made usable: the model loaded and split into halves, the image preprocessing
completed from the model's input shape, the calibration/eval samples checked and subsampled, the labels.

Every check here runs before anything is quantized, so bad input fails in seconds with a UsageError that
says what to pass instead. ``edgekit reencode`` reads its training images with :func:`preprocessing_for`
too, so both commands turn an image folder into the same arrays.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from edgekit.errors import UsageError
from edgekit.preprocess import Preprocessing

from .datasets import Samples, check_samples, load_samples
from .halves import Halves
from .onnx_source import onnx_of
from .sources import SourceFormat, detect_format, load_keras

__all__ = ["load_halves", "preprocessing_for", "read_samples", "read_labels", "optional_str"]


def optional_str(value: str | Path | None) -> str | None:
    return None if value is None else str(value)


def load_halves(model: str | None, split: str | None, device_model: str | None, server_model: str | None,
                scratch: Path) -> Halves:
    from .split_keras import join_keras, split_keras
    from .split_onnx import join_onnx, split_onnx

    if model is not None:
        if device_model or server_model:
            raise UsageError("give either a model with --split or --device-model/--server-model, not both",
                             "drop one of them")
        if not split:
            raise UsageError("--split is required with a single model", "name the layer/tensor that outputs the code")
        fmt = detect_format(model)
        if fmt.cut_on_onnx:  # a SavedModel is opaque to Keras, a PyTorch program is not Keras: cut their ONNX
            return split_onnx(onnx_of(model, fmt, scratch / "source"), split, fmt.value, scratch)
        return split_keras(load_keras(model), split, fmt.value, scratch)
    if not (device_model and server_model):
        raise UsageError("no model given", "pass MODEL with --split NAME, or both --device-model and --server-model")
    fmt, server_fmt = detect_format(device_model), detect_format(server_model)
    if _family(fmt) != _family(server_fmt):
        raise UsageError(f"the device model is {fmt.value} but the server model is {server_fmt.value}",
                         "pass both halves in the same family (Keras/SavedModel, ONNX or PyTorch)")
    if _family(fmt) == "graph":
        return join_onnx(onnx_of(device_model, fmt, scratch / "device-source"),
                         onnx_of(server_model, server_fmt, scratch / "server-source"), fmt.value, scratch)
    return join_keras(load_keras(device_model), load_keras(server_model), fmt.value, scratch)


def _family(fmt: SourceFormat) -> str:
    """Halves join as Keras models (Keras, SavedModel) or as ONNX graphs (ONNX, PyTorch's ONNX export)."""
    return "graph" if fmt in (SourceFormat.ONNX, SourceFormat.PYTORCH) else "keras"


def preprocessing_for(options: Preprocessing | dict | None, halves: Halves, calib: str, eval_path: str | None
                      ) -> Preprocessing | None:
    """Preprocessing for image folders: the given options, completed from the model input shape."""
    if isinstance(options, Preprocessing):
        return options
    uses_images = Path(calib).is_dir() or (eval_path is not None and Path(eval_path).is_dir())
    if not uses_images and not options:
        return None
    options = dict(options or {})
    shape = halves.input_shape
    layout = options.get("layout") or ("nchw" if len(shape) == 3 and shape[0] in (1, 3) and shape[-1] not in (1, 3)
                                       else "nhwc")
    channels = shape[0] if layout == "nchw" else shape[-1]
    spatial = shape[1:] if layout == "nchw" else shape[:2]
    size = options.get("size") or (tuple(spatial) if None not in spatial else None)
    if size is None:
        raise UsageError("the model input has a dynamic image size", "pass --image-size HxW for the image folder")
    pre = Preprocessing(size=tuple(size), color=options.get("color") or ("grayscale" if channels == 1 else "rgb"),
                        scale=options.get("scale") if options.get("scale") is not None else 1.0 / 255.0,
                        mean=tuple(options.get("mean") or (0.0,)), std=tuple(options.get("std") or (1.0,)),
                        layout=layout)
    expected = tuple(d for d in shape)
    if any(d is not None and d != p for d, p in zip(expected, pre.input_shape)) or len(expected) != 3:
        raise UsageError(f"preprocessing makes images of shape {pre.input_shape} but the model input is {expected}",
                         "fix --image-size / --color / --layout to match the model")
    return pre


def read_samples(path: str, halves: Halves, role: str, pre: Preprocessing | None, limit: int, minimum: int,
                 rng: np.random.Generator) -> Samples:
    samples = check_samples(load_samples(path, halves.input_name, role, pre), halves.input_shape, role, path, minimum)
    if len(samples.x) > limit:
        keep = np.sort(rng.choice(len(samples.x), limit, replace=False))
        samples = Samples(samples.x[keep], None if samples.y is None else samples.y[keep], samples.labels)
    return samples


def read_labels(labels: Sequence[str] | str | Path | None, eval_samples: Samples, halves: Halves) -> list[str] | None:
    if isinstance(labels, (str, Path)):
        try:
            labels = [line.strip() for line in Path(labels).read_text().splitlines() if line.strip()]
        except OSError as err:
            raise UsageError(f"cannot read labels file {labels}: {err}", "pass a text file with one label per line") from None
    labels = list(labels) if labels is not None else eval_samples.labels
    classes = int(np.prod([d for d in halves.output_shape if d])) if halves.output_shape else 1
    if labels is not None and len(labels) != classes:
        raise UsageError(f"{len(labels)} labels given but the model outputs {classes} values",
                         "give one label per output class")
    return labels

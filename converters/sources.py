"""Recognise and load the model files convert accepts: Keras ``.keras``, TF SavedModel directories, ONNX, and
PyTorch ``torch.export`` programs (``.pt2``).

A SavedModel is wrapped as a one-layer Keras model (``keras.layers.TFSMLayer``) so the TFLite and tf2onnx
paths are the same as for ``.keras`` files; its internals are opaque to Keras, so cutting a single
SavedModel by name happens on its ONNX export instead (see :mod:`edgekit.converters.split_onnx`), as for a
PyTorch program (:mod:`edgekit.converters.torch_export`): :mod:`edgekit.converters.onnx_source` gives the
ONNX file every non-Keras source is cut on.
"""

from __future__ import annotations

import logging
import os
from enum import Enum
from pathlib import Path
from typing import Any

from edgekit.errors import UsageError

__all__ = ["SourceFormat", "detect_format", "load_keras", "load_onnx", "import_tensorflow"]

log = logging.getLogger(__name__)


class SourceFormat(str, Enum):
    KERAS = "keras"
    SAVEDMODEL = "savedmodel"
    ONNX = "onnx"
    PYTORCH = "pytorch"

    @property
    def cut_on_onnx(self) -> bool:
        """Cut on an ONNX file (the model's, or its export), not on Keras layers."""
        return self != SourceFormat.KERAS


def detect_format(path: str | Path) -> SourceFormat:
    """The source format of ``path``; UsageError for a missing or unrecognised model."""
    path = Path(path)
    if not path.exists():
        raise UsageError(f"model {path} not found", "check the path")
    if path.is_dir():
        if (path / "saved_model.pb").is_file():
            return SourceFormat.SAVEDMODEL
        raise UsageError(f"{path} is a directory without saved_model.pb", "pass a .keras/.onnx file or a SavedModel directory")
    if path.suffix == ".keras":
        return SourceFormat.KERAS
    if path.suffix == ".onnx":
        return SourceFormat.ONNX
    if path.suffix == ".pt2":
        return SourceFormat.PYTORCH
    raise UsageError(f"{path} has an unknown model format ({path.suffix or 'no suffix'})",
                     "pass a Keras .keras file, a TF SavedModel directory, an .onnx file or a torch.export .pt2 "
                     "program")


def import_tensorflow() -> Any:
    """TensorFlow with its C++ start-up chatter turned down (imported only when converting)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf

    tf.get_logger().setLevel(logging.ERROR)
    return tf


def load_keras(path: str | Path) -> Any:
    """A Keras model from a ``.keras`` file or a SavedModel directory (wrapped, single input and output)."""
    import_tensorflow()
    import keras

    path = Path(path)
    fmt = detect_format(path)
    try:
        if fmt == SourceFormat.KERAS:
            return keras.models.load_model(path, compile=False)
        if fmt == SourceFormat.SAVEDMODEL:
            return _wrap_saved_model(path)
    except UsageError:
        raise
    except Exception as err:  # Keras raises many types for a corrupt or foreign file
        raise UsageError(f"cannot read model {path}: {first_line(err)}",
                         "check that the file is a complete Keras 3 model or SavedModel") from None
    raise UsageError(f"{path} is an ONNX model, not a Keras/TF model", "ONNX sources produce ONNX outputs only")


def _wrap_saved_model(path: Path) -> Any:
    import keras
    import tensorflow as tf

    signature = tf.saved_model.load(str(path)).signatures.get("serving_default")
    if signature is None:
        raise UsageError(f"SavedModel {path} has no serving_default signature", "export it with model.export(path)")
    inputs = signature.structured_input_signature[1] or {}
    specs = list(inputs.values()) or [s for s in signature.structured_input_signature[0]]
    if len(specs) != 1:
        raise UsageError(f"SavedModel {path} has {len(specs)} inputs", "edgekit bundles carry models with one input")
    spec = specs[0]
    layer = keras.layers.TFSMLayer(str(path), call_endpoint="serving_default", name=path.name.replace("-", "_"))
    inp = keras.Input(shape=tuple(spec.shape[1:]), name=(spec.name or "input").split(":")[0])
    out = layer(inp)
    if isinstance(out, dict):
        if len(out) != 1:
            raise UsageError(f"SavedModel {path} has {len(out)} outputs", "edgekit needs one output per half")
        out = next(iter(out.values()))
    return keras.Model(inp, out, name=path.name)


def load_onnx(path: str | Path) -> Any:
    """An ONNX ModelProto, checked; UsageError when the file is not a readable ONNX model."""
    import onnx

    try:
        model = onnx.load(str(path))
        onnx.checker.check_model(model)
    except Exception as err:  # protobuf DecodeError, ValidationError, OSError
        raise UsageError(f"cannot read ONNX model {path}: {first_line(err)}", "check the file is a complete .onnx export") from None
    return model


def first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0][:200] if text else type(err).__name__

"""The ONNX file a non-Keras source is cut on: an ONNX model itself, a SavedModel's export (opaque to Keras),
or a PyTorch program's export. convert and ``--list-splits`` both cut there, so they name the same tensors."""

from __future__ import annotations

from pathlib import Path

from .sources import SourceFormat, load_keras

__all__ = ["onnx_of"]


def onnx_of(path: str | Path, fmt: SourceFormat, scratch: Path) -> Path:
    """The ONNX file a non-Keras source is cut on: the file itself, or its export written under ``scratch``."""
    if fmt == SourceFormat.ONNX:
        return Path(path)
    scratch.mkdir(parents=True, exist_ok=True)
    if fmt == SourceFormat.PYTORCH:
        from .torch_export import export_pt2_onnx

        return export_pt2_onnx(path, scratch / f"{Path(path).stem}.pytorch.onnx")
    if fmt == SourceFormat.SAVEDMODEL:
        from .split_keras import keras_to_onnx

        wrapped = load_keras(path)
        return keras_to_onnx(wrapped, wrapped.inputs[0].name, tuple(wrapped.inputs[0].shape[1:]),
                             scratch / "savedmodel.onnx")
    raise ValueError(f"a {fmt.value} model is cut on its Keras layers")


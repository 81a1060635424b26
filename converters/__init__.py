"""edgekit.converters: the workstation side — a trained model with a re-encoder → a quantized split bundle.

``convert(...)`` (see :mod:`edgekit.converters.pipeline`) is the Python API; ``edgekit convert`` is a thin
CLI over it (:mod:`edgekit.converters.commands`). Importing this package is cheap: TensorFlow, ONNX and
ONNX Runtime are imported only when a conversion runs.
"""

from __future__ import annotations

from typing import Any

__all__ = ["convert", "ConvertResult"]


def __getattr__(name: str) -> Any:
    # Lazy: `edgekit.converters.commands` must stay importable without numpy-heavy modules loading.
    if name in __all__:
        from . import pipeline

        return getattr(pipeline, name)
    raise AttributeError(name)

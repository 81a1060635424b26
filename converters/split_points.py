"""Where a model can be cut: the tensors whose value alone carries everything the rest of the model needs.

A tensor is a valid single-tensor cut when walking back from the graph output reaches the input only through
it (nothing computed before it, and not the input itself, is read after it) and its shape is static apart
from the batch. Those are what ``edgekit convert --list-splits MODEL`` prints, with the code bytes each
would send per sample, and what a wrong ``--split`` is told to pick from (before Shape/Constant tensors).

    ONNX  ──simplify (onnx_simplify)──► node outputs in graph order ──crossing_tensors == {}──► SplitPoint
    Keras ──layers in order──────────────────────────────────────────crossing_tensors == []──► SplitPoint
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.errors import UsageError

from .onnx_source import onnx_of
from .sources import SourceFormat, detect_format, load_keras

__all__ = ["SplitPoint", "crossing_tensors", "onnx_split_points", "keras_split_points", "list_split_points",
           "split_point_lines"]


@dataclass(frozen=True)
class SplitPoint:
    """A valid cut: the tensor (ONNX) or layer (Keras) name, what produces it, its shape without batch."""

    name: str
    op: str
    shape: tuple[int, ...]

    @property
    def int8_bytes(self) -> int:
        return int(np.prod(self.shape))

    @property
    def float32_bytes(self) -> int:
        return 4 * self.int8_bytes

    def describe(self) -> str:
        return f"{self.op} {'x'.join(map(str, self.shape))}, {self.int8_bytes:,} B int8"

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "op": self.op, "shape": list(self.shape), "float32_bytes": self.float32_bytes,
                "int8_bytes": self.int8_bytes}


def _producers(model: Any) -> dict[str, Any]:
    return {out: node for node in model.graph.node for out in node.output}


def _ancestors(model: Any, tensor: str, producers: dict[str, Any]) -> set[int]:
    """ids of the nodes that compute ``tensor`` (the device half if the cut is there)."""
    seen: set[int] = set()
    stack = [tensor]
    while stack:
        node = producers.get(stack.pop())
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        stack.extend(i for i in node.input if i)
    return seen


def crossing_tensors(model: Any, code: str, producers: dict[str, Any] | None = None) -> dict[str, Any]:
    """Tensors computed before the cut (or graph inputs) that a server-side node reads: tensor → that node.

    ``producers`` (from ``_producers``) can be passed in by callers that test many cuts of one graph.
    """
    producers = producers if producers is not None else _producers(model)
    device = _ancestors(model, code, producers)
    initializers = {i.name for i in model.graph.initializer}
    inputs = {i.name for i in model.graph.input} - initializers
    crossing: dict[str, Any] = {}
    seen: set[int] = set()
    stack: list[tuple[str, Any]] = [(o.name, None) for o in model.graph.output]
    while stack:
        tensor, reader = stack.pop()
        if tensor == code or tensor in initializers:
            continue
        node = producers.get(tensor)
        if tensor in inputs or (node is not None and id(node) in device and len(node.input) > 0):
            crossing.setdefault(tensor, reader)
            continue
        if node is not None and id(node) not in seen:
            seen.add(id(node))
            stack.extend((i, node) for i in node.input if i)
    return crossing


def _static_shapes(model: Any) -> dict[str, tuple[int, ...]]:
    """Float tensors whose shape (after the batch axis) shape inference knows exactly."""
    from onnx import TensorProto

    shapes = {}
    for info in model.graph.value_info:
        tensor = info.type.tensor_type
        if tensor.elem_type != TensorProto.FLOAT or not tensor.HasField("shape") or len(tensor.shape.dim) < 2:
            continue
        dims = tensor.shape.dim[1:]
        if all(d.HasField("dim_value") and d.dim_value > 0 for d in dims):
            shapes[info.name] = tuple(int(d.dim_value) for d in dims)
    return shapes


def onnx_split_points(model: Any) -> list[SplitPoint]:
    """Valid cuts of a shape-inferred (simplified) ONNX model, in graph order."""
    shapes = _static_shapes(model)
    outputs = {o.name for o in model.graph.output}
    producers = _producers(model)
    points = []
    for node in model.graph.node:
        for name in node.output:
            if name in shapes and name not in outputs and not crossing_tensors(model, name, producers):
                points.append(SplitPoint(name, node.op_type, shapes[name]))
    return points


def keras_split_points(model: Any) -> list[SplitPoint]:
    """Valid cuts of a single-input, single-output Keras functional model (layer names), in layer order."""
    import keras

    from .split_keras import crossing_tensors as keras_crossing

    points = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer) or len(layer._inbound_nodes) != 1:
            continue
        output = layer.output
        shape = tuple(output.shape[1:])
        if output is model.outputs[0] or any(d is None for d in shape) or keras_crossing(model, output):
            continue
        points.append(SplitPoint(layer.name, type(layer).__name__, tuple(int(d) for d in shape)))
    return points


def list_split_points(model_path: str | Path | None) -> list[SplitPoint]:
    """The valid cuts of a model file (Keras by layer; ONNX after simplification; a SavedModel or a PyTorch
    program on its ONNX export)."""
    from .onnx_simplify import simplify_onnx

    if model_path is None:
        raise UsageError("--list-splits needs a model", "pass it: edgekit convert MODEL --list-splits")
    fmt = detect_format(model_path)
    if fmt == SourceFormat.KERAS:
        return keras_split_points(load_keras(model_path))
    with tempfile.TemporaryDirectory(prefix="edgekit-splits-") as scratch:
        onnx_path = onnx_of(model_path, fmt, Path(scratch))
        return onnx_split_points(simplify_onnx(onnx_path, Path(scratch) / "simplified.onnx"))


def split_point_lines(points: list[SplitPoint], model_path: str | Path) -> list[str]:
    """A table for the terminal: one line per cut point, input side first."""
    if not points:
        return [f"{Path(model_path).name}: no single-tensor cut point (every tensor has a branch around it or a "
                "dynamic shape)"]
    width, op_width = max(len(p.name) for p in points), max(len(p.op) for p in points)
    lines = [f"{len(points)} cut points of {Path(model_path).name}, input side first (bytes of the code per sample):",
             f"{'name':{width}}  {'op':{op_width}} {'shape':>12} {'float32 B':>11} {'int8 B':>9}"]
    lines += [f"{p.name:{width}}  {p.op:{op_width}} {'x'.join(map(str, p.shape)):>12} {p.float32_bytes:>11,} "
              f"{p.int8_bytes:>9,}" for p in points]
    return lines

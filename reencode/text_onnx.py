"""The ONNX halves of a text re-encoder (:class:`~.text_codes.TextCodec`), written with plain opset-17 ops.

    encoder.onnx  embedding float32 [batch, D] ─► layers ─► quantize ─► pack ─► code uint8 [batch, P]
    decoder.onnx  code uint8 [batch, P] (+ valid_bytes int64 [1], nested) ─► unpack ─► layers ─► embedding [batch, D]

The graphs are built node by node from the codec's arrays (no exporter), so they are exactly the numpy reference
in text_codes.py: the same rounding, the same bit order. Unpacking uses float Floor/Mod (every op here runs in
ONNX Runtime's default CPU provider).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .text_codes import Dense, Quantizer, TextCodec

__all__ = ["encoder_model", "decoder_model", "save_halves", "OPSET"]

OPSET = 17


class _Graph:
    """A growing list of nodes and initializers with fresh names."""

    def __init__(self) -> None:
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []
        self._count = 0

    def const(self, value: np.ndarray, name: str = "c") -> str:
        from onnx import numpy_helper

        self._count += 1
        tensor_name = f"{name}_{self._count}"
        self.initializers.append(numpy_helper.from_array(np.asarray(value), tensor_name))
        return tensor_name

    def op(self, op_type: str, *inputs: str, output: str | None = None, **attrs: Any) -> str:
        from onnx import helper

        self._count += 1
        out = output or f"{op_type.lower()}_{self._count}"
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], name=f"{op_type}_{self._count}", **attrs))
        return out

    def dense(self, x: str, layers: list[Dense]) -> str:
        for layer in layers:
            x = self.op("Add", self.op("MatMul", x, self.const(layer.weight.astype(np.float32), "weight")),
                        self.const(layer.bias.astype(np.float32), "bias"))
            if layer.relu:
                x = self.op("Relu", x)
        return x

    def pack(self, values: str, per_byte: int, radix: int, payload: int) -> str:
        """[batch, P * per_byte] small integers (as float) → [batch, P] uint8, first value most significant."""
        grouped = self.op("Reshape", values, self.const(np.array([-1, payload, per_byte], np.int64), "shape"))
        weights = self.const((float(radix) ** np.arange(per_byte - 1, -1, -1)).astype(np.float32), "place")
        total = self.op("ReduceSum", self.op("Mul", grouped, weights), self.const(np.array([2], np.int64), "axes"),
                        keepdims=0)
        return self.op("Cast", total, output="code", to=2)  # TensorProto.UINT8

    def unpack(self, code: str, per_byte: int, radix: int, dims: int) -> str:
        """The inverse of :meth:`pack`: [batch, P] uint8 → [batch, dims] float digits."""
        wide = self.op("Unsqueeze", self.op("Cast", code, to=1), self.const(np.array([2], np.int64), "axes"))
        place = self.const((float(radix) ** np.arange(per_byte - 1, -1, -1)).astype(np.float32), "place")
        digits = self.op("Mod", self.op("Floor", self.op("Div", wide, place)),
                         self.const(np.float32(radix), "radix"), fmod=1)
        return self.op("Reshape", digits, self.const(np.array([-1, dims], np.int64), "shape"))


def encoder_model(codec: TextCodec, dims: int) -> Any:
    """encoder.onnx as an ``onnx.ModelProto``: embedding [batch, dims] → code uint8 [batch, P]."""
    from onnx import TensorProto, helper

    graph = _Graph()
    z = graph.dense("embedding", codec.encoder)
    _quantize(graph, z, codec.quantizer)
    inputs = [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", dims])]
    outputs = [helper.make_tensor_value_info("code", TensorProto.UINT8, ["batch", codec.payload_bytes])]
    return _model(graph, inputs, outputs, "edgekit text re-encoder: encoder")


def decoder_model(codec: TextCodec, dims: int) -> Any:
    """decoder.onnx: code uint8 [batch, P] (and ``valid_bytes`` int64 [1] for nested codes) → embedding."""
    from onnx import TensorProto, helper

    graph = _Graph()
    z = _dequantize(graph, codec.quantizer)
    inputs = [helper.make_tensor_value_info("code", TensorProto.UINT8, ["batch", codec.payload_bytes])]
    if codec.prefixes:
        inputs.append(helper.make_tensor_value_info("valid_bytes", TensorProto.INT64, [1]))
        byte_of_value = np.arange(codec.quantizer.dims, dtype=np.int64) // codec.quantizer.values_per_byte
        sent = graph.op("Cast", graph.op("Less", graph.const(byte_of_value, "byte_of_value"), "valid_bytes"), to=1)
        z = graph.op("Mul", z, sent)
    x = graph.dense(z, codec.decoder)
    norm = graph.op("Sqrt", graph.op("ReduceSum", graph.op("Mul", x, x), graph.const(np.array([1], np.int64), "axes"),
                                     keepdims=1))
    graph.op("Div", x, graph.op("Max", norm, graph.const(np.float32(1e-12), "eps")), output="embedding")
    outputs = [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", dims])]
    return _model(graph, inputs, outputs, "edgekit text re-encoder: decoder")


def save_halves(codec: TextCodec, dims: int, folder: Path) -> None:
    """Write ``encoder.onnx`` and ``decoder.onnx`` into ``folder`` (checked by the ONNX checker)."""
    import onnx

    for name, model in (("encoder.onnx", encoder_model(codec, dims)), ("decoder.onnx", decoder_model(codec, dims))):
        onnx.checker.check_model(model)
        onnx.save(model, str(folder / name))


def _quantize(graph: _Graph, z: str, q: Quantizer) -> None:
    if q.kind == "binary":
        bits = graph.op("Cast", graph.op("Greater", z, graph.const(np.float32(0), "zero")), to=1)
        graph.pack(bits, 8, 2, q.payload_bytes)
    elif q.kind in ("scalar", "ternary"):
        scaled = graph.op("Add", graph.op("Div", z, graph.const(q.step.astype(np.float32), "step")),
                          graph.const((q.offset + 0.5).astype(np.float32), "offset"))
        top = graph.const(np.float32(q.radix - 1), "top")
        levels = graph.op("Clip", graph.op("Floor", scaled), graph.const(np.float32(0), "zero"), top)
        graph.pack(levels, q.values_per_byte, q.radix, q.payload_bytes)
    else:
        # |c|^2 - 2 z.c per sub-vector and centroid ([batch, M, 256]; |z|^2 does not change the argmin): a MatMul,
        # never the [batch, M, 256, d] difference tensor
        m, centroids, d = q.codebooks.shape
        sub = graph.op("Transpose", graph.op("Reshape", z, graph.const(np.array([-1, m, d], np.int64), "shape")),
                       perm=[1, 0, 2])
        dots = graph.op("MatMul", sub, graph.const(-2 * q.codebooks.transpose(0, 2, 1).astype(np.float32), "codebooks_t"))
        distances = graph.op("Add", dots, graph.const((q.codebooks ** 2).sum(-1)[:, None, :].astype(np.float32), "norms"))
        index = graph.op("ArgMin", distances, axis=2, keepdims=0)  # [M, batch]
        graph.op("Cast", graph.op("Transpose", index, perm=[1, 0]), output="code", to=2)


def _dequantize(graph: _Graph, q: Quantizer) -> str:
    if q.kind == "binary":
        bits = graph.unpack("code", 8, 2, q.dims)
        return graph.op("Sub", graph.op("Mul", bits, graph.const(np.float32(2), "two")), graph.const(np.float32(1), "one"))
    if q.kind in ("scalar", "ternary"):
        levels = graph.unpack("code", q.values_per_byte, q.radix, q.dims)
        centred = graph.op("Sub", levels, graph.const(q.offset.astype(np.float32), "offset"))
        return graph.op("Mul", centred, graph.const(q.step.astype(np.float32), "step"))
    m, centroids, d = q.codebooks.shape
    index = graph.op("Add", graph.op("Cast", "code", to=7),
                     graph.const(np.arange(m, dtype=np.int64) * centroids, "subspace_offset"))
    flat = graph.const(q.codebooks.reshape(m * centroids, d).astype(np.float32), "codebooks")
    return graph.op("Reshape", graph.op("Gather", flat, index, axis=0), graph.const(np.array([-1, m * d], np.int64),
                                                                                    "shape"))


def _model(graph: _Graph, inputs: list[Any], outputs: list[Any], doc: str) -> Any:
    from onnx import helper

    onnx_graph = helper.make_graph(graph.nodes, "reencoder", inputs, outputs, graph.initializers, doc_string=doc)
    model = helper.make_model(onnx_graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="edgekit")
    model.ir_version = 8
    return model

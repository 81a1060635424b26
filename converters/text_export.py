"""Sentence encoders to ONNX: the transformer exported with torch.onnx, then wrapped in plain ONNX ops so one
int64 input does everything the device and server need (docs/bundle.md, Text bundles).

    input_ids (N, S) ─► mask = ids != pad ─► drop all-pad columns ─► transformer(ids, mask, types=0)
                     ─► mean / CLS pooling ─► L2 normalize ─► embedding (N, D)

Deriving the mask in the graph keeps the model single-input like every edgekit device half, and dropping
all-pad columns makes a right-padded row give exactly the unpadded row's embedding, whatever the
quantization (dynamic int8 quantization measures the ranges of what it is given, padding included).
The tails: the device half ends in the int8 code (QuantizeLinear) or in a re-encoder's ``encoder.onnx``;
the server half begins at the dequantized code (L2 normalize, or Cast to bytes + ``decoder.onnx``).
"""

from __future__ import annotations

import inspect
import logging
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.errors import ConversionError, UsageError

from .sources import first_line
from .text_source import TextSource
from .torch_export import OPSET, _quiet_torch, import_torch

__all__ = ["export_transformer", "export_encoder", "fix_batch", "append_code", "server_model", "EMBEDDING", "INPUT_IDS"]

log = logging.getLogger(__name__)
INPUT_IDS, EMBEDDING, CODE = "input_ids", "embedding", "code"
_INNER = "edgekit_text/"  # prefix of the wrapper's own tensors and of merged re-encoder graphs


def export_transformer(source: TextSource, out: Path) -> Path:
    """The transformer alone (ids, mask, token types -> last hidden state) exported by torch.onnx."""
    torch = import_torch()
    from transformers import AutoModel

    with _quiet_torch():
        model = AutoModel.from_pretrained(str(source.transformer), local_files_only=True).eval()
    takes_types = "token_type_ids" in inspect.signature(model.forward).parameters  # DistilBERT has none

    class Transformer(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask, token_type_ids):
            types = {"token_type_ids": token_type_ids} if takes_types else {}
            return self.model(input_ids=input_ids, attention_mask=attention_mask, **types).last_hidden_state

    ids = torch.tensor([[101, 1037, 2158, 102], [101, 1037, 102, 0]])
    batch, seq = torch.export.Dim("batch"), torch.export.Dim("sequence", max=source.max_length)
    dims = {name: {0: batch, 1: seq} for name in ("input_ids", "attention_mask", "token_type_ids")}
    log.info("exporting the transformer of %s to ONNX (torch.onnx, opset %d)", source.folder, OPSET)
    with _quiet_torch():
        try:
            torch.onnx.export(Transformer(), (ids, (ids != 0).long(), torch.zeros_like(ids)), str(out),
                              input_names=list(dims), output_names=["last_hidden_state"], dynamic_shapes=dims,
                              opset_version=OPSET, dynamo=True, external_data=False, verbose=False)
        except Exception as err:  # the exporter's errors are long reports: keep their first line
            raise ConversionError(f"torch.onnx could not export {source.folder}: {first_line(err)}",
                                  "export it to ONNX yourself (onnx/model.onnx in the folder) and convert that") from None
    return out


def _rename_inputs(graph: Any, names: dict[str, str]) -> None:
    for node in graph.node:
        node.input[:] = [names.get(n, n) for n in node.input]


def _trim_and_mask(p: str) -> list[Any]:
    """input_ids -> {p}ids, {p}mask (int64) and {p}types (zeros), all-pad columns dropped."""
    from onnx import TensorProto, helper

    return [
        helper.make_node("Equal", [INPUT_IDS, f"{p}pad"], [f"{p}is_pad"]),
        helper.make_node("Not", [f"{p}is_pad"], [f"{p}keep"]),
        helper.make_node("Cast", [f"{p}keep"], [f"{p}keep64"], to=TensorProto.INT64),
        helper.make_node("ReduceSum", [f"{p}keep64", f"{p}one"], [f"{p}lengths"], keepdims=0),
        helper.make_node("ReduceMax", [f"{p}lengths"], [f"{p}longest"], keepdims=1),
        helper.make_node("Slice", [INPUT_IDS, f"{p}zero", f"{p}longest", f"{p}one"], [f"{p}ids"]),
        helper.make_node("Slice", [f"{p}keep64", f"{p}zero", f"{p}longest", f"{p}one"], [f"{p}mask"]),
        helper.make_node("Mul", [f"{p}ids", f"{p}zero"], [f"{p}types"]),
    ]


def _pool(hidden: str, pooling: str, p: str) -> list[Any]:
    """Token states -> {p}pooled: the first token's (CLS) or the mean over unmasked tokens."""
    from onnx import TensorProto, helper

    if pooling == "cls":
        return [helper.make_node("Gather", [hidden, f"{p}zero"], [f"{p}cls"], axis=1),
                helper.make_node("Squeeze", [f"{p}cls", f"{p}one"], [f"{p}pooled"])]
    return [
        helper.make_node("Cast", [f"{p}mask"], [f"{p}maskf"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", [f"{p}maskf", f"{p}minus1"], [f"{p}mask3"]),
        helper.make_node("Mul", [hidden, f"{p}mask3"], [f"{p}masked"]),
        helper.make_node("ReduceSum", [f"{p}masked", f"{p}one"], [f"{p}sum"], keepdims=0),
        helper.make_node("ReduceSum", [f"{p}mask3", f"{p}one"], [f"{p}count"], keepdims=0),
        helper.make_node("Max", [f"{p}count", f"{p}eps"], [f"{p}count_safe"]),
        helper.make_node("Div", [f"{p}sum", f"{p}count_safe"], [f"{p}pooled"]),
    ]


def _wrap(transformer: Any, source: TextSource) -> Any:
    """The single-input encoder around a transformer graph with inputs ids, mask and (optionally) token types."""
    import onnx
    from onnx import TensorProto, compose, helper, numpy_helper

    inputs = {i.name for i in transformer.graph.input}
    if "input_ids" not in inputs or "attention_mask" not in inputs:
        raise UsageError(f"the ONNX export in {source.folder} takes {sorted(inputs)}",
                         "export it with inputs input_ids and attention_mask (and token_type_ids)")
    transformer = compose.add_prefix(transformer, "transformer/")  # its names never clash with the wrapper's
    graph, p = transformer.graph, _INNER
    _rename_inputs(graph, {f"transformer/{name}": f"{p}{short}" for name, short in
                           (("input_ids", "ids"), ("attention_mask", "mask"), ("token_type_ids", "types"))})
    tail = _pool(graph.output[0].name, source.pooling, p)
    tail += _normalize(f"{p}pooled", EMBEDDING) if source.normalize else [
        helper.make_node("Identity", [f"{p}pooled"], [EMBEDDING])]
    body = list(graph.node)
    del graph.node[:]
    graph.node.extend([*_trim_and_mask(p), *body, *tail])
    const = {"pad": np.array(source.pad_id, np.int64), "zero": np.array([0], np.int64),
             "one": np.array([1], np.int64), "minus1": np.array([-1], np.int64), "eps": np.array(1e-9, np.float32),
             "norm_eps": np.array(1e-12, np.float32)}
    graph.initializer.extend(numpy_helper.from_array(v, f"{p}{k}") for k, v in const.items())
    del graph.input[:]
    graph.input.append(helper.make_tensor_value_info(INPUT_IDS, TensorProto.INT64, ["batch", "sequence"]))
    del graph.output[:]
    graph.output.append(helper.make_tensor_value_info(EMBEDDING, TensorProto.FLOAT, ["batch", source.dims]))
    del graph.value_info[:]
    onnx.checker.check_model(transformer)
    return transformer


def _normalize(x: str, out: str) -> list[Any]:
    """x / max(||x||, 1e-12) over the last axis, as torch.nn.functional.normalize and sentence-transformers do
    (the graph holds the constants edgekit_text/minus1 and edgekit_text/norm_eps)."""
    from onnx import helper

    p = _INNER
    return [helper.make_node("ReduceL2", [x, f"{p}minus1"], [f"{p}l2"], keepdims=1),
            helper.make_node("Max", [f"{p}l2", f"{p}norm_eps"], [f"{p}l2_safe"]),
            helper.make_node("Div", [x, f"{p}l2_safe"], [out])]


def export_encoder(source: TextSource, out: Path, scratch: Path) -> Path:
    """The float encoder (input_ids -> embedding) at ``out``: from the folder's weights or its ONNX export."""
    import onnx

    raw = source.onnx or export_transformer(source, scratch / "transformer.onnx")
    onnx.save(_wrap(_load_at_opset(raw, OPSET), source), str(out))  # the wrapper's reductions need opset 18
    return out


def fix_batch(path: Path, out: Path) -> Path:
    """A copy of the encoder at ``path`` with a static batch of 1: what the device runs, one text at a time."""
    import onnx

    model = onnx.load(str(path))
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 1
    model.graph.output[0].type.tensor_type.shape.dim[0].dim_value = 1
    onnx.save(model, str(out))
    return out


def _load_at_opset(path: Path, opset: int) -> Any:
    import onnx
    from onnx import version_converter

    model = onnx.load(str(path))
    have = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), opset)
    return model if have == opset else version_converter.convert_version(model, opset)


def _opset(model: Any) -> int:
    return next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))


def append_code(encoder: Path, out: Path, scale: float | None = None, reencoder: Path | None = None) -> Path:
    """The device half: ``encoder`` followed by the int8 quantization of the embedding (``scale``, zero point
    0, output int8 ``code``) or by the re-encoder's ``encoder.onnx`` (its uint8 ``code``)."""
    import onnx
    from onnx import TensorProto, compose, helper, numpy_helper

    model = onnx.load(str(encoder))
    embedding = model.graph.output[0].name
    if reencoder is None:
        graph = model.graph
        graph.initializer.extend([numpy_helper.from_array(np.array(scale, np.float32), f"{_INNER}code_scale"),
                                  numpy_helper.from_array(np.array(0, np.int8), f"{_INNER}code_zero")])
        graph.node.append(helper.make_node("QuantizeLinear", [embedding, f"{_INNER}code_scale", f"{_INNER}code_zero"],
                                           [CODE]))
        dims = _dims(model)
        del graph.output[:]
        graph.output.append(helper.make_tensor_value_info(CODE, TensorProto.INT8, [1, dims]))
        onnx.save(model, str(out))
        return out
    tail = compose.add_prefix(_load_at_opset(reencoder, _opset(model)), "reencoder/")
    tail.ir_version = model.ir_version
    merged = compose.merge_models(model, tail, io_map=[(embedding, f"reencoder/{EMBEDDING}")])
    _rename_output(merged.graph, f"reencoder/{CODE}", CODE)
    onnx.save(merged, str(out))
    return out


def _dims(model: Any) -> int:
    return model.graph.output[0].type.tensor_type.shape.dim[1].dim_value


def _rename_output(graph: Any, old: str, new: str) -> None:
    for node in graph.node:
        node.output[:] = [new if n == old else n for n in node.output]
    for value in graph.output:
        if value.name == old:
            value.name = new


def server_model(out: Path, dims: int, decoder: Path | None = None, payload: int | None = None) -> Path:
    """The server half: float32 dequantized code -> L2-normalized embedding (plain), or Cast to bytes then the
    re-encoder's ``decoder.onnx``; a nested decoder's ``valid_bytes`` input defaults to the full code."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    if decoder is None:
        minus1 = numpy_helper.from_array(np.array([-1], np.int64), f"{_INNER}minus1")
        eps = numpy_helper.from_array(np.array(1e-12, np.float32), f"{_INNER}norm_eps")
        graph = helper.make_graph(_normalize(CODE, EMBEDDING), "edgekit_text_server",
                                  [helper.make_tensor_value_info(CODE, TensorProto.FLOAT, ["batch", dims])],
                                  [helper.make_tensor_value_info(EMBEDDING, TensorProto.FLOAT, ["batch", dims])],
                                  [minus1, eps])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
        onnx.checker.check_model(model)
        onnx.save(model, str(out))
        return out
    model = onnx.load(str(decoder))
    graph = model.graph
    names = [i.name for i in graph.input]
    if names[0] != CODE:
        raise UsageError(f"{decoder} takes {names} but its first input must be 'code'", "re-run edgekit reencode")
    _rename_inputs(graph, {CODE: f"{_INNER}bytes"})
    graph.node.insert(0, helper.make_node("Cast", [CODE], [f"{_INNER}bytes"], to=TensorProto.UINT8))
    graph.input[0].type.tensor_type.elem_type = TensorProto.FLOAT
    if "valid_bytes" in names:  # nested codes: a default lets plain runners decode the full code
        graph.initializer.append(numpy_helper.from_array(np.array([payload], np.int64), "valid_bytes"))
    onnx.checker.check_model(model)
    onnx.save(model, str(out))
    return out

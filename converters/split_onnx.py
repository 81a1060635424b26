"""Cut an ONNX graph at a tensor (the code) with ``onnx.utils.Extractor``.

The graph is simplified first (:mod:`edgekit.converters.onnx_simplify`: the exporter's run-time shape
arithmetic folded, the split's name kept). Same rule as for Keras then: walking back from the graph outputs
must reach the model inputs only through the code. A tensor computed before the cut (or a graph input) that
a server-side node reads directly crosses the cut, and the split is refused naming it, what reads it, and
what would fix it. The float halves are checked against the source model on real samples
(:attr:`Halves.verify`) once convert has read them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np

from edgekit.errors import ConversionError, UsageError

from .halves import Halves, batched, crossing_error, nearest_names_error
from .onnx_simplify import check_same_outputs, simplify_onnx
from .sources import load_onnx
from .split_points import crossing_tensors, onnx_split_points

__all__ = ["split_onnx", "join_onnx", "onnx_runner"]


def onnx_runner(path: Path) -> Callable[[np.ndarray], np.ndarray]:
    """A float ONNX model as a function of its single input (first output); static batch-1 graphs sample by sample."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    inp = session.get_inputs()[0]
    return batched(lambda x: session.run(None, {inp.name: np.asarray(x, np.float32)})[0],
                   batch=1 if inp.shape[0] == 1 else 256)


def _io(model: Any, kind: str) -> Any:
    values = [v for v in getattr(model.graph, kind) if v.name not in {i.name for i in model.graph.initializer}]
    if len(values) != 1:
        raise UsageError(f"ONNX model has {len(values)} {kind}s", f"edgekit bundles carry models with one {kind[:-1]}")
    return values[0]


def _dims(value_info: Any) -> tuple[int | None, ...]:
    dims = value_info.type.tensor_type.shape.dim
    return tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in dims[1:])


def _extract(model: Any, inputs: list[str], outputs: list[str], path: Path) -> Path:
    import onnx
    import onnx.utils

    sub = onnx.utils.Extractor(model).extract_model(inputs, outputs)
    onnx.save(sub, str(path))
    return path


def _why_crossing(model: Any, tensor: str, reader: Any) -> tuple[str, str]:
    """What reads ``tensor`` after the cut, in words, and the fix for that case."""
    inputs = {i.name for i in model.graph.input}
    kind = "the input" if tensor in inputs else "the tensor"
    if reader is not None and reader.op_type == "Shape":
        return (f"the server half reads the shape of {kind} {tensor!r} (Shape node {reader.name!r}): run-time shape "
                "arithmetic the exporter wrote for a dynamic batch, e.g. `x.view(x.size(0), -1)` or "
                "`interpolate(y, size=x.shape[-2:])`",
                "export with a fixed batch size (the shape then folds away), or take sizes from tensors after the cut")
    what = f"{reader.op_type} node {reader.name!r}" if reader is not None else "a graph output"
    if tensor in inputs:
        return f"{what} reads the input {tensor!r} after the cut", "cut after the last node that reads the input"
    return (f"{what} reads {tensor!r} from before the cut (a skip connection around it)",
            "cut where every path to the output passes (a block output)")


def _crossing_error(model: Any, split: str, crossing: dict[str, Any]) -> ConversionError:
    reasons = [_why_crossing(model, tensor, reader) for tensor, reader in sorted(crossing.items())]
    position = {name: i for i, name in enumerate(o for node in model.graph.node for o in node.output)}
    points = [p.name for p in onnx_split_points(model)]
    before = [p for p in points if position[p] < position[split]][-1:]
    after = [p for p in points if position[p] > position[split]][:1]
    nearest = f"; the nearest valid cuts are {', '.join(before + after)}" if before + after else ""
    return crossing_error(split, list(crossing), why="; ".join(dict.fromkeys(r for r, _ in reasons)),
                          fix="; ".join(dict.fromkeys(f for _, f in reasons)) + nearest
                          + " (edgekit convert --list-splits MODEL lists them all)")


def split_onnx(model_path: Path, split: str, source_format: str, workdir: Path) -> Halves:
    """Cut the ONNX model at tensor ``split`` into float device and server ONNX files."""
    source = load_onnx(model_path)
    source_names = {o for node in source.graph.node for o in node.output}
    model = simplify_onnx(model_path, workdir / "simplified.onnx", keep=[split] if split in source_names else [])
    inp, out = _io(model, "input"), _io(model, "output")
    graph_outputs = {o.name for o in model.graph.output}
    names = [o for node in model.graph.node for o in node.output if o and o not in graph_outputs]
    if split not in names:
        raise nearest_names_error(split, names, "tensor", {p.name: p.describe() for p in onnx_split_points(model)})
    crossing = crossing_tensors(model, split)
    if crossing:
        raise _crossing_error(model, split, crossing)
    infos = {v.name: v for v in model.graph.value_info}
    if split not in infos or any(d is None for d in _dims(infos[split])):
        raise ConversionError(f"the shape of tensor {split!r} is unknown or dynamic after ONNX shape inference",
                              "export the model with a fixed input size so the code shape is static")
    device = _extract(model, [inp.name], [split], workdir / "device_fp32.onnx")
    server = _extract(model, [split], [out.name], workdir / "server_fp32.onnx")
    reference, device_float, server_float = onnx_runner(model_path), onnx_runner(device), onnx_runner(server)
    return Halves(
        source_format=source_format,
        split=split,
        input_name=inp.name,
        input_shape=_dims(inp),
        code_name=split,
        code_shape=_dims(infos[split]),
        output_name=out.name,
        output_shape=_dims(out),
        device_onnx=device,
        server_onnx=server,
        reference=reference,
        device_float=device_float,
        verify=lambda x: check_same_outputs(reference, lambda v: server_float(device_float(v)), x),
    )


def join_onnx(device_path: Path, server_path: Path, source_format: str, workdir: Path) -> Halves:
    """Already split ONNX halves: the code is the device output, the reference server(device(x))."""
    import onnx

    device, server = load_onnx(device_path), load_onnx(server_path)
    inp, code, server_in, out = _io(device, "input"), _io(device, "output"), _io(server, "input"), _io(server, "output")
    if _dims(code) != _dims(server_in):
        raise UsageError(f"device model outputs {_dims(code)} but server model takes {_dims(server_in)}",
                         "pass the two halves of the same model")
    if any(d is None for d in _dims(code)):
        raise ConversionError(f"the device output {code.name!r} has a dynamic shape", "the code must have a fixed shape")
    device_copy, server_copy = workdir / "device_fp32.onnx", workdir / "server_fp32.onnx"
    onnx.save(device, str(device_copy))
    onnx.save(server, str(server_copy))
    run_device, run_server = onnx_runner(device_copy), onnx_runner(server_copy)
    return Halves(
        source_format=source_format,
        split="pre-split",
        input_name=inp.name,
        input_shape=_dims(inp),
        code_name=code.name,
        code_shape=_dims(code),
        output_name=out.name,
        output_shape=_dims(out),
        device_onnx=device_copy,
        server_onnx=server_copy,
        reference=lambda x: run_server(run_device(x)),
        device_float=run_device,
    )

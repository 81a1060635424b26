"""Cut an ONNX graph at a tensor (the code) with ``onnx.utils.Extractor``.

Same rule as for Keras: walking back from the graph outputs must reach the model inputs only through the
code. A tensor computed before the cut (or a graph input) that a server-side node reads directly crosses
the cut, and the split is refused naming those tensors.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np

from edgekit.errors import ConversionError, UsageError

from .halves import Halves, batched, crossing_error, nearest_names_error
from .sources import load_onnx

__all__ = ["split_onnx", "join_onnx", "onnx_runner"]


def onnx_runner(path: Path) -> Callable[[np.ndarray], np.ndarray]:
    """A float ONNX model as a function of its single input (first output)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return batched(lambda x: session.run(None, {name: np.asarray(x, np.float32)})[0])


def _io(model: Any, kind: str) -> Any:
    values = [v for v in getattr(model.graph, kind) if v.name not in {i.name for i in model.graph.initializer}]
    if len(values) != 1:
        raise UsageError(f"ONNX model has {len(values)} {kind}s", f"edgekit bundles carry models with one {kind[:-1]}")
    return values[0]


def _dims(value_info: Any) -> tuple[int | None, ...]:
    dims = value_info.type.tensor_type.shape.dim
    return tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in dims[1:])


def _producers(model: Any) -> dict[str, Any]:
    return {out: node for node in model.graph.node for out in node.output}


def _ancestors(model: Any, tensor: str) -> set[int]:
    producers = _producers(model)
    seen: set[int] = set()
    stack = [tensor]
    while stack:
        node = producers.get(stack.pop())
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        stack.extend(i for i in node.input if i)
    return seen


def crossing_tensors(model: Any, code: str) -> list[str]:
    """Tensors produced before the cut (or graph inputs) that server-side nodes consume directly."""
    producers = _producers(model)
    device = _ancestors(model, code)
    initializers = {i.name for i in model.graph.initializer}
    inputs = {i.name for i in model.graph.input} - initializers
    crossing: set[str] = set()
    seen: set[int] = set()
    stack = [o.name for o in model.graph.output]
    while stack:
        tensor = stack.pop()
        if tensor == code or tensor in initializers:
            continue
        node = producers.get(tensor)
        if tensor in inputs or (node is not None and id(node) in device and len(node.input) > 0):
            crossing.add(tensor)
            continue
        if node is not None and id(node) not in seen:
            seen.add(id(node))
            stack.extend(i for i in node.input if i)
    return sorted(crossing)


def _extract(model: Any, inputs: list[str], outputs: list[str], path: Path) -> Path:
    import onnx
    import onnx.utils

    sub = onnx.utils.Extractor(model).extract_model(inputs, outputs)
    onnx.save(sub, str(path))
    return path


def split_onnx(model_path: Path, split: str, source_format: str, workdir: Path) -> Halves:
    """Cut the ONNX model at tensor ``split`` into float device and server ONNX files."""
    import onnx

    model = onnx.shape_inference.infer_shapes(load_onnx(model_path))
    inp, out = _io(model, "input"), _io(model, "output")
    graph_outputs = {o.name for o in model.graph.output}
    names = [o for node in model.graph.node for o in node.output if o and o not in graph_outputs]
    if split not in names:
        raise nearest_names_error(split, names, "tensor")
    crossing = crossing_tensors(model, split)
    if crossing:
        raise crossing_error(split, crossing)
    infos = {v.name: v for v in model.graph.value_info}
    if split not in infos or any(d is None for d in _dims(infos[split])):
        raise ConversionError(f"the shape of tensor {split!r} is unknown or dynamic after ONNX shape inference",
                              "export the model with a fixed input size so the code shape is static")
    device = _extract(model, [inp.name], [split], workdir / "device_fp32.onnx")
    server = _extract(model, [split], [out.name], workdir / "server_fp32.onnx")
    full = workdir / "full_fp32.onnx"
    onnx.save(model, str(full))
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
        reference=onnx_runner(full),
        device_float=onnx_runner(device),
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

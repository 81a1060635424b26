"""Cut a Keras functional model at a layer (the code) and export both float halves to ONNX.

The device half is ``Model(inputs, layer.output)``; the server half ``Model(layer.output, outputs)``.
Before cutting, the graph is walked back from the outputs: any tensor the server half would need that is
computed before the cut (a skip connection around the bottleneck) means the device would have to send more
than the code, so the split is refused and those tensors are named.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgekit.errors import ConversionError, UsageError

from .halves import Halves, batched, crossing_error, nearest_names_error
from .sources import import_tensorflow

__all__ = ["cut_layer", "split_keras", "join_keras", "keras_to_onnx"]

ONNX_OPSET = 17


def _single(tensors: Any, what: str, model: Any) -> Any:
    tensors = list(tensors) if isinstance(tensors, (list, tuple)) else [tensors]
    if len(tensors) != 1:
        raise UsageError(f"model {model.name} has {len(tensors)} {what}s", f"edgekit bundles carry models with one {what}")
    return tensors[0]


def _shape(tensor: Any) -> tuple[int | None, ...]:
    return tuple(None if d is None else int(d) for d in tensor.shape[1:])


def _node_of(tensor: Any) -> tuple[Any, Any]:
    operation, node_index, _ = tensor._keras_history
    return operation, operation._inbound_nodes[node_index]


def _tensor_key(tensor: Any) -> tuple[int, int, int]:
    operation, node_index, tensor_index = tensor._keras_history
    return id(operation), node_index, tensor_index


def _tensor_name(tensor: Any) -> str:
    operation, _, tensor_index = tensor._keras_history
    return operation.name if tensor_index == 0 else f"{operation.name}:{tensor_index}"


def _device_nodes(code: Any) -> set[int]:
    """ids of the nodes that compute the code (the device half)."""
    seen: set[int] = set()
    stack = [code]
    while stack:
        _, node = _node_of(stack.pop())
        if id(node) in seen:
            continue
        seen.add(id(node))
        stack.extend(node.input_tensors)
    return seen


def crossing_tensors(model: Any, code: Any) -> list[str]:
    """Tensors from before the cut (or model inputs) that the server half would consume directly."""
    import keras

    device = _device_nodes(code)
    code_key = _tensor_key(code)
    crossing: set[str] = set()
    seen: set[int] = set()
    stack = list(model.outputs)
    while stack:
        tensor = stack.pop()
        if _tensor_key(tensor) == code_key:
            continue
        operation, node = _node_of(tensor)
        if id(node) in device or isinstance(operation, keras.layers.InputLayer):
            crossing.add(_tensor_name(tensor))
            continue
        if id(node) not in seen:
            seen.add(id(node))
            stack.extend(node.input_tensors)
    return sorted(crossing)


def keras_to_onnx(model: Any, input_name: str, input_shape: tuple[int | None, ...], path: Path) -> Path:
    """Export a float Keras model to ONNX with a dynamic batch axis (tf2onnx, opset 17)."""
    tf = import_tensorflow()
    import tf2onnx

    spec = (tf.TensorSpec((None, *input_shape), tf.float32, name=input_name),)
    try:
        tf2onnx.convert.from_keras(model, input_signature=spec, opset=ONNX_OPSET, output_path=str(path))
    except Exception as err:  # tf2onnx raises bare exceptions for unsupported ops
        raise ConversionError(f"ONNX export of {model.name} failed: {str(err).splitlines()[0][:200]}",
                              "use ops tf2onnx supports, or pass an ONNX model") from None
    return path


def _rename_onnx_output(path: Path, name: str) -> None:
    """tf2onnx names outputs after internal tensors; give the graph output the manifest's name."""
    import onnx

    model = onnx.load(str(path))
    old = model.graph.output[0].name
    if old == name:
        return
    for node in model.graph.node:
        node.output[:] = [name if o == old else o for o in node.output]
        node.input[:] = [name if i == old else i for i in node.input]
    model.graph.output[0].name = name
    onnx.save(model, str(path))


def _halves(device: Any, server: Any, reference: Any, split: str, source_format: str, workdir: Path) -> Halves:
    input_tensor = _single(device.inputs, "input", device)
    code_tensor = _single(device.outputs, "output", device)
    output_tensor = _single(server.outputs, "output", server)
    input_name = _tensor_name(input_tensor)
    code_name = split if split != "pre-split" else "code"
    output_name = _tensor_name(output_tensor)
    input_shape, code_shape = _shape(input_tensor), _shape(code_tensor)
    device_onnx = keras_to_onnx(device, input_name, input_shape, workdir / "device_fp32.onnx")
    server_onnx = keras_to_onnx(server, code_name, code_shape, workdir / "server_fp32.onnx")
    _rename_onnx_output(device_onnx, code_name)
    _rename_onnx_output(server_onnx, output_name)
    return Halves(
        source_format=source_format,
        split=split,
        input_name=input_name,
        input_shape=input_shape,
        code_name=code_name,
        code_shape=code_shape,
        output_name=output_name,
        output_shape=_shape(output_tensor),
        device_onnx=device_onnx,
        server_onnx=server_onnx,
        reference=batched(lambda x: np.asarray(reference(x, training=False))),
        device_float=batched(lambda x: np.asarray(device(x, training=False))),
        device_keras=device,
    )


def cut_layer(model: Any, split: str) -> Any:
    """The layer ``split`` of a one-input, one-output model, checked to be a clean cut (no branch crosses it)."""
    import keras

    _single(model.inputs, "input", model)
    _single(model.outputs, "output", model)
    names = [layer.name for layer in model.layers]
    if split not in names:
        raise nearest_names_error(split, names, "layer")
    layer = model.get_layer(split)
    if isinstance(layer, keras.layers.InputLayer) or layer.output is model.outputs[0]:
        raise UsageError(f"split {split!r} is the model's input or output layer", "split at an inner layer: the code")
    crossing = crossing_tensors(model, layer.output)
    if crossing:
        raise crossing_error(split, crossing)
    return layer


def split_keras(model: Any, split: str, source_format: str, workdir: Path) -> Halves:
    """Cut ``model`` at layer ``split``; refuse when branches cross the cut."""
    import keras

    layer = cut_layer(model, split)
    # Single tensors, not lists, as inputs: Keras warns when a list-input model is called with an array.
    device = keras.Model(model.inputs[0], layer.output, name="device")
    server = keras.Model(layer.output, model.outputs[0], name="server")
    reference = keras.Model(model.inputs[0], model.outputs[0], name="reference")
    return _halves(device, server, reference, split, source_format, workdir)


def join_keras(device: Any, server: Any, source_format: str, workdir: Path) -> Halves:
    """Already split halves: check the code shapes agree; the reference is server(device(x))."""
    code = _single(device.outputs, "output", device)
    server_in = _single(server.inputs, "input", server)
    if _shape(code) != _shape(server_in):
        raise UsageError(f"device model outputs {_shape(code)} but server model takes {_shape(server_in)}",
                         "pass the two halves of the same model")

    def reference(x: np.ndarray, training: bool = False) -> Any:
        return server(device(x, training=training), training=training)

    return _halves(device, server, reference, "pre-split", source_format, workdir)

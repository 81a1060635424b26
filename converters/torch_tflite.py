"""PyTorch device half → int8 TFLite with Google's ``litert-torch`` (the ``pytorch-tflite`` extra).

    model.pt2 ──cut at the split's FX node──► device nn.Module (input → code), batch 1
              ──pt2e: observers, calibration on the samples, convert_pt2e──► quantized module
              ──litert_torch.convert──► int8 TFLite, I/O retyped to the target profile's dtypes

The cut is the one the ONNX path makes: ``torch.onnx``'s dynamo exporter names a tensor after the FX node
that computes it (``relu_6``), so the same name finds the node in the program's graph (a program made by
``edgekit reencode`` names its code node in its record, as for the ONNX export). The PyTorch half is checked
against the ONNX device half on real samples before it is quantized, so both device formats compute the same
code. Weights are int8 (per channel unless the profile says per tensor), activations int8 with ranges from
histogram observers over the calibration samples; litert-torch folds the input and output quantization into
int8 I/O, which the profile may turn into uint8 (Edge TPU) or float32 input with a QUANTIZE op at the edge,
as the TF converter does for Keras models. PyTorch and litert-torch are imported only here, on the
workstation: the device runs the ``.tflite`` with ai-edge-litert alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from edgekit.errors import ConversionError, UsageError
from edgekit.reencode.metadata import CODE_NAME, read_metadata

from .sources import first_line
from .targets import IOType, TfliteOptions
from .tflite_export import TfliteModel, describe_tflite, quiet_native
from .torch_export import import_torch, load_program

__all__ = ["TorchDeviceHalf", "torch_device_half", "import_litert_torch", "export_torch_tflite"]

_TOLERANCE = 1e-4  # relative: the PyTorch and ONNX device halves differ by float rounding only


@dataclass(frozen=True)
class TorchDeviceHalf:
    """Where the device half lives in a ``.pt2``: the program, and the FX node of the code (None: the whole
    program is the device half, as with ``--device-model device.pt2``)."""

    program: Path
    node: str | None


def torch_device_half(path: str | Path, split: str | None) -> TorchDeviceHalf:
    """The device half of ``path`` cut at ``split`` (an ONNX tensor name, or ``code`` of a re-encoded program)."""
    record = read_metadata(path) if split == CODE_NAME else None
    node = record["code_node"] if record and record.get("code_node") else split
    return TorchDeviceHalf(Path(path), node)


def import_litert_torch() -> Any:
    try:
        import litert_torch
    except ImportError:
        raise UsageError("TFLite targets for a PyTorch model need litert-torch, which is not installed here",
                         "pip install 'edgekit-split[pytorch-tflite]' (litert-torch 0.10), or use ONNX outputs: "
                         "--runtime onnx with --target cpu or rpi") from None
    return litert_torch


def _cut(torch: Any, half: TorchDeviceHalf) -> tuple[Any, bool]:
    """The device half as a graph module: the program's graph with the code node as its output; and whether
    the code is an integer code (see :func:`_integer_code`), whose rounding is left to the int8 output."""
    program = load_program(torch, half.program)
    if half.node is None:
        return program.module(), False
    name = program_node(program, half.node)
    if name is not None:
        module = program.module()
        node = next((n for n in module.graph.nodes if n.name == name and n.op == "call_function"), None)
        if node is not None:
            unrounded = _integer_code(torch, node)
            output = next(n for n in module.graph.nodes if n.op == "output")
            output.args = ((unrounded or node,),)  # the flat outputs, as the out_spec unflattens them
            # Nothing in an eval-mode program has side effects: an inference dropout (impure to torch.fx)
            # would otherwise keep the whole server half alive behind the cut.
            module.graph.eliminate_dead_code(is_impure_node=lambda n: n.op in ("placeholder", "output"))
            module.recompile()
            return module, unrounded is not None
    raise ConversionError(f"split {half.node!r} of the ONNX export is not a node of the program {half.program}",
                          "choose a split that --list-splits shows with an ATen op name (relu_6, add_3), or use "
                          "ONNX outputs (--runtime onnx)")


def program_node(program: Any, name: str) -> str | None:
    """The program's node computing ONNX tensor ``name``. The exporter decomposes the program first, which
    renames some nodes (``add_536`` for the program's ``add_6``): those are traced back through the
    decomposition's provenance (``from_node``), so the cut is made in the program as saved, whose
    conv → batch-norm pairs pt2e folds (a decomposed batch norm would stay float)."""
    if any(n.name == name for n in program.graph.nodes):
        return name
    node = next((n for n in program.run_decompositions().graph.nodes if n.name == name), None)
    sources = node.meta.get("from_node") if node is not None else None
    if not sources:
        return None
    source = sources[-1]
    while source.from_node:
        source = source.from_node[-1]
    return source.name


def _integer_code(torch: Any, node: Any) -> Any | None:
    """The tensor ``y`` of an entropic code ``clamp(round(y), -128, 127)`` (edgekit reencode's IntegerCode), or
    None. TFLite has no int8 ROUND: the code is quantized at scale 1, zero point 0 instead, which rounds and
    clamps to the same integers (as the Keras layer's FakeQuant does), and the ROUND/clamp pair is dropped."""
    aten = torch.ops.aten
    rounded = node.args[0] if node.target == aten.clamp.default and len(node.args) == 3 else None
    if rounded is None or tuple(node.args[1:]) != (-128, 127) or getattr(rounded, "target", None) != aten.round.default:
        return None
    return rounded.args[0]


def _check_cut(torch: Any, module: Any, onnx_device: Callable[[np.ndarray], np.ndarray], x: np.ndarray,
               integer: bool) -> None:
    """The PyTorch half must compute the ONNX device half's code, or the two device formats would differ."""
    with torch.no_grad():
        got = np.concatenate([module(torch.from_numpy(x[i : i + 1])).numpy() for i in range(len(x))])
    got = np.clip(np.round(got), -128, 127) if integer else got
    expected = np.asarray(onnx_device(x), np.float32)
    if got.shape != expected.shape:
        raise ConversionError(f"the PyTorch device half outputs {got.shape[1:]} but the ONNX one {expected.shape[1:]}",
                              "report this model to the edgekit maintainers; use --runtime onnx meanwhile")
    error = float(np.max(np.abs(got - expected)) / max(float(np.max(np.abs(expected))), 1e-12))
    if not error <= _TOLERANCE:
        raise ConversionError(f"the PyTorch device half differs from the ONNX one by {error:.2e} (relative) on "
                              f"{len(x)} calibration samples", "report this model to the edgekit maintainers; use "
                              "--runtime onnx meanwhile")


def _program_quantizer(torch: Any, per_channel: bool, integer_code: bool) -> Any:
    """litert-torch's pt2e quantizer, made to see a saved program's ops.

    Its annotators find add, mul, cat and pooling by the Python function that made them (the nodes'
    ``source_fn_stack``), which ``torch.export.save`` does not keep: without it a residual add and the ReLU
    after it stay float. The loaded nodes get that source back from their ATen op, and ops that only move or
    pick values (the option-A shortcut's strided slice and channel pad, average pooling, reshapes) share
    their input's quantization, as the TF converter quantizes them, so no float island is left for Vela.
    A convolution followed by ReLU6 (``hardtanh``, EfficientNet-Lite's activation) is quantized after the
    clamp, as conv → ReLU is: litert-torch has no pattern for it, and quantized before it the [0, 6] output
    got a few levels of the convolution's far wider range (14 dB code SQNR after EfficientNet-Lite2's first
    block). ``integer_code``: the output's range is fixed at scale 1, zero point 0 (an entropic code).
    """
    import torch.nn.functional as F
    from litert_torch.quantize import pt2e_quantizer
    from litert_torch.quantize import pt2e_quantizer_utils as qutils
    from torchao.quantization.pt2e.quantizer import (FixedQParamsQuantizationSpec, QuantizationAnnotation,
                                                     SharedQuantizationSpec)

    aten = torch.ops.aten
    sources = {aten.add.Tensor: torch.add, aten.mul.Tensor: torch.mul, aten.cat.default: torch.cat,
               aten.relu.default: torch.nn.ReLU, aten.max_pool2d.default: F.max_pool2d,
               aten.adaptive_avg_pool2d.default: F.adaptive_avg_pool2d}
    sharing = {aten.slice.Tensor, aten.pad.default, aten.constant_pad_nd.default, aten.avg_pool2d.default,
               aten.relu.default, aten.max_pool2d.default, aten.reshape.default, aten.view.default,
               aten.flatten.using_ints, aten.squeeze.dim, aten.unsqueeze.default, aten.permute.default}

    convs = {aten.conv1d.default, aten.conv2d.default, aten.convolution.default}

    def annotate_clamped_convs(model: Any, config: Any) -> None:
        for node in model.graph.nodes:
            conv = node.args[0] if node.op == "call_function" and node.target == aten.hardtanh.default else None
            if getattr(conv, "target", None) not in convs or len(conv.users) != 1:
                continue
            qspecs = {conv.args[0]: qutils.get_input_act_qspec(config), conv.args[1]: qutils.get_weight_qspec(config)}
            if len(conv.args) > 2 and isinstance(conv.args[2], torch.fx.Node):
                qspecs[conv.args[2]] = qutils.get_bias_qspec(config)
            conv.meta["quantization_annotation"] = QuantizationAnnotation(input_qspec_map=qspecs, _annotated=True)
            node.meta["quantization_annotation"] = QuantizationAnnotation(
                output_qspec=qutils.get_output_act_qspec(config), _annotated=True)

    def annotated_output(node: Any) -> bool:
        note = node.meta.get("quantization_annotation") if hasattr(node, "meta") else None
        return bool(note and note._annotated and note.output_qspec is not None)

    class ProgramQuantizer(pt2e_quantizer.PT2EQuantizer):
        def annotate(self, model: Any) -> Any:
            for node in model.graph.nodes:
                if node.op == "call_function" and node.target in sources and not node.meta.get("source_fn_stack"):
                    node.meta["source_fn_stack"] = [(node.name, sources[node.target])]
            annotate_clamped_convs(model, self.global_config)
            model = super().annotate(model)
            for node in model.graph.nodes:  # in graph order, so chains of such ops share one range
                if (node.op == "call_function" and node.target in sharing and node.args
                        and annotated_output(node.args[0]) and not node.meta.get("quantization_annotation")):
                    shared = SharedQuantizationSpec(node.args[0])
                    node.meta["quantization_annotation"] = QuantizationAnnotation(
                        input_qspec_map={node.args[0]: shared}, output_qspec=shared, _annotated=True)
            if integer_code:
                fix_output(model)
            return model

    def fix_output(model: Any) -> None:
        """The range of the tensor the code is computed from (through shared-range ops) set to [-128, 127]."""
        node = next(n for n in model.graph.nodes if n.op == "output").args[0][0]
        while annotated_output(node) and isinstance(node.meta["quantization_annotation"].output_qspec,
                                                    SharedQuantizationSpec):
            node = node.args[0]
        if annotated_output(node):  # else the code stays float and convert says the code is not quantized
            node.meta["quantization_annotation"].output_qspec = FixedQParamsQuantizationSpec(
                dtype=torch.int8, scale=1.0, zero_point=0, quant_min=-128, quant_max=127,
                qscheme=torch.per_tensor_affine)

    return ProgramQuantizer().set_global(pt2e_quantizer.get_symmetric_quantization_config(is_per_channel=per_channel))


def _quantized(torch: Any, module: Any, example: Any, calib: np.ndarray, per_channel: bool,
               integer_code: bool) -> tuple[Any, Any]:
    """pt2e post-training quantization: observers in, one pass per calibration sample, quantize."""
    from litert_torch.quantize.quant_config import QuantConfig
    from torchao.quantization.pt2e import quantize_pt2e

    quantizer = _program_quantizer(torch, per_channel, integer_code)
    prepared = quantize_pt2e.prepare_pt2e(torch.export.export(module, (example,)).module(), quantizer)
    with torch.no_grad():
        for i in range(len(calib)):
            prepared(torch.from_numpy(calib[i : i + 1]))
    return quantize_pt2e.convert_pt2e(prepared, fold_quantize=False), QuantConfig(pt2e_quantizer=quantizer)


def export_torch_tflite(half: TorchDeviceHalf, input_shape: tuple[int, ...], calib: np.ndarray | None,
                        options: TfliteOptions | None, path: Path, target: str = "float",
                        onnx_device: Callable[[np.ndarray], np.ndarray] | None = None) -> TfliteModel:
    """Write the device half's TFLite to ``path``: int8 calibrated on ``calib``, or float when ``options`` is
    None (the size and latency baseline). ``onnx_device`` checks the cut against the ONNX device half."""
    torch, litert_torch = import_torch(), import_litert_torch()
    module, integer_code = _cut(torch, half)
    example = torch.zeros(1, *input_shape)
    if onnx_device is not None and calib is not None:
        _check_cut(torch, module, onnx_device, calib[:8], integer_code)
    try:
        with quiet_native():
            quant_config = None
            if options is not None:
                module, quant_config = _quantized(torch, module, example, calib, options.per_channel, integer_code)
            module.training = False  # a program's graph is fixed at export (eval mode, as docs/convert.md asks)
            flatbuffer = litert_torch.convert(module, (example,), quant_config=quant_config).model_content()
    except Exception as err:  # torch.export and the MLIR converter raise many types, with long reports
        raise ConversionError(f"target {target}: litert-torch could not convert the device half: {first_line(err)}",
                              "replace unsupported ops with Conv/Linear/ReLU/pooling, or use ONNX outputs "
                              "(--runtime onnx)") from None
    if options is not None:
        flatbuffer = _retype_io(bytes(flatbuffer), options)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(flatbuffer)
    return describe_tflite(path)


def _retype_io(flatbuffer: bytes, options: TfliteOptions) -> bytes:
    """int8 I/O (what litert-torch writes) → the profile's I/O types, with a QUANTIZE op at each changed edge
    (uint8 ↔ int8 requantizes with the zero point shifted by 128, float32 → int8 quantizes), as the TF
    converter builds them for ``inference_input_type``/``inference_output_type``."""
    if options.input_type == IOType.INT8 and options.output_type == IOType.INT8:
        return flatbuffer
    import flatbuffers
    from litert_converter import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(flatbuffer, 0)
    graph = model.subgraphs[0]
    graph.inputs, graph.outputs, graph.operators = list(graph.inputs), list(graph.outputs), list(graph.operators)
    code = _opcode_index(model, schema)
    kinds = {IOType.FLOAT32: schema.TensorType.FLOAT32, IOType.UINT8: schema.TensorType.UINT8}
    if options.input_type != IOType.INT8:
        old = graph.inputs[0]
        new = _edge_tensor(graph, old, kinds[options.input_type], schema)
        graph.operators.insert(0, _quantize_op(schema, code, new, old))
        graph.inputs[0] = new
    if options.output_type != IOType.INT8:
        old = graph.outputs[0]
        new = _edge_tensor(graph, old, kinds[options.output_type], schema)
        graph.operators.append(_quantize_op(schema, code, old, new))
        graph.outputs[0] = new
    for signature in model.signatureDefs or []:  # the signature names the graph's I/O tensors by index
        for io, tensors in ((signature.inputs, graph.inputs), (signature.outputs, graph.outputs)):
            for item in io or []:
                item.tensorIndex = tensors[0]
    builder = flatbuffers.Builder(len(flatbuffer) + 1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _opcode_index(model: Any, schema: Any) -> int:
    for index, opcode in enumerate(model.operatorCodes):
        if max(opcode.builtinCode, opcode.deprecatedBuiltinCode) == schema.BuiltinOperator.QUANTIZE:
            return index
    opcode = schema.OperatorCodeT()
    opcode.builtinCode = schema.BuiltinOperator.QUANTIZE
    opcode.deprecatedBuiltinCode = min(schema.BuiltinOperator.QUANTIZE, 127)
    opcode.version = 2
    model.operatorCodes.append(opcode)
    return len(model.operatorCodes) - 1


def _edge_tensor(graph: Any, index: int, kind: int, schema: Any) -> int:
    """A copy of int8 tensor ``index`` as a new ``kind`` tensor (uint8: zero point + 128; float32: no quant)."""
    old = graph.tensors[index]
    tensor = schema.TensorT()
    tensor.shape, tensor.shapeSignature, tensor.type = old.shape, old.shapeSignature, kind
    tensor.name = (old.name or b"") + (b"_uint8" if kind == schema.TensorType.UINT8 else b"_float")
    tensor.buffer = 0
    if kind == schema.TensorType.UINT8:
        quant = schema.QuantizationParametersT()
        quant.scale = list(old.quantization.scale)
        quant.zeroPoint = [int(z) + 128 for z in old.quantization.zeroPoint]
        tensor.quantization = quant
    graph.tensors.append(tensor)
    return len(graph.tensors) - 1


def _quantize_op(schema: Any, code: int, source: int, dest: int) -> Any:
    op = schema.OperatorT()
    op.opcodeIndex, op.inputs, op.outputs = code, [source], [dest]
    return op

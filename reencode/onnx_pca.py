"""PCA re-encoder for ONNX models (e.g. PyTorch exports): projection nodes inserted at the cut tensor.

    producer ─► cut ─► [Conv 1×1 | MatMul + Add] ─► code ─► [Conv 1×1 | MatMul + Add] ─► cut/pca_decoded ─► consumers

NCHW features (rank 4, channels on axis 1, as PyTorch exports) get 1×1 Convs; channel-last features
(NHWC, or (N, C), (N, T, C)) get MatMul + Add. Every existing tensor and node keeps its name; only the
consumers of the cut tensor now read the back-projection.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.errors import UsageError

from .metadata import CODE_NAME
from .pca import Pca, choose_channels, fit_pca

__all__ = ["pca_onnx", "insert_pca", "channel_axis_for"]



def channel_axis_for(input_shape: tuple[int | None, ...], feature_rank: int) -> int:
    """Channels axis of the features (batch axis included): 1 for NCHW images (the input looks like
    (C, H, W) with C of 1 or 3), else the last axis."""
    nchw = len(input_shape) == 3 and input_shape[0] in (1, 3) and input_shape[-1] not in (1, 3)
    return 1 if nchw and feature_rank == 4 else -1


def insert_pca(model: Any, split: str, pca: Pca, k: int, axis: int) -> Any:
    """A copy of ``model`` with the projection to ``code`` and the back-projection inserted after ``split``."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    names = {o for node in graph.node for o in node.output} | {i.name for i in graph.initializer}
    if CODE_NAME in names or split == CODE_NAME:
        raise UsageError(f"the model already has a tensor named {CODE_NAME!r}",
                         f"it already carries a re-encoder: convert it with --split {CODE_NAME}")
    decoded = f"{split}/pca_decoded"
    (w_enc, b_enc), (w_dec, b_dec) = pca.encoder(k), pca.decoder(k)
    if axis == 1:
        inits = [(w_enc.T[:, :, None, None], "reencode.code.weight"), (b_enc, "reencode.code.bias"),
                 (w_dec.T[:, :, None, None], "reencode.pca_decode.weight"), (b_dec, "reencode.pca_decode.bias")]
        nodes = [helper.make_node("Conv", [split, "reencode.code.weight", "reencode.code.bias"], [CODE_NAME],
                                  name="/reencode/code/Conv"),
                 helper.make_node("Conv", [CODE_NAME, "reencode.pca_decode.weight", "reencode.pca_decode.bias"],
                                  [decoded], name="/reencode/pca_decode/Conv")]
    else:
        inits = [(w_enc, "reencode.code.weight"), (b_enc, "reencode.code.bias"),
                 (w_dec, "reencode.pca_decode.weight"), (b_dec, "reencode.pca_decode.bias")]
        nodes = [helper.make_node("MatMul", [split, "reencode.code.weight"], ["/reencode/code/MatMul_output_0"],
                                  name="/reencode/code/MatMul"),
                 helper.make_node("Add", ["/reencode/code/MatMul_output_0", "reencode.code.bias"], [CODE_NAME],
                                  name="/reencode/code/Add"),
                 helper.make_node("MatMul", [CODE_NAME, "reencode.pca_decode.weight"],
                                  ["/reencode/pca_decode/MatMul_output_0"], name="/reencode/pca_decode/MatMul"),
                 helper.make_node("Add", ["/reencode/pca_decode/MatMul_output_0", "reencode.pca_decode.bias"],
                                  [decoded], name="/reencode/pca_decode/Add")]
    for node in graph.node:
        node.input[:] = [decoded if i == split else i for i in node.input]
    position = next(i for i, node in enumerate(graph.node) if split in node.output) + 1
    for offset, node in enumerate(nodes):
        graph.node.insert(position + offset, node)
    graph.initializer.extend(numpy_helper.from_array(np.ascontiguousarray(a, np.float32), n) for a, n in inits)
    # value_info stays the exporter's own: the back-projection restores the cut's shape, so none of it is stale.
    # ONNX shape inference here would write a shape for every tensor with the batch dimensions unnamed
    # (unk__N), and convert's simplification could then no longer match the input's batch dimension to
    # fold a `view(x.size(0), -1)` away: it would refuse the cut (issue 18).
    onnx.checker.check_model(model)
    return model


def pca_onnx(model_path: Path, split: str, data: Any, output: Path, channels: int | None,
             target_agreement: float | None, preprocessing: Any, max_samples: int | None
             ) -> tuple[Path, dict[str, Any]]:
    """Fit PCA on the features at tensor ``split`` and write the model with the projection inserted; returns
    the output path and the record stored in it."""
    import onnx

    from edgekit.converters.split_onnx import onnx_runner, split_onnx

    from .inputs import load_inputs
    from .metadata import make_record, set_onnx_metadata

    with tempfile.TemporaryDirectory(prefix="edgekit-reencode-") as scratch:
        halves = split_onnx(model_path, split, "onnx", Path(scratch))
        x, _ = load_inputs(data, halves.input_name, halves.input_shape, preprocessing, max_samples)
        features = halves.device_float(x)
        axis = channel_axis_for(halves.input_shape, features.ndim)
        pca = fit_pca(features, axis)
        settings = choose_channels(pca, features, onnx_runner(halves.server_onnx), channels, target_agreement,
                                   axis)
    result = insert_pca(onnx.load(str(model_path)), split, pca, settings["channels"], axis)
    metadata = make_record("pca", model_path, split, settings)
    set_onnx_metadata(result, metadata)
    onnx.save(result, str(output))
    return output, metadata

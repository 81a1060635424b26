"""Bad input: a one-line error naming the problem and the fix, non-zero exit, no traceback, nothing left behind."""

from __future__ import annotations

import numpy as np
import pytest

from edgekit.converters import convert
from edgekit.errors import ConversionError, UsageError


def _convert(digits_keras, tmp_path, **overrides):
    args = dict(model=digits_keras.model_path, split="code", calib=digits_keras.calib, targets=["cpu"],
                runtime="tflite", output=tmp_path / "out", latency_runs=0)
    args.update(overrides)
    return convert(**args)


def _assert_nothing_written(tmp_path):
    assert not (tmp_path / "out").exists()
    assert not list(tmp_path.glob(".out.*")), "no temp bundle left behind"


def _npz(tmp_path, x, name="calib.npz"):
    np.savez(tmp_path / name, x=x)
    return tmp_path / name


@pytest.mark.parametrize("argv_tail, message", [
    (["--split", "code"], "model {tmp}/missing.keras not found"),
])
def test_cli_missing_model_is_one_line(run_cli, digits_keras, tmp_path, argv_tail, message):
    code, stdout, stderr = run_cli("convert", tmp_path / "missing.keras", *argv_tail, "--calib", digits_keras.calib,
                                   "-o", tmp_path / "out")
    assert code == 2
    lines = stderr.strip().splitlines()
    assert lines[-1] == f"error: {message.format(tmp=tmp_path)} — check the path"
    assert "Traceback" not in stderr
    _assert_nothing_written(tmp_path)


def test_unreadable_model(digits_keras, tmp_path):
    (tmp_path / "broken.keras").write_bytes(b"not a zip file")
    with pytest.raises(UsageError, match="cannot read model .*broken.keras"):
        _convert(digits_keras, tmp_path, model=tmp_path / "broken.keras")
    (tmp_path / "broken.onnx").write_bytes(b"\x08\x07garbage")
    with pytest.raises(UsageError, match="cannot read ONNX model"):
        _convert(digits_keras, tmp_path, model=tmp_path / "broken.onnx")
    (tmp_path / "model.pt").write_bytes(b"x")
    with pytest.raises(UsageError, match="unknown model format"):
        _convert(digits_keras, tmp_path, model=tmp_path / "model.pt")
    _assert_nothing_written(tmp_path)


def test_unknown_split_lists_nearest_names(digits_keras, digits_onnx, tmp_path):
    with pytest.raises(UsageError, match=r"split 'cod' is not a layer .* nearest valid names: code"):
        _convert(digits_keras, tmp_path, split="cod")
    with pytest.raises(UsageError, match=r"split 'Relu' is not a tensor .* nearest valid names: .*/enc/Relu_output_0"):
        _convert(digits_keras, tmp_path, model=digits_onnx.model_path, split="Relu", calib=digits_onnx.calib,
                 runtime=None)
    _assert_nothing_written(tmp_path)


def test_split_missing_or_at_output(digits_keras, tmp_path):
    with pytest.raises(UsageError, match="--split is required"):
        _convert(digits_keras, tmp_path, split=None)
    with pytest.raises(UsageError, match="input or output layer"):
        _convert(digits_keras, tmp_path, split="probs")


def test_calibration_shape_mismatch(digits_keras, tmp_path):
    bad = _npz(tmp_path, np.zeros((32, 8, 8, 3), np.float32))
    with pytest.raises(UsageError, match=r"shape \(32, 8, 8, 3\) but the model input is \(N, 8, 8, 1\)"):
        _convert(digits_keras, tmp_path, calib=bad)
    _assert_nothing_written(tmp_path)


def test_calibration_dtype_mismatch(digits_keras, tmp_path):
    bad = _npz(tmp_path, np.zeros((32, 8, 8, 1), np.uint8))
    with pytest.raises(UsageError, match="is uint8 but the model takes float32 inputs"):
        _convert(digits_keras, tmp_path, calib=bad)


def test_calibration_nan_inf(digits_keras, tmp_path):
    x = np.load(digits_keras.calib)["x"].copy()
    x[7, 2, 2, 0] = np.nan
    with pytest.raises(UsageError, match=r"contains NaN/Inf \(first in sample 7\)"):
        _convert(digits_keras, tmp_path, calib=_npz(tmp_path, x))
    x[7, 2, 2, 0] = np.inf
    with pytest.raises(UsageError, match="NaN/Inf"):
        _convert(digits_keras, tmp_path, calib=_npz(tmp_path, x, "inf.npz"))
    _assert_nothing_written(tmp_path)


def test_too_few_calibration_samples(digits_keras, tmp_path):
    with pytest.raises(UsageError, match="has 5 samples, fewer than the 16 needed"):
        _convert(digits_keras, tmp_path, calib=_npz(tmp_path, np.load(digits_keras.calib)["x"][:5]))


def test_calibration_file_problems(digits_keras, tmp_path):
    with pytest.raises(UsageError, match="calibration data .* not found"):
        _convert(digits_keras, tmp_path, calib=tmp_path / "nope.npz")
    np.savez(tmp_path / "two.npz", a=np.zeros((20, 8, 8, 1), np.float32), b=np.zeros(3))
    with pytest.raises(UsageError, match="none named 'image' or 'x'"):
        _convert(digits_keras, tmp_path, calib=tmp_path / "two.npz")
    np.savez(tmp_path / "eval.npz", x=np.load(digits_keras.calib)["x"][:20], y=np.zeros(19, np.int64))
    with pytest.raises(UsageError, match="labels 'y'"):
        _convert(digits_keras, tmp_path, eval=tmp_path / "eval.npz")


def test_existing_output_needs_force(digits_keras, tmp_path, run_cli):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    code, _, stderr = run_cli("convert", digits_keras.model_path, "--split", "code", "--calib", digits_keras.calib,
                              "-o", tmp_path / "out")
    assert code == 2 and "already exists — pass --force" in stderr
    assert (tmp_path / "out" / "keep.txt").read_text() == "mine"
    result = _convert(digits_keras, tmp_path, force=True)
    assert not (result.bundle_path / "keep.txt").exists() and (result.bundle_path / "manifest.json").is_file()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_branches_crossing_the_cut_are_named(tmp_path):
    import keras
    from keras import layers

    inp = keras.Input((8, 8, 1), name="image")
    feat = layers.Conv2D(4, 3, padding="same", activation="relu", name="feat")(inp)
    code = layers.Conv2D(4, 1, activation="relu", name="code")(feat)
    skip = layers.Add(name="skip")([code, feat])  # a skip connection around the bottleneck
    out = layers.Dense(10, activation="softmax", name="probs")(layers.Flatten()(skip))
    keras.Model(inp, out).save(tmp_path / "skip.keras")
    np.savez(tmp_path / "calib.npz", x=np.random.default_rng(0).random((32, 8, 8, 1), dtype=np.float32))
    with pytest.raises(ConversionError, match=r"cannot split at 'code': tensors feat cross the cut"):
        convert(model=tmp_path / "skip.keras", split="code", calib=tmp_path / "calib.npz", output=tmp_path / "out")
    _assert_nothing_written(tmp_path)


def test_onnx_branches_crossing_the_cut_are_named(digits_onnx, tmp_path):
    import onnx
    from onnx import helper

    model = onnx.load(str(digits_onnx.model_path))
    # Server side now also reads the graph input directly: "input" crosses the cut at "code".
    model.graph.node.append(helper.make_node("ReduceMean", ["input"], ["input_mean"], keepdims=0, axes=[1, 2, 3]))
    model.graph.node.append(helper.make_node("Add", ["/head/Gemm_output_0", "input_mean_col"], ["sum"]))
    model.graph.node.insert(len(model.graph.node) - 1,
                            helper.make_node("Unsqueeze", ["input_mean", "axes1"], ["input_mean_col"]))
    model.graph.initializer.append(onnx.numpy_helper.from_array(np.array([1], np.int64), "axes1"))
    softmax = next(n for n in model.graph.node if n.op_type == "Softmax")
    model.graph.node.remove(softmax)
    model.graph.node.append(helper.make_node("Softmax", ["sum"], ["probs"], axis=1))
    onnx.save(model, tmp_path / "cross.onnx")
    with pytest.raises(ConversionError, match=r"tensors input cross the cut"):
        convert(model=tmp_path / "cross.onnx", split="code", calib=digits_onnx.calib, output=tmp_path / "out")
    _assert_nothing_written(tmp_path)


def test_option_conflicts(digits_keras, tmp_path):
    with pytest.raises(UsageError, match="not both"):
        _convert(digits_keras, tmp_path, device_model=digits_keras.model_path)
    with pytest.raises(UsageError, match="no model given"):
        _convert(digits_keras, tmp_path, model=None, split=None)
    with pytest.raises(UsageError, match="no calibration data"):
        _convert(digits_keras, tmp_path, calib=None)
    with pytest.raises(UsageError, match="has no onnx runtime"):
        _convert(digits_keras, tmp_path, targets=["ethos-u55-128"], runtime="onnx")
    with pytest.raises(UsageError, match="3 labels given but the model outputs 10"):
        _convert(digits_keras, tmp_path, labels=["a", "b", "c"])
    _assert_nothing_written(tmp_path)

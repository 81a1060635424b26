"""Each input format: ONNX (NCHW, PyTorch-style), SavedModel, pre-split halves, .npy, image folders."""

from __future__ import annotations

import numpy as np
import pytest

from edgekit.bundle.manifest import Bundle
from edgekit.converters import convert
from edgekit.errors import ConversionError


def test_onnx_source_gives_onnx_outputs(digits_onnx, tmp_path):
    result = convert(model=digits_onnx.model_path, split="code", calib=digits_onnx.calib, eval=digits_onnx.test,
                     targets=["rpi"], output=tmp_path / "onnx", latency_runs=3)
    b = Bundle.load(result.bundle_path)
    assert [(m.target, m.runtime) for m in b.device_models] == [("rpi", "onnx")]
    assert b.input.shape == (1, 8, 8) and b.code.shape == (4, 4, 4)
    row = result.report["models"][0]
    assert row["top1_agreement"] >= 0.98 and row["accuracy_float"] > 0.8
    assert b.manifest["model"]["source_format"] == "onnx"


def test_onnx_source_refuses_tflite_targets_with_reason(digits_onnx, tmp_path):
    with pytest.raises(ConversionError, match="needs TFLite, but an ONNX model has no TensorFlow graph"):
        convert(model=digits_onnx.model_path, split="code", calib=digits_onnx.calib, targets=["ethos-u55-128"],
                output=tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_onnx_split_by_inner_tensor_name(digits_onnx, tmp_path):
    result = convert(model=digits_onnx.model_path, split="/enc/pool/MaxPool_output_0", calib=digits_onnx.calib,
                     eval=digits_onnx.test, targets=["cpu"], output=tmp_path / "inner", latency_runs=0)
    assert Bundle.load(result.bundle_path).code.shape == (8, 4, 4)
    assert result.passed


def test_pre_split_onnx_halves(digits_onnx, tmp_path):
    import onnx.utils

    device, server = tmp_path / "device.onnx", tmp_path / "server.onnx"
    extractor = onnx.utils.Extractor(onnx.shape_inference.infer_shapes(digits_onnx.model))
    onnx.save(extractor.extract_model(["input"], ["code"]), device)
    onnx.save(extractor.extract_model(["code"], ["probs"]), server)
    result = convert(device_model=device, server_model=server, calib=digits_onnx.calib, eval=digits_onnx.test,
                     targets=["cpu"], output=tmp_path / "pre", latency_runs=0)
    assert result.passed and Bundle.load(result.bundle_path).manifest["model"]["split"] == "pre-split"


def test_pre_split_keras_and_savedmodel_halves(digits_keras, tmp_path):
    import keras

    model = digits_keras.model
    code = model.get_layer("code").output
    device = keras.Model(model.inputs[0], code)
    server = keras.Model(code, model.outputs[0])
    device.save(tmp_path / "device.keras")
    server.save(tmp_path / "server.keras")
    result = convert(device_model=tmp_path / "device.keras", server_model=tmp_path / "server.keras",
                     calib=digits_keras.calib, eval=digits_keras.test, targets=["rpi"], output=tmp_path / "k",
                     latency_runs=0)
    assert result.passed
    assert {m.runtime for m in Bundle.load(result.bundle_path).device_models} == {"tflite", "onnx"}

    device.export(str(tmp_path / "device_sm"), verbose=False)
    server.export(str(tmp_path / "server_sm"), verbose=False)
    result = convert(device_model=tmp_path / "device_sm", server_model=tmp_path / "server_sm",
                     calib=digits_keras.calib, eval=digits_keras.test, targets=["rpi"], output=tmp_path / "sm",
                     latency_runs=0)
    b = Bundle.load(result.bundle_path)
    assert result.passed and b.manifest["model"]["source_format"] == "savedmodel"
    assert {m.runtime for m in b.device_models} == {"tflite", "onnx"}


def test_single_savedmodel_is_split_on_its_onnx_export(digits_keras, tmp_path):
    digits_keras.model.export(str(tmp_path / "full_sm"), verbose=False)
    with pytest.raises(Exception) as info:
        convert(model=tmp_path / "full_sm", split="no-such-tensor", calib=digits_keras.calib, targets=["cpu"],
                output=tmp_path / "x")
    # The nearest names are ONNX tensor names of the export; pick the code layer's one and convert.
    names = str(info.value).split("nearest valid names: ")[1].split(", ")
    assert names
    import onnx

    from edgekit.converters.split_keras import keras_to_onnx
    from edgekit.converters.sources import load_keras

    wrapped = load_keras(tmp_path / "full_sm")
    exported = onnx.load(str(keras_to_onnx(wrapped, "image", (8, 8, 1), tmp_path / "probe.onnx")))
    code_tensor = next(o for n in exported.graph.node if n.op_type == "Relu" and "code" in n.name for o in n.output)
    result = convert(model=tmp_path / "full_sm", split=code_tensor, calib=digits_keras.calib, eval=digits_keras.test,
                     targets=["cpu"], output=tmp_path / "sm", latency_runs=0)
    assert result.passed
    assert [m.runtime for m in Bundle.load(result.bundle_path).device_models] == ["onnx"]


def test_npy_calibration(digits_keras, tmp_path):
    np.save(tmp_path / "calib.npy", np.load(digits_keras.calib)["x"])
    result = convert(model=digits_keras.model_path, split="code", calib=tmp_path / "calib.npy", targets=["cpu"],
                     runtime="tflite", output=tmp_path / "npy", latency_runs=0)
    assert result.passed and result.report["eval"]["held_out"] is False
    assert any("not held out" in w for w in result.report["warnings"])


def test_image_folder_calibration_records_preprocessing(cifar_folder, tmp_path, run_cli):
    import keras
    from keras import layers

    keras.utils.set_random_seed(0)
    inp = keras.Input((32, 32, 3), name="rgb")
    x = layers.Conv2D(8, 3, strides=2, padding="same", activation="relu", name="conv")(inp)
    code = layers.Conv2D(4, 1, activation="relu", name="code")(x)
    out = layers.Dense(10, activation="softmax", name="probs")(layers.GlobalAveragePooling2D()(code))
    keras.Model(inp, out).save(tmp_path / "cifar.keras")
    out_dir = tmp_path / "cifar-bundle"
    code, stdout, stderr = run_cli("convert", tmp_path / "cifar.keras", "--split", "code", "--calib", cifar_folder,
                                   "--eval", cifar_folder, "--mean", "0.485,0.456,0.406", "--std", "0.229,0.224,0.225",
                                   "--target", "cpu", "--runtime", "tflite", "--latency-runs", "0",
                                   "--min-agreement", "0", "-o", out_dir)
    assert code == 0, stderr
    b = Bundle.load(out_dir)
    pre = b.input.preprocessing
    assert pre.size == (32, 32) and pre.color == "rgb" and pre.layout == "nhwc"
    assert pre.mean == (0.485, 0.456, 0.406) and pre.std == (0.229, 0.224, 0.225)
    assert len(b.output.labels) == 10 and "airplane" in b.output.labels  # labels from the class folders
    sample = next(cifar_folder.rglob("*.jpg"))
    x = pre.apply_file(sample)
    assert x.shape == (32, 32, 3) and x.dtype == np.float32 and x.min() < -0.5

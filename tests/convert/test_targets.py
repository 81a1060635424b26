"""Every target profile, converted for real: Vela for Ethos-U, the Edge TPU check, per-tensor i.MX, CPU."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgekit.bundle.manifest import Bundle
from edgekit.converters import convert
from edgekit.converters.targets import PROFILE_DIR, list_targets, load_target
from edgekit.errors import ConversionError, UsageError


@pytest.fixture(scope="module")
def all_targets(digits_keras, tmp_path_factory):
    out = tmp_path_factory.mktemp("targets") / "all"
    return convert(model=digits_keras.model_path, split="code", calib=digits_keras.calib, eval=digits_keras.test,
                   targets=list_targets(), output=out, latency_runs=0)


def test_profiles_are_data_files():
    assert set(list_targets()) == {"cpu", "rpi", "coral-edgetpu", "ethos-u55-128", "ethos-u65-256", "imx8mp"}
    for name in list_targets():
        profile = load_target(name)
        assert profile.to_dict() == {**json.loads((PROFILE_DIR / f"{name}.json").read_text()),
                                     "runtimes": [r.value for r in profile.runtimes]}


def test_custom_profile_file(tmp_path, digits_keras):
    data = json.loads((PROFILE_DIR / "cpu.json").read_text())
    data.update(name="my-board", runtimes=["tflite"], onnx=None)
    (tmp_path / "my-board.json").write_text(json.dumps(data))
    result = convert(model=digits_keras.model_path, split="code", calib=digits_keras.calib,
                     targets=[str(tmp_path / "my-board.json")], output=tmp_path / "b", latency_runs=0)
    assert Bundle.load(result.bundle_path).device_model("my-board").runtime == "tflite"


def test_every_target_passes_parity(all_targets):
    assert all_targets.passed
    b = Bundle.load(all_targets.bundle_path)
    assert set(b.targets) == set(list_targets())
    for name in list_targets():
        assert b.manifest["targets"][name]["profile"] == load_target(name).to_dict()


def test_ethos_u_targets_are_compiled_by_vela(all_targets):
    b = Bundle.load(all_targets.bundle_path)
    for name, config in (("ethos-u55-128", "ethos-u55-128"), ("ethos-u65-256", "ethos-u65-256")):
        report = all_targets.report["targets"][name]
        assert report["accelerator_config"] == config
        assert report["npu_ops"] >= 3 and report["cpu_ops"] == 0 and report["all_on_npu"]
        assert report["sram_kib"] > 0 and report["inference_time_ms"] > 0
        artifact = b.manifest["targets"][name]["artifacts"][0]
        assert artifact.endswith("_vela.tflite") and (b.path / artifact).stat().st_size > 0
        assert artifact in b.manifest["files"]


def test_coral_is_uint8_static_and_checked(all_targets, digits_keras):
    b = Bundle.load(all_targets.bundle_path)
    dev = b.device_model("coral-edgetpu")
    assert dev.input_dtype == "uint8" and dev.code_dtype == "uint8"
    wire = b.manifest["code"]["wire_quant"]
    assert dev.code_quant == pytest.approx((wire["scale"], wire["zero_point"] + 128))
    report = all_targets.report["targets"]["coral-edgetpu"]
    assert report["all_on_tpu"] and report["cpu_ops"] == 0
    assert report["command"].startswith("edgetpu_compiler") and "device/coral-edgetpu" in report["command"]
    from edgekit.runtime import open_device_runner

    runner = open_device_runner(dev.path)
    assert runner.input_shape == (1, 8, 8, 1)
    codes = runner.run(np.load(digits_keras.calib)["x"][:3])  # uint8 on the device, int8 on the wire
    assert codes.dtype == np.int8 and runner.code_quant == (wire["scale"], wire["zero_point"])


def test_imx8mp_weights_are_per_tensor(all_targets):
    from ai_edge_litert.interpreter import Interpreter

    b = Bundle.load(all_targets.bundle_path)

    def max_scales(path):
        details = Interpreter(model_path=str(path)).get_tensor_details()
        return max(len(t["quantization_parameters"]["scales"]) for t in details)

    assert max_scales(b.device_model("imx8mp").path) == 1
    assert max_scales(b.device_model("rpi", "tflite").path) > 1


def test_edgetpu_reports_unsupported_ops(tmp_path):
    """An op outside the Edge TPU list falls back to the CPU, and so does everything after it."""
    from edgekit.converters.edgetpu import check_edgetpu

    import keras
    from keras import layers

    from edgekit.converters.targets import IOType, TfliteOptions
    from edgekit.converters.tflite_export import export_tflite

    inp = keras.Input((8, 8, 1), name="image")
    x = layers.Conv2D(4, 3, padding="same", activation="relu", name="conv")(inp)
    x = layers.Activation("hard_sigmoid", name="hsig")(x)
    x = layers.Conv2D(2, 1, name="code")(x)
    model = keras.Model(inp, x)
    calib = np.random.default_rng(0).random((16, 8, 8, 1), dtype=np.float32)
    path = export_tflite(model, (8, 8, 1), "image", calib, TfliteOptions(IOType.UINT8, IOType.UINT8), tmp_path / "m.tflite").path
    options = load_target("coral-edgetpu").compiler_options
    ok = check_edgetpu(path, options, "device/coral")
    assert ok["operations"], "ops listed"
    restricted = {**options, "supported_ops": [op for op in options["supported_ops"] if op != "CONV_2D"]}
    report = check_edgetpu(path, restricted, "device/coral")
    assert report["tpu_ops"] == 1 and not report["all_on_tpu"]  # only the input QUANTIZE maps
    first = report["cpu_operations"][0]
    assert first["op"] == "CONV_2D" and "not supported" in first["reason"]
    assert len(report["cpu_operations"]) == len(report["operations"]) - 1
    assert any("follows" in op["reason"] for op in report["cpu_operations"][1:])


def test_float_op_breaks_full_integer_targets(tmp_path):
    """ELU has no int8 TFLite kernel: NPU targets refuse it naming the op; rpi converts and warns."""
    import keras
    from keras import layers

    inp = keras.Input((8, 8, 1), name="image")
    x = layers.Conv2D(4, 3, padding="same", activation="elu", name="conv_elu")(inp)
    code = layers.Conv2D(2, 1, activation="relu", name="code")(x)
    out = layers.Dense(10, activation="softmax", name="probs")(layers.Flatten()(code))
    keras.Model(inp, out).save(tmp_path / "elu.keras")
    np.savez(tmp_path / "calib.npz", x=np.random.default_rng(0).random((32, 8, 8, 1), dtype=np.float32))
    with pytest.raises(ConversionError, match=r"ethos-u55-128 needs a fully int8 model but ELU \(.*conv_elu"):
        convert(model=tmp_path / "elu.keras", split="code", calib=tmp_path / "calib.npz", targets=["ethos-u55-128"],
                output=tmp_path / "x")
    assert not (tmp_path / "x").exists() and not list(tmp_path.glob(".x.*"))
    result = convert(model=tmp_path / "elu.keras", split="code", calib=tmp_path / "calib.npz", targets=["rpi"],
                     runtime="tflite", output=tmp_path / "ok", latency_runs=0)
    assert any("ELU" in w for w in result.report["warnings"])


def test_dynamic_input_breaks_static_shape_targets(tmp_path):
    import keras
    from keras import layers

    inp = keras.Input((None, None, 1), name="frames")
    x = layers.Conv2D(4, 3, padding="same", activation="relu", name="conv")(inp)
    code = layers.Conv2D(2, 1, activation="relu", name="code")(x)
    out = layers.Dense(3, activation="softmax", name="probs")(layers.GlobalAveragePooling2D()(code))
    keras.Model(inp, out).save(tmp_path / "dyn.keras")
    np.savez(tmp_path / "calib.npz", x=np.random.default_rng(0).random((32, 8, 8, 1), dtype=np.float32))
    with pytest.raises(ConversionError, match=r"coral-edgetpu needs static shapes but input 'frames' has shape"):
        convert(model=tmp_path / "dyn.keras", split="code", calib=tmp_path / "calib.npz", targets=["coral-edgetpu"],
                output=tmp_path / "x")


def test_unknown_target_lists_the_known_ones(digits_keras, tmp_path):
    with pytest.raises(UsageError, match="unknown target 'jetson'.*rpi"):
        convert(model=digits_keras.model_path, split="code", calib=digits_keras.calib, targets=["jetson"],
                output=tmp_path / "x")

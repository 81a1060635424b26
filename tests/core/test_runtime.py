"""The runners shared by parity, device and server: real TFLite and ONNX Runtime inference."""

from __future__ import annotations

import numpy as np
import pytest

from edgekit.errors import BundleError, UsageError
from edgekit.runtime import open_device_runner, open_server_runner


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    """A tiny conv head quantized to TFLite with int8 and uint8 I/O, and a float ONNX tail."""
    import keras
    import tensorflow as tf

    out = tmp_path_factory.mktemp("runtime")
    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 8, 1), name="image")
    code = keras.layers.Conv2D(4, 3, strides=2, padding="same", name="code")(inp)
    head = keras.Model(inp, code)
    rng = np.random.default_rng(0)
    calib = rng.random((32, 8, 8, 1), dtype=np.float32)

    def tflite(io_type):
        conv = tf.lite.TFLiteConverter.from_keras_model(head)
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = lambda: ([s[None]] for s in calib)
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        conv.inference_input_type = conv.inference_output_type = io_type
        path = out / f"head_{io_type.name}.tflite"
        path.write_bytes(conv.convert())
        return path

    tail_in = keras.Input((4, 4, 4), name="code_in")
    tail = keras.Model(tail_in, keras.layers.Dense(3)(keras.layers.Flatten()(tail_in)))
    tail.predict(np.zeros((1, 4, 4, 4), np.float32), verbose=0)  # Keras exports only models that ran
    tail.export(str(out / "tail.onnx"), format="onnx", verbose=False)
    return {"int8": tflite(tf.int8), "uint8": tflite(tf.uint8), "tail": out / "tail.onnx",
            "head": head, "tail_model": tail, "x": calib[:5]}


def test_int8_tflite_code_dequantizes_close_to_float(tiny_models):
    runner = open_device_runner(tiny_models["int8"], threads=1)
    assert runner.runtime == "litert"
    code = runner.run(tiny_models["x"])
    assert code.dtype == np.int8 and code.shape == (5, 4, 4, 4)
    scale, zero_point = runner.code_quant
    recovered = (code.astype(np.float32) - zero_point) * scale
    reference = tiny_models["head"].predict(tiny_models["x"], verbose=0)
    assert np.abs(recovered - reference).max() <= 2 * scale


def test_uint8_io_is_shifted_to_the_same_int8_code(tiny_models):
    as_int8 = open_device_runner(tiny_models["int8"], runtime="tensorflow", threads=1)
    as_uint8 = open_device_runner(tiny_models["uint8"], threads=1)
    assert as_uint8.code_quant[1] == as_int8.code_quant[1]
    diff = as_uint8.run(tiny_models["x"]).astype(int) - as_int8.run(tiny_models["x"]).astype(int)
    assert np.abs(diff).max() <= 1


def test_server_runner_batches_and_matches_keras(tiny_models):
    runner = open_server_runner(tiny_models["tail"], threads=1)
    code = np.random.default_rng(1).normal(size=(7, 4, 4, 4)).astype(np.float32)
    np.testing.assert_allclose(runner.run(code), tiny_models["tail_model"].predict(code, verbose=0), atol=1e-4)


def test_wrong_input_shape_and_missing_model_are_user_errors(tiny_models, tmp_path):
    runner = open_device_runner(tiny_models["int8"], threads=1)
    with pytest.raises(UsageError, match="does not match"):
        runner.run(np.zeros((1, 9, 9, 1), np.float32))
    with pytest.raises(BundleError, match="not found"):
        open_device_runner(tmp_path / "nope.tflite")
    with pytest.raises(UsageError, match="unknown runtime"):
        open_device_runner(tiny_models["int8"], runtime="tpu")

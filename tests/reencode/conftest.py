"""Fixtures for the re-encoder tests: a small Keras teacher on scikit-learn's real 8x8 digits (trained once
per session in a few seconds), and an NCHW ONNX model as PyTorch exports it."""

from __future__ import annotations

import os
from types import SimpleNamespace

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


@pytest.fixture(scope="session")
def teacher(tmp_path_factory, digits) -> SimpleNamespace:
    """teacher.keras (no re-encoder; cut at ``feat``, 4×4×16, post-ReLU) + train.npz (x, y) + test.npz."""
    import keras
    from keras import layers

    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 8, 1), name="image")
    x = layers.Conv2D(8, 3, padding="same", activation="relu", name="conv1")(inp)
    x = layers.MaxPooling2D(name="pool1")(x)
    x = layers.Conv2D(16, 3, padding="same", activation="relu", name="feat")(x)
    x = layers.Conv2D(16, 3, padding="same", activation="relu", name="conv3")(x)
    x = layers.Flatten(name="flatten")(x)
    out = layers.Dense(10, name="logits")(x)
    model = keras.Model(inp, out, name="digits_teacher")
    model.compile(optimizer=keras.optimizers.Adam(3e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    model.fit(digits.x_train, digits.y_train, epochs=8, batch_size=64, verbose=0)
    root = tmp_path_factory.mktemp("teacher")
    model.save(root / "teacher.keras")
    np.savez(root / "train.npz", x=digits.x_train, y=digits.y_train)
    np.savez(root / "test.npz", x=digits.x_test, y=digits.y_test)
    accuracy = float(np.mean(np.asarray(model(digits.x_test)).argmax(1) == digits.y_test))
    return SimpleNamespace(root=root, path=root / "teacher.keras", train=root / "train.npz", test=root / "test.npz",
                           model=model, accuracy=accuracy)


@pytest.fixture(scope="session")
def onnx_teacher(tmp_path_factory, digits) -> SimpleNamespace:
    """model.onnx, NCHW: Conv3x3(1→8) Relu MaxPool [=/pool] Conv1x1(8→8) Relu Flatten Gemm(128→10), random
    weights (PCA only needs a fixed function), and data.npz in NCHW."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(1)
    arrays = {"conv1.weight": rng.normal(0, 0.5, (8, 1, 3, 3)), "conv1.bias": np.zeros(8),
              "conv2.weight": rng.normal(0, 0.5, (8, 8, 1, 1)), "conv2.bias": np.full(8, 0.05),
              "fc.weight": rng.normal(0, 0.3, (10, 128)), "fc.bias": np.zeros(10)}
    inits = [numpy_helper.from_array(a.astype(np.float32), n) for n, a in arrays.items()]
    nodes = [
        helper.make_node("Conv", ["input", "conv1.weight", "conv1.bias"], ["/conv1/Conv_output_0"], pads=[1, 1, 1, 1],
                         name="/conv1/Conv"),
        helper.make_node("Relu", ["/conv1/Conv_output_0"], ["/relu1/Relu_output_0"], name="/relu1/Relu"),
        helper.make_node("MaxPool", ["/relu1/Relu_output_0"], ["/pool/MaxPool_output_0"], kernel_shape=[2, 2],
                         strides=[2, 2], name="/pool/MaxPool"),
        helper.make_node("Conv", ["/pool/MaxPool_output_0", "conv2.weight", "conv2.bias"], ["/conv2/Conv_output_0"],
                         name="/conv2/Conv"),
        helper.make_node("Relu", ["/conv2/Conv_output_0"], ["/relu2/Relu_output_0"], name="/relu2/Relu"),
        helper.make_node("Flatten", ["/relu2/Relu_output_0"], ["/flatten/Flatten_output_0"], name="/flatten/Flatten"),
        helper.make_node("Gemm", ["/flatten/Flatten_output_0", "fc.weight", "fc.bias"], ["logits"], transB=1,
                         name="/fc/Gemm"),
    ]
    graph = helper.make_graph(nodes, "digits_nchw",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 1, 8, 8])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="pytorch-like")
    root = tmp_path_factory.mktemp("onnx_teacher")
    onnx.save(model, root / "model.onnx")
    x = digits.x_train.transpose(0, 3, 1, 2).copy()
    np.savez(root / "data.npz", x=x[:400])
    return SimpleNamespace(root=root, path=root / "model.onnx", data=root / "data.npz", x=x[:400],
                           split="/pool/MaxPool_output_0")


@pytest.fixture
def run_cli(cli_runner):
    """Run ``edgekit.cli.main`` with only ``reencode`` registered; returns (exit code, stdout, stderr)."""
    from edgekit.reencode.commands import reencode_command

    return cli_runner(reencode_command)

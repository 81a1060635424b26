"""Fixtures for convert tests: small models built here (once per session) on real data.

- ``digits`` (tests/conftest.py, shared with the re-encoder tests): scikit-learn's bundled 8x8 digits.
- ``digits_keras``: a small Keras CNN with a ``code`` re-encoder, trained for a few seconds on it.
- ``digits_onnx``: an NCHW ONNX graph as PyTorch exports it (Conv/Relu/MaxPool/Gemm), whose classifier is
  fitted on its own codes, so it classifies real digits.
- ``rpi_bundle``: the Keras model converted for rpi (TFLite + ONNX), shared by read-only tests.
- ``cifar_folder``: a few real CIFAR-10 JPEGs as class folders (image-folder calibration and evaluation).
"""

from __future__ import annotations

import os
import tarfile
from types import SimpleNamespace

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def digits_cnn(code_channels: int = 4):
    import keras
    from keras import layers

    inp = keras.Input((8, 8, 1), name="image")
    x = layers.Conv2D(16, 3, padding="same", activation="relu", name="conv1")(inp)
    x = layers.MaxPooling2D(name="pool1")(x)
    code = layers.Conv2D(code_channels, 1, activation="relu", name="code")(x)
    y = layers.Conv2D(16, 3, padding="same", activation="relu", name="decode")(code)
    y = layers.Flatten(name="flatten")(y)
    out = layers.Dense(10, activation="softmax", name="probs")(y)
    return keras.Model(inp, out, name="digits_cnn")


@pytest.fixture(scope="session")
def digits_keras(tmp_path_factory, digits) -> SimpleNamespace:
    """Trained model.keras + calib.npz + test.npz (with labels) + the model object."""
    import keras

    keras.utils.set_random_seed(0)
    model = digits_cnn()
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(digits.x_train, digits.y_train, epochs=25, batch_size=64, verbose=0)
    root = tmp_path_factory.mktemp("digits_keras")
    model.save(root / "model.keras")
    np.savez(root / "calib.npz", x=digits.x_train[:200])
    np.savez(root / "test.npz", x=digits.x_test[:300], y=digits.y_test[:300],
             labels=np.array([f"digit-{i}" for i in range(10)]))
    return SimpleNamespace(root=root, model_path=root / "model.keras", calib=root / "calib.npz",
                           test=root / "test.npz", model=model)


def _onnx_nchw_model(w1, b1, w2, b2, w3=None, b3=None):
    """Conv3x3(1→8) Relu MaxPool Conv1x1(8→4) Relu [=code] Flatten Gemm(64→10) Softmax, NCHW like PyTorch."""
    from onnx import TensorProto, helper, numpy_helper

    inits = [numpy_helper.from_array(a, n) for a, n in ((w1, "enc.conv1.weight"), (b1, "enc.conv1.bias"),
                                                         (w2, "enc.code.weight"), (b2, "enc.code.bias"))]
    nodes = [
        helper.make_node("Conv", ["input", "enc.conv1.weight", "enc.conv1.bias"], ["/enc/conv1/Conv_output_0"],
                         pads=[1, 1, 1, 1], name="/enc/conv1/Conv"),
        helper.make_node("Relu", ["/enc/conv1/Conv_output_0"], ["/enc/Relu_output_0"], name="/enc/Relu"),
        helper.make_node("MaxPool", ["/enc/Relu_output_0"], ["/enc/pool/MaxPool_output_0"], kernel_shape=[2, 2],
                         strides=[2, 2], name="/enc/pool/MaxPool"),
        helper.make_node("Conv", ["/enc/pool/MaxPool_output_0", "enc.code.weight", "enc.code.bias"],
                         ["/enc/code/Conv_output_0"], name="/enc/code/Conv"),
        helper.make_node("Relu", ["/enc/code/Conv_output_0"], ["code"], name="/enc/code/Relu"),
    ]
    outputs = [helper.make_tensor_value_info("code", TensorProto.FLOAT, ["N", 4, 4, 4])]
    if w3 is not None:
        inits += [numpy_helper.from_array(w3, "head.weight"), numpy_helper.from_array(b3, "head.bias")]
        nodes += [
            helper.make_node("Flatten", ["code"], ["/head/Flatten_output_0"], name="/head/Flatten"),
            helper.make_node("Gemm", ["/head/Flatten_output_0", "head.weight", "head.bias"], ["/head/Gemm_output_0"],
                             transB=1, name="/head/Gemm"),
            helper.make_node("Softmax", ["/head/Gemm_output_0"], ["probs"], axis=1, name="/head/Softmax"),
        ]
        outputs = [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", 10])]
    graph = helper.make_graph(nodes, "digits_nchw", [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                                                                   ["N", 1, 8, 8])], outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="pytorch-like")


@pytest.fixture(scope="session")
def digits_onnx(tmp_path_factory, digits) -> SimpleNamespace:
    """model.onnx (NCHW) with a fitted classifier, calib.npz and test.npz in NCHW."""
    import onnx
    import onnxruntime as ort
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(1)
    w1 = rng.normal(0, 0.5, (8, 1, 3, 3)).astype(np.float32)
    b1 = np.zeros(8, np.float32)
    w2 = rng.normal(0, 0.5, (4, 8, 1, 1)).astype(np.float32)
    b2 = np.full(4, 0.05, np.float32)
    root = tmp_path_factory.mktemp("digits_onnx")
    x_train = digits.x_train.transpose(0, 3, 1, 2).copy()
    x_test = digits.x_test.transpose(0, 3, 1, 2).copy()
    encoder = _onnx_nchw_model(w1, b1, w2, b2)
    session = ort.InferenceSession(encoder.SerializeToString(), providers=["CPUExecutionProvider"])
    codes = session.run(None, {"input": x_train})[0].reshape(len(x_train), -1)
    clf = LogisticRegression(max_iter=2000).fit(codes, digits.y_train)
    model = _onnx_nchw_model(w1, b1, w2, b2, clf.coef_.astype(np.float32), clf.intercept_.astype(np.float32))
    onnx.checker.check_model(model)
    onnx.save(model, root / "model.onnx")
    np.savez(root / "calib.npz", x=x_train[:200])
    np.savez(root / "test.npz", x=x_test[:300], y=digits.y_test[:300])
    return SimpleNamespace(root=root, model_path=root / "model.onnx", calib=root / "calib.npz", test=root / "test.npz",
                           model=model)


@pytest.fixture(scope="session")
def rpi_bundle(tmp_path_factory, digits_keras):
    from edgekit.converters import convert

    out = tmp_path_factory.mktemp("bundles") / "digits-rpi"
    return convert(model=digits_keras.model_path, split="code", calib=digits_keras.calib, eval=digits_keras.test,
                   targets=["rpi"], output=out, latency_runs=10, command="pytest")


@pytest.fixture(scope="session")
def cifar_folder(data_dir, tmp_path_factory):
    """A few real CIFAR-10 JPEGs extracted as class folders (calibration and labelled eval)."""
    root = tmp_path_factory.mktemp("cifar")
    wanted: dict[str, int] = {}
    with tarfile.open(data_dir / "cifar10" / "cifar10-test-jpeg.tar.gz") as tar:
        for member in tar:
            parts = member.name.split("/")
            if not member.isfile() or len(parts) < 3 or wanted.get(parts[-2], 0) >= 4:
                continue
            wanted[parts[-2]] = wanted.get(parts[-2], 0) + 1
            target = root / parts[-2] / parts[-1]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(tar.extractfile(member).read())
            if sum(wanted.values()) >= 40:
                break
    return root


@pytest.fixture
def run_cli(cli_runner):
    """Run ``edgekit.cli.main`` with only this area's commands registered; returns (exit code, stdout, stderr)."""
    from edgekit.bundle.commands import inspect_command
    from edgekit.converters.commands import convert_command

    return cli_runner(convert_command, inspect_command)

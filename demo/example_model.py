"""The example model: a small Keras CNN with a bottleneck re-encoder, ready for ``edgekit convert --split code``.

One recipe shared by ``examples/train_example.py``, ``edgekit demo``, the pipeline tests and the benchmarks, so
they all train and read data the same way.

    image ──► conv/pool feature extractor ──► re-encoder (1x1 conv, few channels, ReLU) = "code"
          ──► (the device sends the int8 code) ──► conv decoder ──► classifier ──► class probabilities

Datasets: ``digits`` (scikit-learn's bundled 8x8 digits; no download, trains in seconds) and
``fashion-mnist`` (the IDX files in ``$EDGEKIT_DATA/fashion-mnist``; a few minutes on 2 cores).
Writes ``model.keras``, ``calib.npz`` (x: training images for calibration) and ``test.npz`` (x, y, labels:
held-out images) to ``out_dir``.

    python examples/train_example.py --dataset digits --out build/digits
    python examples/train_example.py --dataset fashion-mnist --data ../shared/data --out build/fmnist

Only numpy is imported at module level; Keras and scikit-learn load inside the functions that need them.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np

from edgekit.errors import UsageError

__all__ = ["train", "load_dataset", "build_model", "read_idx", "DATASETS"]

DATASETS = ("digits", "fashion-mnist")
FASHION_LABELS = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                  "Ankle boot"]
DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"  # ../shared/data beside a checkout


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (gzipped, as distributed): magic, dims, then big-endian uint8 data."""
    with gzip.open(path, "rb") as handle:
        raw = handle.read()
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load_dataset(dataset: str, data_dir: str | Path | None = None
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """(x_train, y_train, x_test, y_test, labels) as float32 NHWC in [0, 1] and int64 labels."""
    if dataset == "digits":
        from sklearn.datasets import load_digits

        digits = load_digits()
        x = (digits.images / 16.0).astype(np.float32)[..., None]
        y = digits.target.astype(np.int64)
        order = np.random.default_rng(0).permutation(len(x))
        x, y = x[order], y[order]
        return x[:1297], y[:1297], x[1297:], y[1297:], [str(i) for i in range(10)]
    if dataset == "fashion-mnist":
        root = Path(data_dir or os.environ.get("EDGEKIT_DATA", DEFAULT_DATA)) / "fashion-mnist"
        if not root.is_dir():
            raise UsageError(f"Fashion-MNIST not found in {root}", "pass --data or set EDGEKIT_DATA to the shared data folder")

        def images(name: str) -> np.ndarray:
            return (read_idx(root / name).astype(np.float32) / 255.0)[..., None]

        return (images("train-images-idx3-ubyte.gz"), read_idx(root / "train-labels-idx1-ubyte.gz").astype(np.int64),
                images("t10k-images-idx3-ubyte.gz"), read_idx(root / "t10k-labels-idx1-ubyte.gz").astype(np.int64),
                FASHION_LABELS)
    raise UsageError(f"unknown dataset {dataset!r}", f"choose one of {', '.join(DATASETS)}")


def build_model(input_shape: tuple[int, int, int], classes: int, code_channels: int = 4):
    """Feature extractor → re-encoder bottleneck named ``code`` → decoder/classifier."""
    import keras
    from keras import layers

    small = input_shape[0] <= 8
    inp = keras.Input(shape=input_shape, name="image")
    x = layers.Conv2D(16 if small else 32, 3, padding="same", activation="relu", name="conv1")(inp)
    x = layers.MaxPooling2D(name="pool1")(x)
    if not small:
        x = layers.Conv2D(64, 3, padding="same", activation="relu", name="conv2")(x)
        x = layers.MaxPooling2D(name="pool2")(x)
    code = layers.Conv2D(code_channels, 1, activation="relu", name="code")(x)  # the re-encoder: what is sent
    y = layers.Conv2D(32, 3, padding="same", activation="relu", name="decode1")(code)
    y = layers.Conv2D(64, 3, padding="same", activation="relu", name="decode2")(y)
    y = layers.Flatten(name="flatten")(y)
    y = layers.Dense(128 if not small else 64, activation="relu", name="fc")(y)
    out = layers.Dense(classes, activation="softmax", name="probs")(y)
    return keras.Model(inp, out, name="reencoder_cnn")


def train(dataset: str, data_dir: str | Path | None, out_dir: str | Path, epochs: int | None = None, seed: int = 0,
          calib_samples: int = 1000, verbose: int = 2) -> tuple[Path, Path, Path]:
    """Train and save; returns the paths of model.keras, calib.npz and test.npz (``verbose`` as Keras' fit)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras

    keras.utils.set_random_seed(seed)
    x_train, y_train, x_test, y_test, labels = load_dataset(dataset, data_dir)
    model = build_model(x_train.shape[1:], len(labels))
    model.compile(optimizer=keras.optimizers.Adam(2e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    epochs = epochs or (40 if dataset == "digits" else 4)
    model.fit(x_train, y_train, batch_size=64 if dataset == "digits" else 128, epochs=epochs, verbose=verbose,
              validation_split=0.05)
    _, accuracy = model.evaluate(x_test, y_test, verbose=0)
    print(f"{dataset}: float test accuracy {accuracy:.4f} on {len(x_test)} images")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    calib = x_train[rng.choice(len(x_train), min(calib_samples, len(x_train)), replace=False)]
    paths = out / "model.keras", out / "calib.npz", out / "test.npz"
    model.save(paths[0])
    np.savez_compressed(paths[1], x=calib)
    np.savez_compressed(paths[2], x=x_test, y=y_test, labels=np.array(labels))
    return paths

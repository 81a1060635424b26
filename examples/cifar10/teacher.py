"""The teacher: the pretrained CIFAR-10 ResNet20 (Keras port), its preprocessing, accuracy and MAC count.

Preprocessing is the one it was trained with (data README): ``x / 255`` then per-channel mean/std, NHWC
float32. Every method in the benchmark feeds the teacher (or its device half) through :func:`preprocess`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["MEAN", "STD", "preprocess", "load_teacher", "macs"]

MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)


def preprocess(x_uint8: np.ndarray) -> np.ndarray:
    """uint8 RGB NHWC → the teacher's float32 input."""
    return (x_uint8.astype(np.float32) / 255.0 - MEAN) / STD


def load_teacher(path: str | Path):
    """The teacher, or a re-encoded model (the entropic code layer is registered with Keras first)."""
    import keras

    from edgekit.reencode import layers  # noqa: F401 - registers IntegerCode

    return keras.saving.load_model(path, compile=False)


def macs(model, upto: str | None = None) -> int:
    """Multiply-accumulates of one inference (Conv2D, DepthwiseConv2D, Dense), up to layer ``upto``.

    Counting from the layers' own shapes keeps the figure honest for any model the benchmark builds
    (teacher, its device half, a re-encoded model) without a profiler.
    """
    import keras

    if upto is not None:
        model = keras.Model(model.inputs, model.get_layer(upto).output)
    total = 0
    for layer in _layers(model):
        if isinstance(layer, keras.layers.DepthwiseConv2D):
            kh, kw = layer.kernel_size
            total += int(np.prod(layer.output.shape[1:])) * kh * kw
        elif isinstance(layer, keras.layers.Conv2D):
            kh, kw = layer.kernel_size
            cin = layer.input.shape[-1] // layer.groups
            total += int(np.prod(layer.output.shape[1:])) * kh * kw * cin
        elif isinstance(layer, keras.layers.Dense):
            total += int(np.prod(layer.output.shape[1:])) * layer.input.shape[-1]
    return total


def _layers(model):
    """Leaf layers, descending into nested models (a re-encoder may be a sub-model)."""
    import keras

    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from _layers(layer)
        else:
            yield layer


def whole_model_figures(model, calib: np.ndarray, out: Path, runs: int = 50) -> dict:
    """The whole teacher deployed as the device halves are (int8 TFLite, rpi and Ethos-U55 profiles):
    CPU latency (median, batch 1) and Vela's estimate, for the "device half vs whole model" comparison."""
    from edgekit.converters.parity import latency
    from edgekit.converters.targets import load_target
    from edgekit.converters.tflite_export import export_tflite
    from edgekit.converters.vela import compile_vela
    from edgekit.runtime import open_device_runner

    out.mkdir(parents=True, exist_ok=True)
    figures = {}
    for target in ("rpi", "ethos-u55-128"):
        profile = load_target(target)
        path = out / f"teacher_{target}_int8.tflite"
        if not path.is_file():
            export_tflite(model, tuple(model.input.shape[1:]), "input", calib, profile.tflite, path, target)
        if target == "rpi":
            figures["int8_ms"] = latency(open_device_runner(path), calib[0], runs)["median_ms"]
            figures["tflite_bytes"] = path.stat().st_size
        else:
            _, report = compile_vela(path, out / "vela", profile.compiler_options, "vela")
            figures["vela"] = {k: report.get(k) for k in ("npu_ops", "cpu_ops", "sram_kib", "inference_time_ms")}
    return figures

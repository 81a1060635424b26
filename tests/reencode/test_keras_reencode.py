"""The Keras re-encoders on a small real-digits teacher: shapes, frozen teacher, gradients, reproducible
and resumable training, the rate term lowering measured bytes, and conversion with ``--split code``."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgekit.bundle.manifest import sha256_file
from edgekit.wire.codecs.ans import AnsCodec
from edgekit.wire.codecs.fit import prior_from_pmf
from edgekit.reencode import reencode
from edgekit.reencode.metadata import read_metadata
from edgekit.reencode.prior import wire_pmf
from edgekit.reencode.training import checkpoint_path


def _load(path):
    import keras

    from edgekit.reencode import layers  # noqa: F401 - registers IntegerCode

    return keras.models.load_model(path, compile=False)


def _weights(model, names):
    return {n: [np.asarray(w) for w in model.get_layer(n).get_weights()] for n in names}


def test_pca_code_shape_identity_at_all_channels_and_record(teacher, digits, tmp_path):
    out = reencode(teacher.path, "feat", "pca", teacher.train, tmp_path / "pca.keras", channels=16).output
    model = _load(out)
    assert tuple(model.get_layer("code").output.shape[1:]) == (4, 4, 16)
    np.testing.assert_allclose(np.asarray(model(digits.x_test)), np.asarray(teacher.model(digits.x_test)), atol=1e-3)
    record = read_metadata(out)
    assert record["method"] == "pca" and record["split"] == "feat"
    assert record["teacher_sha256"] == sha256_file(teacher.path)


def test_pca_target_agreement_picks_fewer_channels(teacher, tmp_path):
    result = reencode(teacher.path, "feat", "pca", teacher.train, tmp_path / "pca.keras", target_agreement=0.97)
    settings = result.metadata["settings"]
    assert 1 <= settings["channels"] < 16 and settings["agreement_on_data"] >= 0.97
    assert tuple(_load(result.output).get_layer("code").output.shape[1:]) == (4, 4, settings["channels"])


def test_distill_downsampled_shapes_frozen_teacher_and_gradients(teacher, digits, tmp_path):
    import tensorflow as tf

    result = reencode(teacher.path, "feat", "distill", teacher.train, tmp_path / "d.keras", channels=4,
                      downsample=True, epochs=2, kd_epochs=1)
    model = _load(result.output)
    assert tuple(model.get_layer("code").output.shape[1:]) == (2, 2, 4)
    assert model.output.shape[1:] == (10,)
    for nested in ("teacher_head", "teacher_tail"):
        for layer in (la for la in model.get_layer(nested).layers if la.weights):
            for mine, theirs in zip(layer.get_weights(), teacher.model.get_layer(layer.name).get_weights()):
                np.testing.assert_array_equal(mine, theirs)
    assert [row["stage"] for row in result.history] == ["distill", "distill", "kd"]
    assert result.history[1]["mse"] < result.history[0]["mse"]
    encoder = model.get_layer("reencode_enc1").trainable_variables + model.get_layer("code").trainable_variables
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(tf.square(model(digits.x_test[:32], training=True)))
    grads = tape.gradient(loss, encoder)
    assert all(g is not None and float(tf.reduce_max(tf.abs(g))) > 0 for g in grads)


class _Interrupt(Exception):
    pass


def test_training_is_reproducible_and_resumes_to_the_same_weights(teacher, tmp_path):
    options = dict(channels=4, epochs=3, beta=0.05, seed=3)
    full = reencode(teacher.path, "feat", "entropic", teacher.train, tmp_path / "full.keras", **options)

    def stop_after_first(line: str) -> None:
        raise _Interrupt(line)

    with pytest.raises(_Interrupt, match="epoch 1/3"):
        reencode(teacher.path, "feat", "entropic", teacher.train, tmp_path / "cut.keras", echo=stop_after_first,
                 **options)
    lines: list[str] = []
    resumed = reencode(teacher.path, "feat", "entropic", teacher.train, tmp_path / "cut.keras", resume=True,
                       echo=lines.append, **options)
    assert [line.split("  ")[0] for line in lines] == ["distill epoch 2/3", "distill epoch 3/3"]
    names = ["reencode_enc1", "reencode_enc2", "reencode_dec1", "reencode_dec2"]
    a, b = _weights(_load(full.output), names), _weights(_load(resumed.output), names)
    for name in names:
        for wa, wb in zip(a[name], b[name]):
            np.testing.assert_allclose(wa, wb, atol=1e-6)
    for key in ("loc", "scale"):
        np.testing.assert_allclose(full.metadata["prior"][key], resumed.metadata["prior"][key], rtol=1e-5)
    assert full.history[-1]["loss"] == pytest.approx(resumed.history[-1]["loss"], rel=1e-5)


def _measured_bytes(result, x) -> float:
    """Mean ans payload bytes of the rounded codes of ``x`` under the model's learned prior."""
    import keras

    model = _load(result.output)
    code = np.asarray(keras.Model(model.inputs[0], model.get_layer("code").output)(x, training=False))
    assert np.array_equal(code, np.round(code)) and code.min() >= -128 and code.max() <= 127
    codec = AnsCodec(prior_from_pmf(*wire_pmf(result.metadata["prior"], (1.0, 0))))
    return float(np.mean([len(codec.encode(c)) for c in code.astype(np.int8)]))


def test_rate_term_lowers_measured_bytes(teacher, digits, tmp_path):
    common = dict(channels=4, epochs=6, seed=0)
    free = reencode(teacher.path, "feat", "entropic", teacher.train, tmp_path / "b0.keras", beta=0.0, **common)
    paid = reencode(teacher.path, "feat", "entropic", teacher.train, tmp_path / "b1.keras", beta=2.0, **common)
    free_bytes, paid_bytes = _measured_bytes(free, digits.x_test), _measured_bytes(paid, digits.x_test)
    assert paid_bytes < 0.8 * free_bytes, (free_bytes, paid_bytes)
    assert paid.history[-1]["bits"] < free.history[-1]["bits"]


def test_entropic_model_converts_with_its_learned_prior(teacher, tmp_path):
    from edgekit.converters import convert

    result = reencode(teacher.path, "feat", "entropic", teacher.train, tmp_path / "e.keras", channels=4, epochs=4,
                      kd_epochs=1, beta=0.5)
    bundle = convert(model=result.output, split="code", calib=teacher.train, eval=teacher.test, targets=["rpi"],
                     runtime="tflite", output=tmp_path / "bundle", latency_runs=0, min_agreement=0.0)
    manifest = json.loads((bundle.bundle_path / "manifest.json").read_text())
    assert manifest["model"]["reencode"]["method"] == "entropic"
    assert manifest["model"]["reencode"]["teacher_sha256"] == sha256_file(teacher.path)
    assert manifest["code"]["wire_quant"] == {"scale": 1.0, "zero_point": 0}
    assert manifest["wire"]["codecs"]["ans"]["source"] == "trained"
    stored = json.loads((bundle.bundle_path / "wire" / "ans_prior.json").read_text())
    lo, pmf = wire_pmf(result.metadata["prior"], (1.0, 0))
    assert stored["lo"] == lo and stored["freqs"] == prior_from_pmf(lo, pmf).freqs.tolist()
    assert bundle.report["models"][0]["top1_agreement"] > 0.8


def test_training_into_a_folder_that_does_not_exist(teacher, tmp_path):
    """The folder is made before training: the checkpoint after the first epoch goes into it (it crashed)."""
    output = tmp_path / "new" / "deeper" / "out.keras"
    result = reencode(teacher.path, "feat", "distill", teacher.train, output, channels=2, epochs=1, max_samples=200)
    assert result.output.is_file() and checkpoint_path(output).is_file()

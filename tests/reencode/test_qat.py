"""Quantization-aware fine-tuning of the entropic code (``--qat-epochs``, reencode/qat.py): the rounding as the
wire carries it with an identity gradient, the boundary margin, the stage recorded in the model's metadata for
Keras and PyTorch, latents kept off the rounding boundaries, and the int8 device half's code closer to the
float model's (convert's code SQNR) than without it, on the small real-digits teacher."""

from __future__ import annotations

import numpy as np
import pytest

from edgekit.converters.report import summary_lines
from edgekit.reencode import reencode
from edgekit.reencode.qat import MARGIN, boundary_margin, straight_through_round


def test_straight_through_round_sends_the_wire_integers_and_passes_the_gradient():
    import torch

    from edgekit.reencode.torch_layers import TORCH_OPS

    latent = torch.tensor([-300.0, -1.6, -0.4, 0.49, 2.51, 126.6, 400.0], requires_grad=True)
    code = straight_through_round(TORCH_OPS, latent)
    assert code.tolist() == [-128.0, -2.0, -0.0, 0.0, 3.0, 127.0, 127.0]
    (code * torch.arange(7.0)).sum().backward()
    assert latent.grad.tolist() == list(range(7))


def test_straight_through_round_is_the_same_in_keras():
    import keras

    latent = np.array([-300.0, -1.6, -0.4, 0.49, 2.51, 126.6, 400.0], np.float32)
    code = keras.ops.convert_to_numpy(straight_through_round(keras.ops, keras.ops.convert_to_tensor(latent)))
    np.testing.assert_array_equal(code, np.clip(np.round(latent), -128, 127))


def test_boundary_margin_is_zero_off_the_boundaries_and_largest_on_them():
    import torch

    from edgekit.reencode.torch_layers import TORCH_OPS

    margin = lambda values: float(boundary_margin(TORCH_OPS, torch.tensor(values)))  # noqa: E731
    assert margin([0.0, 1.0, -2.0, 0.5 - MARGIN - 0.01, 3.0 + MARGIN - 0.49]) == 0.0
    assert margin([0.5, -1.5]) == pytest.approx(MARGIN ** 2)
    assert 0 < margin([0.45]) < margin([0.49])


def _latents_and_code(result, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The written Keras model's latent before the code's rounding, and its code, on ``x``."""
    import keras

    from edgekit.reencode import layers  # noqa: F401 - registers IntegerCode

    model = keras.models.load_model(result.output, compile=False)
    latent = model.get_layer("teacher_head")(x)
    for name in ("reencode_enc1", "reencode_enc2"):
        latent = model.get_layer(name)(latent)
    return np.asarray(latent), np.asarray(model.get_layer("code")(latent))


def _near_boundary(latent: np.ndarray, within: float = 0.05) -> float:
    return float(np.mean(0.5 - np.abs(latent - np.round(latent)) < within))


def test_qat_keeps_latents_off_boundaries_records_it_and_lowers_int8_code_error(teacher, digits, tmp_path):
    """The same seeded training with and without two qat epochs; the qat model's latents sit farther from the
    rounding boundaries, and the int8 TFLite device half's code (convert, rpi) is closer to the float one."""
    from edgekit.converters import convert

    common = dict(channels=4, epochs=4, kd_epochs=1, beta=0.5, seed=0)
    plain = reencode(teacher.path, "feat", "entropic", teacher.train, tmp_path / "plain.keras", **common)
    qat = reencode(teacher.path, "feat", "entropic", teacher.train, tmp_path / "qat.keras", qat_epochs=2, **common)
    settings = qat.metadata["settings"]
    assert settings["qat_epochs"] == 2 and settings["qat_margin"] == MARGIN
    assert "qat_margin" not in plain.metadata["settings"] and plain.metadata["settings"]["qat_epochs"] == 0
    assert [row["stage"] for row in qat.history] == ["distill"] * 4 + ["kd", "qat", "qat"]
    assert all("margin" in row for row in qat.history[-2:])

    latent_plain, _ = _latents_and_code(plain, digits.x_test)
    latent_qat, code = _latents_and_code(qat, digits.x_test)
    near_plain, near_qat = _near_boundary(latent_plain), _near_boundary(latent_qat)
    assert near_qat < 0.75 * near_plain, (near_plain, near_qat)  # measured 0.114 → 0.059 of the latents
    assert np.array_equal(code, np.round(code))

    def converted(result, name):
        return convert(model=result.output, split="code", calib=teacher.train, eval=teacher.test, targets=["rpi"],
                       runtime="tflite", output=tmp_path / name, latency_runs=0, min_agreement=0.0).report

    def code_sqnr(report):
        sqnr = report["models"][0]["code_sqnr_db"]
        return float("inf") if sqnr is None else sqnr  # None: the int8 code equals the float one

    report_qat, report_plain = converted(qat, "qat_bundle"), converted(plain, "plain_bundle")
    assert code_sqnr(report_qat) > code_sqnr(report_plain), (report_plain, report_qat)  # measured 19.9 → 21.3 dB
    assert report_qat["reencode"] == {"method": "entropic", "qat_epochs": 2, "qat_margin": MARGIN}
    assert any("2 quantization-aware epochs" in line for line in summary_lines(report_qat))
    assert any("without quantization-aware epochs" in line for line in summary_lines(report_plain))


def test_qat_trains_a_pytorch_entropic_code_and_records_it(digits, tmp_path):
    import torch
    from support.torch_models import digits_net, nchw, save_program, train

    net = train(torch, digits_net(torch), digits, epochs=3)
    teacher = save_program(torch, net, torch.from_numpy(nchw(digits.x_train[:2])), tmp_path / "teacher.pt2")
    np.savez(tmp_path / "train.npz", x=nchw(digits.x_train[:400]), y=digits.y_train[:400])
    result = reencode(teacher, "relu_1", "entropic", tmp_path / "train.npz", tmp_path / "e.pt2", channels=4,
                      epochs=2, kd_epochs=1, qat_epochs=1, beta=0.5, learning_rate=3e-3)
    assert [row["stage"] for row in result.history] == ["distill", "distill", "kd", "qat"]
    assert result.metadata["settings"]["qat_epochs"] == 1 and "margin" in result.history[-1]


def test_qat_needs_an_entropic_code(run_cli, teacher, tmp_path):
    code, out, err = run_cli("reencode", teacher.path, "--split", "feat", "--method", "distill", "--channels", "2",
                             "--qat-epochs", "1", "--data", teacher.train, "-o", tmp_path / "d.keras")
    assert code != 0 and "Traceback" not in err
    assert "--qat-epochs" in err and "--method entropic" in err
    assert not (tmp_path / "d.keras").exists()

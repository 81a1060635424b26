"""One recipe, two frameworks: the Keras and the PyTorch entropic re-encoder of the same pretrained teacher reach
the same distortion, rate and agreement.

The teacher is the pretrained CIFAR-10 ResNet20, as ``resnet20.keras`` and as the PyTorch ``.th`` weights it was
ported from (examples/pytorch/resnet_cifar.py), cut at the same place: Keras's ``stage2_block1_out`` is the
PyTorch program's ``relu_8`` (layer2.0's output; the features are checked equal). Both train the entropic
re-encoder with the same options on the same 400 real CIFAR-10 JPEGs (5 epochs of head distillation with the
rate term, batch 16: 125 steps; no labels) and are measured on 200 other ones.

Tolerances, from seeds 0 and 1 of each framework on this data: the per-epoch distortion (normalised MSE) of
Keras and PyTorch differed by at most 7% relative (2.5% at seed 0), the trained rate (bits per sample) by 14%,
the ans bytes of the held-out codes under the learned prior by 11%, top-1 agreement with the teacher by 0.02
(0.32 ± 0.01: 125 steps teach little; 200 samples make ±0.03 its standard error); between seeds of one
framework the rate moved by up to 12%. The bounds are about twice those: 15%, 30%, 25%, 0.1. A framework whose
loss, rate or noise differed in kind (another rate unit, noise left on at inference, the prior on the wrong
axis, an encoder that does not learn) misses them by far.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from support.torch_models import resnet_cifar_example

from edgekit.reencode import reencode
from edgekit.reencode.prior import wire_pmf
from edgekit.reencode.torch_graph import cut_program
from edgekit.wire.codecs.ans import AnsCodec
from edgekit.wire.codecs.fit import prior_from_pmf

KERAS_SPLIT, TORCH_SPLIT = "stage2_block1_out", "relu_8"
OPTIONS = dict(channels=8, downsample=True, epochs=5, kd_epochs=0, beta=0.05, batch_size=16, learning_rate=3e-3,
               seed=0)
TRAIN = 400


@pytest.fixture(scope="module")
def resnet(tmp_path_factory, data_dir) -> SimpleNamespace:
    """The two teachers, 400 training and 200 held-out real CIFAR-10 JPEGs (NHWC and NCHW npz)."""
    import torch

    example = resnet_cifar_example()
    root = tmp_path_factory.mktemp("resnet20")
    pixels, labels = example.cifar_test_images(TRAIN + 200, data_dir)
    x = example.normalize(pixels)
    nchw = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    np.savez(root / "train_nhwc.npz", x=x[:TRAIN], y=labels[:TRAIN])
    np.savez(root / "train_nchw.npz", x=nchw[:TRAIN], y=labels[:TRAIN])
    model = example.load_pretrained("resnet20", data_dir)
    program = torch.export.export(model, (torch.zeros(2, 3, 32, 32),),
                                  dynamic_shapes=({0: torch.export.Dim("batch")},))
    torch.export.save(program, str(root / "resnet20.pt2"))
    with torch.no_grad():
        teacher = model(torch.from_numpy(nchw[TRAIN:])).numpy().argmax(1)
    return SimpleNamespace(root=root, keras=data_dir / "pretrained" / "resnet-cifar10" / "resnet20.keras",
                           torch=root / "resnet20.pt2", x=x[TRAIN:], x_nchw=nchw[TRAIN:], teacher=teacher)


def _bytes(codes: np.ndarray, prior: dict) -> float:
    codec = AnsCodec(prior_from_pmf(*wire_pmf(prior, (1.0, 0))))
    return float(np.mean([len(codec.encode(c)) for c in codes.astype(np.int8)]))


def _keras_run(resnet, tmp_path) -> SimpleNamespace:
    import keras

    from edgekit.reencode import layers  # noqa: F401 - registers IntegerCode

    result = reencode(resnet.keras, KERAS_SPLIT, "entropic", resnet.root / "train_nhwc.npz", tmp_path / "k.keras",
                      **OPTIONS)
    model = keras.models.load_model(result.output, compile=False)
    code = np.asarray(keras.Model(model.inputs[0], model.get_layer("code").output)(resnet.x))
    return SimpleNamespace(result=result, code=code, predicted=np.asarray(model(resnet.x)).argmax(1))


def _torch_run(resnet, tmp_path) -> SimpleNamespace:
    import torch

    result = reencode(resnet.torch, TORCH_SPLIT, "entropic", resnet.root / "train_nchw.npz", tmp_path / "t.pt2",
                      **OPTIONS)
    code = cut_program(result.output, result.metadata["code_node"]).features(resnet.x_nchw)
    with torch.no_grad():
        out = torch.export.load(str(result.output)).module()(torch.from_numpy(resnet.x_nchw)).numpy()
    return SimpleNamespace(result=result, code=code, predicted=out.argmax(1))


def test_the_two_teachers_are_cut_at_the_same_features(resnet):
    import keras

    from edgekit.converters.sources import load_keras

    teacher = load_keras(resnet.keras)
    expected = np.asarray(keras.Model(teacher.inputs[0], teacher.get_layer(KERAS_SPLIT).output)(resnet.x))
    features = cut_program(resnet.torch, TORCH_SPLIT).features(resnet.x_nchw)
    np.testing.assert_allclose(features.transpose(0, 2, 3, 1), expected, atol=1e-3)


def test_keras_and_pytorch_entropic_reach_the_same_distortion_rate_and_agreement(resnet, tmp_path):
    k, t = _keras_run(resnet, tmp_path), _torch_run(resnet, tmp_path)
    assert k.code.shape == t.code.shape == (len(resnet.x), 8, 8, 8)  # both channel-last, the prior's axis last
    for a, b in zip(k.result.history, t.result.history):
        assert b["mse"] == pytest.approx(a["mse"], rel=0.15), (a, b)
    assert t.result.history[-1]["mse"] < 0.7 * t.result.history[0]["mse"]  # both learned, not just started alike
    assert t.result.history[-1]["bits"] == pytest.approx(k.result.history[-1]["bits"], rel=0.3)
    k_bytes, t_bytes = _bytes(k.code, k.result.metadata["prior"]), _bytes(t.code, t.result.metadata["prior"])
    assert t_bytes == pytest.approx(k_bytes, rel=0.25), (k_bytes, t_bytes)
    k_agree, t_agree = np.mean(k.predicted == resnet.teacher), np.mean(t.predicted == resnet.teacher)
    assert abs(k_agree - t_agree) <= 0.1, (k_agree, t_agree)
    assert set(t.result.metadata["settings"]) == set(k.result.metadata["settings"])
    assert set(t.result.metadata["prior"]) == set(k.result.metadata["prior"])

"""The trained re-encoders for PyTorch programs on a small real-digits teacher: ``.pt2`` in, trained in PyTorch,
``.pt2`` out with the code node recorded, and ``convert --split code`` takes it (entropic: with its learned
prior as the ans prior). Training is reproducible and resumable, the rate term lowers measured bytes, the
tail moves only with ``train_tail``, and a dynamic-batch program reading ``x.size(0)`` after the cut still cuts."""

from __future__ import annotations

import json

import numpy as np
import pytest
from support.torch_models import digits_net, nchw, save_program, train

from edgekit.bundle.manifest import sha256_file
from edgekit.converters import convert
from edgekit.reencode import reencode
from edgekit.reencode.metadata import read_metadata
from edgekit.reencode.prior import wire_pmf
from edgekit.reencode.torch_graph import cut_program
from edgekit.wire.codecs.ans import AnsCodec
from edgekit.wire.codecs.fit import prior_from_pmf

CUT = "relu_1"  # 4 channels of 8 x 8 after the digits net's encoder conv


@pytest.fixture(scope="module")
def torch_teacher(tmp_path_factory, digits):
    import torch

    root = tmp_path_factory.mktemp("torch_trained")
    net = train(torch, digits_net(torch), digits, epochs=10)
    path = save_program(torch, net, torch.from_numpy(nchw(digits.x_train[:2])), root / "teacher.pt2")
    np.savez(root / "train.npz", x=nchw(digits.x_train), y=digits.y_train)
    np.savez(root / "test.npz", x=nchw(digits.x_test[:300]), y=digits.y_test[:300])
    return root, path, net


def _outputs(path, x):
    import torch

    with torch.no_grad():
        return torch.export.load(str(path)).module()(torch.from_numpy(x)).numpy()


def _code(result, x) -> np.ndarray:
    """The code of ``x``: the written program cut at its recorded code node."""
    return cut_program(result.output, result.metadata["code_node"]).features(x)


def _state(path) -> dict[str, np.ndarray]:
    import torch

    return {k: v.detach().numpy() for k, v in torch.export.load(str(path)).state_dict.items()}


def _teacher_weights_in(student: dict[str, np.ndarray], name: str) -> np.ndarray:
    """The re-encoded program's copy of teacher weight ``name`` (the stem and conv before the cut are the head)."""
    return student[f"tail.{name}" if name.startswith("classifier") else f"head.{name}"]


def test_distill_trains_writes_a_program_and_converts(torch_teacher, digits, tmp_path):
    root, teacher, _ = torch_teacher
    result = reencode(teacher, CUT, "distill", root / "train.npz", tmp_path / "d.pt2", channels=2, epochs=4,
                      kd_epochs=2, downsample=True, learning_rate=3e-3)
    assert [row["stage"] for row in result.history] == ["distill"] * 4 + ["kd"] * 2
    assert result.history[3]["mse"] < result.history[0]["mse"]
    record = read_metadata(result.output)
    assert record == result.metadata and record["method"] == "distill" and record["code_node"]
    assert record["teacher_sha256"] == sha256_file(teacher) and "prior" not in record
    assert record["settings"]["labels"] is True and record["settings"]["samples"] == len(digits.x_train)
    x = nchw(digits.x_test)
    assert _code(result, x).shape == (len(x), 2, 4, 4)  # NCHW, as pca's (entropic's is channel-last)
    teacher_state, student_state = _state(teacher), _state(result.output)
    for name, weights in teacher_state.items():  # the teacher's head and tail are frozen
        np.testing.assert_array_equal(_teacher_weights_in(student_state, name), weights)
    agreement = np.mean(_outputs(result.output, x).argmax(1) == _outputs(teacher, x).argmax(1))
    assert agreement > 0.5
    bundle = convert(model=result.output, split="code", calib=root / "train.npz", eval=root / "test.npz",
                     targets=["cpu"], runtime="onnx", output=tmp_path / "bundle", latency_runs=0, min_agreement=0.0)
    manifest = json.loads((bundle.bundle_path / "manifest.json").read_text())
    assert manifest["code"]["shape"] == [2, 4, 4] and manifest["model"]["reencode"]["method"] == "distill"


def test_entropic_code_is_integer_and_converts_with_its_learned_prior(torch_teacher, digits, tmp_path):
    root, teacher, _ = torch_teacher
    result = reencode(teacher, CUT, "entropic", root / "train.npz", tmp_path / "e.pt2", channels=4, epochs=4,
                      kd_epochs=1, beta=0.5, learning_rate=3e-3)
    code = _code(result, nchw(digits.x_test))
    assert code.shape[1:] == (8, 8, 4)
    assert np.array_equal(code, np.round(code)) and code.min() >= -128 and code.max() <= 127
    prior = result.metadata["prior"]
    assert prior["family"] == "logistic" and len(prior["loc"]) == len(prior["scale"]) == 4
    bundle = convert(model=result.output, split="code", calib=root / "train.npz", eval=root / "test.npz",
                     targets=["cpu"], runtime="onnx", output=tmp_path / "bundle", latency_runs=0, min_agreement=0.0,
                     codec="ans")
    manifest = json.loads((bundle.bundle_path / "manifest.json").read_text())
    assert manifest["code"]["wire_quant"] == {"scale": 1.0, "zero_point": 0}
    assert manifest["wire"]["codecs"]["ans"]["source"] == "trained"
    stored = json.loads((bundle.bundle_path / "wire" / "ans_prior.json").read_text())
    lo, pmf = wire_pmf(prior, (1.0, 0))
    assert stored["lo"] == lo and stored["freqs"] == prior_from_pmf(lo, pmf).freqs.tolist()
    assert bundle.report["models"][0]["top1_agreement"] > 0.9  # int8 device half vs the float program


def _measured_bytes(result, x) -> float:
    codec = AnsCodec(prior_from_pmf(*wire_pmf(result.metadata["prior"], (1.0, 0))))
    return float(np.mean([len(codec.encode(c)) for c in _code(result, x).astype(np.int8)]))


def test_rate_term_lowers_measured_bytes(torch_teacher, digits, tmp_path):
    root, teacher, _ = torch_teacher
    common = dict(channels=4, epochs=6, seed=0, learning_rate=3e-3)
    free = reencode(teacher, CUT, "entropic", root / "train.npz", tmp_path / "b0.pt2", beta=0.0, **common)
    paid = reencode(teacher, CUT, "entropic", root / "train.npz", tmp_path / "b1.pt2", beta=2.0, **common)
    x = nchw(digits.x_test)
    free_bytes, paid_bytes = _measured_bytes(free, x), _measured_bytes(paid, x)
    assert paid_bytes < 0.8 * free_bytes, (free_bytes, paid_bytes)
    assert paid.history[-1]["bits"] < free.history[-1]["bits"]


class _Interrupt(Exception):
    pass


def test_training_is_reproducible_and_resumes_to_the_same_weights(torch_teacher, tmp_path):
    root, teacher, _ = torch_teacher
    options = dict(channels=4, epochs=2, kd_epochs=1, beta=0.05, seed=3, train_tail=True, max_samples=400)
    full = reencode(teacher, CUT, "entropic", root / "train.npz", tmp_path / "full.pt2", **options)

    def stop_after_first(line: str) -> None:
        raise _Interrupt(line)

    with pytest.raises(_Interrupt, match="epoch 1/2"):
        reencode(teacher, CUT, "entropic", root / "train.npz", tmp_path / "cut.pt2", echo=stop_after_first, **options)
    lines: list[str] = []
    resumed = reencode(teacher, CUT, "entropic", root / "train.npz", tmp_path / "cut.pt2", resume=True,
                       echo=lines.append, **options)
    assert [line.split("  ")[0] for line in lines] == ["distill epoch 2/2", "kd epoch 1/1"]
    a, b = _state(full.output), _state(resumed.output)
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_allclose(a[name], b[name], atol=1e-6, err_msg=name)
    for key in ("loc", "scale"):
        np.testing.assert_allclose(full.metadata["prior"][key], resumed.metadata["prior"][key], rtol=1e-5)
    assert full.history[-1]["loss"] == pytest.approx(resumed.history[-1]["loss"], rel=1e-5)


def test_train_tail_moves_the_tail_only(torch_teacher, tmp_path):
    root, teacher, _ = torch_teacher
    result = reencode(teacher, CUT, "distill", root / "train.npz", tmp_path / "t.pt2", channels=4, epochs=1,
                      kd_epochs=2, train_tail=True, max_samples=600)
    teacher_state, student_state = _state(teacher), _state(result.output)
    changed = {name for name, w in teacher_state.items()
               if not np.array_equal(_teacher_weights_in(student_state, name), w)}
    assert changed == {"classifier.weight", "classifier.bias"}  # the tail; the stem and encoder conv are the head
    assert result.metadata["settings"]["train_tail"] is True
    assert result.history[-1]["ce"] < result.history[-2]["ce"]


def test_a_dynamic_batch_view_program_cuts_and_trains(digits, tmp_path):
    """``reshape(x.size(0), -1)`` in a dynamic-batch export reads the batch size off the input, before the
    cut: the tail takes it from the features instead (the pretrained CIFAR ResNets' ``view`` is written so)."""
    import torch

    class ViewNet(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = torch.nn.Conv2d(1, 8, 3, padding=1)
            self.classifier = torch.nn.Linear(8 * 8 * 8, 10)

        def forward(self, x):
            features = torch.relu(self.stem(x))
            return self.classifier(features.reshape(x.size(0), -1))

    path = save_program(torch, train(torch, ViewNet(), digits, epochs=2),
                        torch.from_numpy(nchw(digits.x_train[:2])), tmp_path / "view.pt2")
    np.savez(tmp_path / "train.npz", x=nchw(digits.x_train[:300]))
    result = reencode(path, "relu", "distill", tmp_path / "train.npz", tmp_path / "v.pt2", channels=8, epochs=1)
    x = nchw(digits.x_test[:5])
    assert _outputs(result.output, x).shape == (5, 10)

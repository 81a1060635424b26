"""PCA re-encoders for PyTorch programs: ``.pt2`` in, ``.pt2`` out, and ``convert --split code`` takes it."""

from __future__ import annotations

import numpy as np
import pytest
from support.torch_models import digits_net, nchw, residual_bn_net, save_program, train

from edgekit.bundle.manifest import Bundle
from edgekit.converters import convert
from edgekit.errors import UsageError
from edgekit.reencode import reencode
from edgekit.reencode.metadata import read_metadata

CUT = "relu_1"  # the ReLU after the encoder conv: 4 channels of 8 x 8 (node names as --list-splits shows them)


@pytest.fixture(scope="module")
def torch_teacher(tmp_path_factory, digits):
    import torch

    root = tmp_path_factory.mktemp("torch_teacher")
    net = train(torch, digits_net(torch), digits)
    path = save_program(torch, net, torch.from_numpy(nchw(digits.x_train[:2])), root / "teacher.pt2")
    np.savez(root / "calib.npz", x=nchw(digits.x_train[:300]))
    np.savez(root / "test.npz", x=nchw(digits.x_test[:300]), y=digits.y_test[:300])
    return root, path, net


def _outputs(torch, path, x):
    with torch.no_grad():
        return torch.export.load(str(path)).module()(torch.from_numpy(x)).numpy()


def test_pca_at_all_channels_is_the_identity(torch_teacher, digits, tmp_path):
    import torch

    root, teacher, _ = torch_teacher
    result = reencode(teacher, CUT, "pca", root / "calib.npz", tmp_path / "k4.pt2", channels=4)
    x = nchw(digits.x_test[:64])
    np.testing.assert_allclose(_outputs(torch, result.output, x), _outputs(torch, teacher, x), atol=1e-4)


def test_pca_program_converts_at_code(torch_teacher, digits, tmp_path):
    import torch

    root, teacher, _ = torch_teacher
    result = reencode(teacher, CUT, "pca", root / "calib.npz", tmp_path / "k2.pt2", channels=2)
    record = read_metadata(result.output)
    assert record["method"] == "pca" and record["settings"]["channels"] == 2 and record["code_node"]
    assert result.metadata == record
    # fewer channels lose something, but far from everything: the code still carries the class
    agree = (_outputs(torch, result.output, nchw(digits.x_test)).argmax(1)
             == _outputs(torch, teacher, nchw(digits.x_test)).argmax(1)).mean()
    assert 0.5 < agree < 1.0
    bundle = convert(model=result.output, split="code", calib=root / "calib.npz", eval=root / "test.npz",
                     targets=["cpu"], runtime="onnx", output=tmp_path / "bundle", latency_runs=3)
    loaded = Bundle.load(bundle.bundle_path)
    assert loaded.code.shape == (2, 8, 8)
    assert loaded.manifest["model"]["reencode"]["method"] == "pca"
    assert bundle.passed


def test_target_agreement_picks_the_channels(torch_teacher, tmp_path):
    root, teacher, _ = torch_teacher
    result = reencode(teacher, CUT, "pca", root / "calib.npz", tmp_path / "a.pt2", target_agreement=0.97)
    settings = result.metadata["settings"]
    assert 1 <= settings["channels"] <= 4 and settings["agreement_on_data"] >= 0.97


def test_bad_node_cut_and_output_are_one_line_errors(torch_teacher, tmp_path):
    root, teacher, _ = torch_teacher
    with pytest.raises(UsageError, match="has no node 'nope'.*relu_1.*--list-splits"):
        reencode(teacher, "nope", "pca", root / "calib.npz", tmp_path / "x.pt2", channels=2)
    with pytest.raises(UsageError, match="re-encodes to a .pt2 program, not x.onnx.*-o OUT.pt2"):
        reencode(teacher, CUT, "pca", root / "calib.npz", tmp_path / "x.onnx", channels=2)
    with pytest.raises(UsageError, match="features at 'flatten' have shape \\(256,\\), not channels × height.*pca"):
        reencode(teacher, "flatten", "distill", root / "calib.npz", tmp_path / "x.pt2", channels=2)


def test_a_tensor_crossing_the_cut_is_refused(digits, tmp_path):
    import torch

    net = train(torch, digits_net(torch, residual=True), digits, epochs=1)
    path = save_program(torch, net, torch.from_numpy(nchw(digits.x_train[:2])), tmp_path / "residual.pt2")
    np.savez(tmp_path / "calib.npz", x=nchw(digits.x_train[:50]))
    with pytest.raises(UsageError, match="tensors relu cross the cut at 'relu_1'"):
        reencode(path, CUT, "pca", tmp_path / "calib.npz", tmp_path / "x.pt2", channels=2)


def test_a_split_renamed_by_the_exporters_decomposition_cuts_the_programs_node(tmp_path):
    """``--list-splits`` shows the ONNX export's names, where batch norms decompose into adds (EfficientNet-Lite0's
    ``add_383``); reencode traces such a name back to the program's node, as convert does, instead of refusing it."""
    import torch

    from edgekit.converters.split_points import list_split_points

    torch.manual_seed(0)
    net = residual_bn_net(torch).eval()
    x = np.random.default_rng(0).random((64, 3, 8, 8), np.float32)
    teacher = save_program(torch, net, torch.from_numpy(x[:2]), tmp_path / "residual.pt2")
    np.savez(tmp_path / "calib.npz", x=x)
    split = next(p.name for p in list_split_points(teacher) if p.name.startswith("add"))
    assert split != "add"  # renamed by the decomposition
    renamed = reencode(teacher, split, "pca", tmp_path / "calib.npz", tmp_path / "renamed.pt2", channels=3)
    direct = reencode(teacher, "add", "pca", tmp_path / "calib.npz", tmp_path / "direct.pt2", channels=3)
    np.testing.assert_allclose(_outputs(torch, renamed.output, x), _outputs(torch, direct.output, x), atol=1e-5)
    assert not np.allclose(_outputs(torch, renamed.output, x), _outputs(torch, teacher, x), atol=1e-3)

"""PyTorch sources: a ``torch.export`` program (``.pt2``) converts like an ONNX model, cut on its ONNX export.

A small CNN is trained on the digits for a second, exported with a dynamic batch and saved with
``torch.export.save``, as docs/convert.md tells a user to do with any ``nn.Module``.
"""

from __future__ import annotations

import subprocess
import sys
from types import SimpleNamespace

import pytest

from support.torch_models import digits_net, save_digits_programs, train

from edgekit.bundle.manifest import Bundle
from edgekit.converters import convert
from edgekit.converters.split_points import list_split_points
from edgekit.errors import UsageError


@pytest.fixture(scope="module")
def digits_pt2(tmp_path_factory, digits) -> SimpleNamespace:
    """The trained net as model.pt2, and as separate device.pt2 / server.pt2 halves; NCHW calib/test sets."""
    import torch

    return save_digits_programs(torch, train(torch, digits_net(torch), digits), digits,
                                tmp_path_factory.mktemp("digits_pt2"))


def _code_cut(model) -> str:
    """The cut after the encoder's ReLU: the 4-channel tensor (4 x 8 x 8 = 256 int8 bytes)."""
    points = list_split_points(model)
    cut = [p for p in points if p.shape[-3:] == (4, 8, 8)]
    assert cut, [p.describe() for p in points]
    return cut[-1].name


def test_list_splits_reads_the_program(digits_pt2):
    points = list_split_points(digits_pt2.model)
    assert len(points) >= 3
    assert any(p.shape[-3:] == (16, 8, 8) for p in points) and any(p.shape[-3:] == (4, 8, 8) for p in points)


def test_convert_a_pt2_program(digits_pt2, tmp_path):
    assert digits_pt2.accuracy > 0.9  # the source model is a real classifier
    result = convert(model=digits_pt2.model, split=_code_cut(digits_pt2.model), calib=digits_pt2.calib,
                     eval=digits_pt2.test, targets=["cpu"], runtime="onnx", output=tmp_path / "b", latency_runs=3)
    bundle = Bundle.load(result.bundle_path)
    assert bundle.manifest["model"]["source_format"] == "pytorch"
    assert bundle.code.shape == (4, 8, 8)
    assert result.passed, result.report["parity"]
    assert [d.runtime for d in bundle.device_models] == ["onnx"]


def test_convert_pt2_halves(digits_pt2, tmp_path):
    result = convert(device_model=digits_pt2.root / "device.pt2", server_model=digits_pt2.root / "server.pt2",
                     calib=digits_pt2.calib, eval=digits_pt2.test, targets=["cpu"], runtime="onnx",
                     output=tmp_path / "b", latency_runs=3)
    assert Bundle.load(result.bundle_path).code.shape == (4, 8, 8)
    assert result.passed


def test_tflite_runtime_goes_through_litert_torch(digits_pt2, tmp_path):
    """--runtime tflite: the device half only as TFLite (tests/convert/test_pytorch_tflite.py has the rest)."""
    result = convert(model=digits_pt2.model, split=_code_cut(digits_pt2.model), calib=digits_pt2.calib,
                     eval=digits_pt2.test, targets=["rpi"], runtime="tflite", output=tmp_path / "b", latency_runs=0)
    assert result.passed
    assert [(d.runtime, d.input_dtype) for d in Bundle.load(result.bundle_path).device_models] == [("tflite", "int8")]


def test_a_file_that_is_not_a_program_is_one_line(tmp_path):
    """torch logs its own traceback for a file that is not a program: the user sees one line and exit 2."""
    bad = tmp_path / "broken.pt2"
    bad.write_bytes(b"not a zip archive")
    with pytest.raises(UsageError, match="cannot read .*broken.pt2 as a torch.export program"):
        list_split_points(bad)
    done = subprocess.run([sys.executable, "-m", "edgekit.cli", "convert", str(bad), "--list-splits"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [done.stderr.strip()]
    assert "torch.export program" in done.stderr and "Traceback" not in done.stderr

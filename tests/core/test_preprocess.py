"""Preprocessing: the same tensor on the workstation and the device, recorded in the manifest."""

from __future__ import annotations

import tarfile

import numpy as np
import pytest

from edgekit.errors import UsageError
from edgekit.preprocess import Preprocessing


def test_round_trip_through_manifest_dict():
    pre = Preprocessing(size=(32, 24), color="rgb", scale=1 / 255, mean=(0.5, 0.4, 0.3), std=(0.2, 0.2, 0.2),
                        layout="nchw")
    assert Preprocessing.from_dict(pre.to_dict()) == pre
    assert pre.input_shape == (3, 32, 24)


def test_apply_array_normalizes_and_lays_out():
    pixels = np.full((4, 4, 3), 255, np.uint8)
    pixels[..., 1] = 0
    pre = Preprocessing(size=(4, 4), mean=(0.5,), std=(0.5,), layout="nchw")
    x = pre.apply_array(pixels)
    assert x.shape == (3, 4, 4) and x.dtype == np.float32
    np.testing.assert_allclose(x[0], 1.0, atol=1e-6)
    np.testing.assert_allclose(x[1], -1.0, atol=1e-6)


def test_grayscale_resize():
    pre = Preprocessing(size=(8, 8), color="grayscale")
    x = pre.apply_array(np.full((16, 16), 128, np.uint8))
    assert x.shape == (8, 8, 1)
    np.testing.assert_allclose(x, 128 / 255, atol=1e-6)


def test_real_jpeg(data_dir, tmp_path):
    with tarfile.open(data_dir / "cifar10" / "cifar10-test-jpeg.tar.gz") as tar:
        member = next(m for m in tar if m.isfile() and m.name.endswith(".jpg"))
        (tmp_path / "img.jpg").write_bytes(tar.extractfile(member).read())
    pre = Preprocessing(size=(32, 32))
    x = pre.apply_file(tmp_path / "img.jpg")
    assert x.shape == (32, 32, 3) and 0.0 <= x.min() and x.max() <= 1.0 and x.std() > 0.01
    small = Preprocessing(size=(16, 16), color="grayscale").apply_file(tmp_path / "img.jpg")
    assert small.shape == (16, 16, 1)


@pytest.mark.parametrize("kwargs, message", [
    (dict(size=(8, 8), color="cmyk"), "unknown color mode"),
    (dict(size=(8, 8), layout="hwcn"), "unknown layout"),
    (dict(size=(8, 8), mean=(0.1, 0.2)), "--mean has 2 values but rgb images have 3 channels"),
    (dict(size=(8, 8), std=(0.0,)), "--std contains 0"),
    (dict(size=(0, 8)), "is not \\(height, width\\)"),
])
def test_bad_options(kwargs, message):
    with pytest.raises(UsageError, match=message):
        Preprocessing(**kwargs)


def test_unreadable_image(tmp_path):
    (tmp_path / "x.jpg").write_bytes(b"not an image")
    with pytest.raises(UsageError, match="cannot read image"):
        Preprocessing(size=(8, 8)).apply_file(tmp_path / "x.jpg")
    with pytest.raises(UsageError, match="expected uint8"):
        Preprocessing(size=(8, 8)).apply_array(np.zeros((8, 8), np.float32))

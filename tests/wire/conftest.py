"""Fixtures for the wire tests: real codes made from Fashion-MNIST pixels, and codecs fitted on them.

No converted model is needed: the codes are real images pooled and quantized to int8, shaped like the
codes edgekit models emit ((7, 7, 4) and (16,)), so the codecs see real, non-synthetic statistics.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from edgekit.demo.example_model import read_idx
from wire_helpers import codes_16, codes_774, make_spec

from edgekit.wire.spec import WireSpec


@pytest.fixture(scope="session")
def fmnist_images(data_dir: Path) -> np.ndarray:
    """The 10,000 Fashion-MNIST test images."""
    return read_idx(data_dir / "fashion-mnist" / "t10k-images-idx3-ubyte.gz")


@pytest.fixture(scope="session")
def codes(fmnist_images: np.ndarray) -> np.ndarray:
    """(10000, 7, 7, 4) int8 codes."""
    return codes_774(fmnist_images)


@pytest.fixture(scope="session")
def codes16(fmnist_images: np.ndarray) -> np.ndarray:
    """(10000, 16) int8 codes spanning -128..127."""
    return codes_16(fmnist_images)


@pytest.fixture(scope="session")
def spec(tmp_path_factory: pytest.TempPathFactory, codes: np.ndarray) -> WireSpec:
    """Codecs fitted on 3,000 calibration codes, judged on 1,000 held-out ones."""
    return make_spec(tmp_path_factory.mktemp("bundle774"), codes[:3000], codes[3000:4000])


@pytest.fixture(scope="session")
def spec16(tmp_path_factory: pytest.TempPathFactory, codes16: np.ndarray) -> WireSpec:
    """The (16,) codes' bundle."""
    return make_spec(tmp_path_factory.mktemp("bundle16"), codes16[:3000], codes16[3000:4000])

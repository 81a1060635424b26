"""Shared fixtures: where the real data lives."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The real datasets (``EDGEKIT_DATA``, default ``../shared/data`` beside the repository)."""
    path = Path(os.environ.get("EDGEKIT_DATA", REPO.parent / "shared" / "data"))
    if not path.is_dir():
        pytest.fail(f"real data not found at {path}: set EDGEKIT_DATA to the shared data folder")
    return path

"""Shared fixtures: where the real data lives, scikit-learn's bundled 8x8 digits (real data, no download), and
(from tests/support) a real Mosquitto per test, one real converted bundle per session, and a real PostgreSQL
server per session with a fresh database per test (``results_db`` runs a store test on SQLite and PostgreSQL).

tests/ mirrors the code's rooms: core, bundle, wire, mqtt, auth, delivery, convert, reencode, device, server;
tests/pipeline holds the end-to-end runs across them.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]

pytest_plugins = ["support.broker", "support.bundles", "support.postgres", "support.text_models"]


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The real datasets (``EDGEKIT_DATA``, default ``../shared/data`` beside the repository)."""
    path = Path(os.environ.get("EDGEKIT_DATA", REPO.parent / "shared" / "data"))
    if not path.is_dir():
        pytest.fail(f"real data not found at {path}: set EDGEKIT_DATA to the shared data folder")
    return path


@pytest.fixture(scope="session")
def digits() -> SimpleNamespace:
    """1,300 training and 497 test digits, shuffled with a fixed seed, (N, 8, 8, 1) float32 in [0, 1]."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x = (data.images / 16.0).astype(np.float32)[..., None]
    y = data.target.astype(np.int64)
    order = np.random.default_rng(0).permutation(len(x))
    x, y = x[order], y[order]
    return SimpleNamespace(x_train=x[:1300], y_train=y[:1300], x_test=x[1300:], y_test=y[1300:])


@pytest.fixture
def cli_runner(monkeypatch, capsys):
    """``cli_runner(*commands)``: run ``edgekit.cli.main`` with only ``commands`` registered, as a function of the
    arguments returning (exit code, stdout, stderr)."""
    import edgekit.cli as cli_module

    # `device run` and `server run` route the edgekit logger to the stderr of the moment (setup_run_logging);
    # in one pytest process that stream is a closed capture by the next test: restore the logger after this one.
    logger = logging.getLogger("edgekit")
    saved = (logger.handlers[:], logger.level, logger.propagate)

    def make(*commands):
        monkeypatch.setattr(cli_module, "_register", lambda: [cli_module.cli.add_command(c) for c in commands])

        def run(*args: str | Path) -> tuple[int, str, str]:
            capsys.readouterr()
            code = cli_module.main([str(a) for a in args])
            captured = capsys.readouterr()
            return code, captured.out, captured.err

        return run

    yield make
    logger.handlers[:], logger.level, logger.propagate = saved

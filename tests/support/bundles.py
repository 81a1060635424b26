"""One real bundle per session for every test folder, and streams of its held-out inputs."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def bundle(tmp_path_factory):
    """One real bundle for the session: the digits example model trained briefly, converted for ``rpi``.

    TFLite only: the agent runs the TFLite model, and agent and receiver refuse a bundle whose parity check
    failed, which the ONNX int8 model does on CPUs without VNNI (issue 7; ONNX halves are tested in
    tests/convert).
    """
    from edgekit.converters import convert
    from edgekit.demo.example_model import train

    root = tmp_path_factory.mktemp("bundle")
    model, calib, test = train("digits", None, root / "model", epochs=8, seed=0)
    result = convert(model=model, split="code", calib=calib, eval=test, targets=["rpi"], output=root / "bundle",
                     force=True, latency_runs=3, eval_samples=200, runtime="tflite")
    return result.bundle_path


@pytest.fixture(scope="session")
def stream(bundle, tmp_path_factory):
    """Factory: an .npz of the first ``n`` held-out digits (float model inputs) to stream."""
    import numpy as np

    test = np.load(bundle.parent / "model" / "test.npz")
    folder = tmp_path_factory.mktemp("streams")

    def make(n: int):
        path = folder / f"stream{n}.npz"
        if not path.exists():
            np.savez(path, x=np.resize(test["x"], (n, *test["x"].shape[1:])))
        return path

    return make

"""Golden vectors written by convert: every device model covered, hashed, described, and passing here."""

from __future__ import annotations

import json

import numpy as np

from edgekit.bundle.manifest import Bundle
from edgekit.converters.golden import INPUT_BUDGET_BYTES, MAX_SAMPLES, MIN_SAMPLES, _pick


def test_every_device_model_and_the_server_have_golden_vectors(rpi_bundle):
    b = Bundle.load(rpi_bundle.bundle_path)
    golden = b.golden
    spec = b.manifest["golden"]
    assert {m.path.relative_to(b.path).as_posix() for m in b.device_models} == set(golden.device)
    assert {d["runtime"] for d in spec["device"]} == {"litert", "onnxruntime"}
    assert spec["cpu"]["arch"] and spec["server"]["runtime_version"]
    arrays = golden.arrays
    assert arrays[golden.inputs].shape == (golden.samples, *b.input.shape)
    for name in golden.device.values():
        assert arrays[name].dtype == np.int8 and arrays[name].shape == (golden.samples, *b.code.shape)
    assert arrays[golden.server["outputs"]].shape == (golden.samples, *b.output.shape)
    # The server's golden codes are the first device model's, dequantized with its own quantization.
    first = b.manifest["device_models"][0]
    assert golden.server["codes"] == golden.device[first["path"]]
    assert golden.server["code_quant"] == first["code_quant"]


def test_inspect_self_tests_every_half_on_this_machine(rpi_bundle, run_cli):
    code, stdout, _ = run_cli("inspect", rpi_bundle.bundle_path, "--json")
    results = json.loads(stdout)["selftest"]
    assert code == 0 and [r["role"] for r in results] == ["device", "device", "server"]
    assert all(r["passed"] for r in results), results
    code, stdout, _ = run_cli("inspect", rpi_bundle.bundle_path, "--json", "--no-selftest")
    assert code == 0 and "selftest" not in json.loads(stdout)


def test_large_inputs_get_fewer_golden_samples():
    small = np.zeros((200, 8, 8, 1), np.float32)
    assert len(_pick(small)) == MAX_SAMPLES
    imagenet = np.zeros((20, 224, 224, 3), np.float32)
    assert len(_pick(imagenet)) == INPUT_BUDGET_BYTES // imagenet[0].nbytes == 6
    huge = np.zeros((10, 1024, 1024, 3), np.float32)
    assert len(_pick(huge)) == MIN_SAMPLES
    few = np.arange(3, dtype=np.float32)[:, None]
    assert _pick(few).ravel().tolist() == [0.0, 1.0, 2.0]  # never more than there are

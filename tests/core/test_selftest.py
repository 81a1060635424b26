"""Golden vectors and the start-up self-test: a device or server that computes something else is refused.

Real bundles (the session's digits bundle and a second, differently trained model), real LiteRT and ONNX
Runtime, real Mosquitto for the status message. Tampered bundles have their hashes re-computed with the
project's own ``write_manifest``, so the hash check passes and only the self-test can notice.
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from edgekit.bundle.manifest import MANIFEST_NAME, Bundle, write_manifest
from edgekit.cli import main
from edgekit.errors import ParityError
from edgekit.mqtt.urls import parse_broker_url
from edgekit.mqtt.topics import topic
from edgekit.runtime import open_device_runner, open_server_runner
from edgekit.selftest import SelfTestError, device_selftest, require_pass, server_selftest

DEVICE = "device/rpi/device_int8.tflite"
SERVER = "server/server_fp32.onnx"


@pytest.fixture(scope="module")
def donor(tmp_path_factory):
    """Another model with the same code shape: the digits recipe with another seed, one epoch."""
    from edgekit.converters import convert
    from edgekit.demo.example_model import train

    root = tmp_path_factory.mktemp("donor")
    model, calib, test = train("digits", None, root / "model", epochs=1, seed=7)
    return convert(model=model, split="code", calib=calib, eval=test, targets=["rpi"], output=root / "bundle",
                   force=True, latency_runs=0, eval_samples=50, runtime="tflite").bundle_path


def _tampered(bundle, tmp_path, edit=None, files=()):
    """A copy of ``bundle`` with ``files`` ((source, bundle-relative destination) pairs) copied in, the
    manifest changed by ``edit``, and every hash and the bundle id re-computed."""
    root = tmp_path / "tampered"
    shutil.copytree(bundle, root)
    for source, rel in files:
        shutil.copyfile(source, root / rel)
    manifest = json.loads((root / MANIFEST_NAME).read_text())
    if edit is not None:
        edit(manifest, root)
    write_manifest(root, manifest)
    return root


def _device_result(root):
    b = Bundle.load(root)
    model = b.device_model()
    return device_selftest(b, open_device_runner(model.path, code_quant=model.code_quant), model.path)


def _cli(capsys, *args):
    """Run the CLI in-process; restore the ``edgekit`` logger that ``run`` commands reconfigure."""
    logger = logging.getLogger("edgekit")
    saved = logger.handlers[:], logger.propagate, logger.level
    capsys.readouterr()
    try:
        code = main([str(a) for a in args])
    finally:
        logger.handlers[:], logger.propagate = saved[0], saved[1]
        logger.setLevel(saved[2])
    out, err = capsys.readouterr()
    return code, out, err


def test_a_fresh_bundle_carries_golden_vectors_that_pass_here(bundle, capsys):
    b = Bundle.load(bundle)
    golden = b.golden
    assert golden is not None and 4 <= golden.samples <= 16
    assert b.manifest["golden"]["path"] in b.manifest["files"]  # hashed like every file
    arrays = golden.arrays
    calib = np.load(bundle.parent / "model" / "calib.npz")["x"]
    assert all(any(np.array_equal(x, c) for c in calib) for x in arrays[golden.inputs])  # real calibration inputs
    assert set(golden.device) == {m["path"] for m in b.manifest["device_models"]}

    device = _device_result(bundle)
    assert device.passed and device.metrics["max_level_diff"] == 0 and device.runtime == "litert"
    assert device.runtime_version and device.cpu["arch"] and device.metrics["frame_ms"] > 0
    server = server_selftest(b, open_server_runner(b.server_model.path))
    assert server.passed and server.metrics["max_abs_error"] <= golden.tolerance["output_max_abs_error"]

    code, out, _ = _cli(capsys, "device", "selftest", "--bundle", bundle)
    assert code == 0 and out.startswith("device self-test passed: device/rpi/device_int8.tflite on litert")
    code, out, _ = _cli(capsys, "device", "selftest", "--bundle", bundle, "--json")
    result = json.loads(out)
    assert code == 0 and result["passed"] is True and result["cpu"]["model"]
    code, out, _ = _cli(capsys, "inspect", bundle)
    assert code == 0 and "golden     " in out and "server self-test passed" in out


def test_a_swapped_device_model_is_refused(bundle, donor, tmp_path, capsys):
    root = _tampered(bundle, tmp_path, files=[(donor / DEVICE, DEVICE)])
    Bundle.load(root)  # the hashes were re-computed: only the self-test can tell
    result = _device_result(root)
    assert result.passed is False and result.metrics["fraction_diff"] > 0.02
    with pytest.raises(SelfTestError, match="device self-test failed"):
        require_pass(result)

    code, out, err = _cli(capsys, "device", "selftest", "--bundle", root)
    assert code == 4 and "FAILED" in out
    assert err.startswith("error: device self-test failed") and len(err.strip().splitlines()) == 1
    code, out, _ = _cli(capsys, "inspect", root)
    assert code == 0 and f"device self-test FAILED: {DEVICE}" in out

    # The agent itself, as a process: one line, exit 4, before it ever connects.
    done = subprocess.run([sys.executable, "-m", "edgekit.cli", "device", "run", "--bundle", str(root),
                           "--broker", "mqtt://127.0.0.1:9", "--device-id", "cam-x", "--source",
                           str(bundle.parent / "model" / "test.npz")], capture_output=True, text=True, timeout=120)
    lines = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert done.returncode == 4 and "Traceback" not in done.stderr
    assert len(lines) == 1 and "device self-test failed" in lines[0]


def test_a_swapped_server_model_is_refused_by_the_receiver(bundle, donor, tmp_path, capsys):
    from edgekit.server.receiver import Receiver, ReceiverConfig

    root = _tampered(bundle, tmp_path, files=[(donor / SERVER, SERVER)])
    b = Bundle.load(root)
    result = server_selftest(b, open_server_runner(b.server_model.path))
    assert result.passed is False
    assert _device_result(root).passed  # the device half is untouched

    cfg = ReceiverConfig(bundles=[root], broker=parse_broker_url("mqtt://127.0.0.1:9"), db=tmp_path / "r.sqlite")
    with pytest.raises(SelfTestError, match="server self-test failed: server/server_fp32.onnx"):
        Receiver(cfg)
    code, _, err = _cli(capsys, "server", "run", "--bundle", root, "--broker", "mqtt://127.0.0.1:9",
                        "--db", tmp_path / "r.sqlite")
    assert code == 4 and err.startswith("error: server self-test failed")


def test_a_server_model_of_another_input_shape_fails_the_selftest_instead_of_crashing(bundle, tmp_path):
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Softmax", ["code"], ["probs"], axis=1)], "other",
                              [helper.make_tensor_value_info("code", TensorProto.FLOAT, ["N", 10])],
                              [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", 10])])
    other = tmp_path / "other.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), other)
    root = _tampered(bundle, tmp_path, files=[(other, SERVER)])
    b = Bundle.load(root)
    result = server_selftest(b, open_server_runner(b.server_model.path))
    assert result.passed is False and result.detail.startswith("the model takes (10,) but the golden codes are")


def _failing(manifest, _root):
    manifest["parity"].update(passed=False, worst_agreement=0.5)


def test_a_failing_parity_bundle_is_refused_unless_allowed(bundle, tmp_path, capsys, caplog):
    from edgekit.server.receiver import Receiver, ReceiverConfig

    root = _tampered(bundle, tmp_path, edit=_failing)
    code, _, err = _cli(capsys, "device", "run", "--bundle", root, "--broker", "mqtt://127.0.0.1:9",
                        "--device-id", "cam-x", "--source", bundle.parent / "model" / "test.npz")
    assert code == 3 and "failed its parity check at convert time (top-1 agreement 50.00% < 99.00%)" in err
    assert "--allow-failing-parity" in err
    code, _, err = _cli(capsys, "server", "run", "--bundle", root, "--db", tmp_path / "r.sqlite")
    assert code == 3 and "failed its parity check" in err

    cfg = ReceiverConfig(bundles=[root], broker=parse_broker_url("mqtt://127.0.0.1:9"), db=tmp_path / "r.sqlite",
                         allow_failing_parity=True)
    with caplog.at_level("WARNING"):
        Receiver(cfg).store.close()
    assert "running it anyway because of --allow-failing-parity" in caplog.text
    with pytest.raises(ParityError):
        Receiver(ReceiverConfig(bundles=[root], broker=cfg.broker, db=cfg.db))


def test_the_status_message_carries_the_selftest_and_the_allowed_failing_parity(bundle, stream, tmp_path,
                                                                                 mosquitto, collector):
    from edgekit.device.agent import Agent, AgentConfig

    root = _tampered(bundle, tmp_path, edit=_failing)
    status = collector(mosquitto.url, topic("cam-s", "status"))
    agent = Agent(AgentConfig(bundle=root, broker=parse_broker_url(mosquitto.url), device_id="cam-s",
                              source=str(stream(3)), fps=0, spool=tmp_path / "spool.sqlite", linger_s=0,
                              allow_failing_parity=True))
    agent.run(threading.Event())
    online = next(json.loads(p) for _, p, _ in status.wait_for(1) if json.loads(p)["state"] == "online")
    assert online["parity"] == {"passed": False, "allowed_failing": True}
    selftest = online["selftest"]
    assert selftest["passed"] is True and selftest["runtime"] == "litert" and selftest["runtime_version"]
    assert selftest["model"] == DEVICE and selftest["cpu"]["arch"] and "flags" in selftest["cpu"]


def test_a_bundle_without_golden_vectors_warns_and_runs(bundle, tmp_path, capsys, caplog):
    def drop_golden(manifest, root):
        shutil.rmtree(root / "golden")
        del manifest["golden"]

    root = _tampered(bundle, tmp_path, edit=drop_golden)
    assert Bundle.load(root).golden is None
    with caplog.at_level("WARNING"):
        code, out, _ = _cli(capsys, "device", "selftest", "--bundle", root)
    assert code == 0 and "self-test not run" in out and "no golden vectors" in caplog.text
    code, out, _ = _cli(capsys, "inspect", root)
    assert code == 0 and "golden     none" in out


def test_systemd_unit_is_a_valid_unit_that_restarts_the_agent(bundle, tmp_path, capsys):
    code, unit, _ = _cli(capsys, "device", "systemd-unit", "--bundle", bundle, "--broker", "mqtt://gw:1883",
                         "--device-id", "cam-07", "--source", "images:/data/my frames", "--threads", "3")
    assert code == 0
    service = dict(line.split("=", 1) for line in unit.splitlines() if "=" in line and not line.startswith("#"))
    assert service["Restart"] == "on-failure" and service["After"] == "network-online.target"  # images: finite
    assert service["RestartPreventExitStatus"] == "2 3 4 5" and service["Environment"] == "OMP_NUM_THREADS=3"
    edgekit = service["ExecStart"].split()[0]
    assert edgekit == str(Path(sys.prefix) / "bin" / "edgekit")
    assert f"--bundle {bundle.resolve()}" in service["ExecStart"]
    assert '--source "images:/data/my frames"' in service["ExecStart"]
    path = tmp_path / "edgekit-agent-cam-07.service"
    path.write_text(unit)
    if shutil.which("systemd-analyze"):
        done = subprocess.run(["systemd-analyze", "verify", str(path)], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0 and not done.stderr.strip(), done.stderr  # warnings count as failures

    code, _, err = _cli(capsys, "device", "systemd-unit", "--bundle", bundle, "--broker", "mqtt://gw:1883",
                        "--device-id", "cam-07", "--user", "pi\nExecStartPre=/bin/evil")
    assert code == 2 and "cannot go into a unit file" in err


def test_the_device_selftest_imports_neither_tensorflow_nor_onnxruntime(bundle):
    probe = ("import sys; from edgekit.cli import main; code = main(['device', 'selftest', '--bundle', %r]); "
             "heavy = [m for m in ('tensorflow', 'keras', 'onnxruntime', 'onnx') if m in sys.modules]; "
             "print(heavy); sys.exit(code or (1 if heavy else 0))" % str(bundle))
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr[-500:]

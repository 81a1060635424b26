"""What the agent says at start on a Pi's first day: the fix for a camera on a bundle without preprocessing,
the codec and ans backend it streams with, and, when its start-up checks refuse the bundle, a retained
``refused`` status the server can read after the agent is gone.

Real bundle, real LiteRT, real Mosquitto. The self-test is made to fail by tampering with the bundle's golden
codes (hashes re-computed with the project's own ``write_manifest``, so only the self-test can notice).
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys

import numpy as np
import pytest

from edgekit.bundle.manifest import MANIFEST_NAME, write_manifest
from edgekit.device.agent import Agent, AgentConfig
from edgekit.errors import ParityError
from edgekit.mqtt.topics import topic
from edgekit.mqtt.urls import parse_broker_url

UNREACHABLE = "mqtt://127.0.0.1:9"


def tampered(bundle, tmp_path, edit):
    """A copy of ``bundle`` changed by ``edit(manifest, root)``, every hash and the bundle id re-computed."""
    root = tmp_path / "tampered"
    shutil.copytree(bundle, root)
    manifest = json.loads((root / MANIFEST_NAME).read_text())
    edit(manifest, root)
    write_manifest(root, manifest)
    return root


def shifted_golden_codes(manifest, root):
    """Every golden device code moved by 7 int8 levels: far beyond the self-test's tolerance of 1."""
    path = root / manifest["golden"]["path"]
    with np.load(path) as data:
        arrays = {name: data[name] for name in data.files}
    for entry in manifest["golden"]["device"]:
        codes = arrays[entry["codes"]].astype(np.int16)
        arrays[entry["codes"]] = np.where(codes > 0, codes - 7, codes + 7).astype(np.int8)
    np.savez(path, **arrays)


def failing_parity(manifest, _root):
    manifest["parity"].update(passed=False, worst_agreement=0.5)


def agent_config(bundle, url, tmp_path, **extra) -> AgentConfig:
    return AgentConfig(bundle=bundle, broker=parse_broker_url(url), device_id=extra.pop("device_id", "cam-07"),
                       source=extra.pop("source", str(bundle.parent / "model" / "test.npz")), fps=0,
                       spool=tmp_path / "spool.sqlite", linger_s=0, **extra)


def test_a_camera_on_a_bundle_without_preprocessing_names_the_convert_options(bundle, tmp_path):
    done = subprocess.run([sys.executable, "-m", "edgekit.cli", "device", "run", "--bundle", str(bundle), "--broker",
                           UNREACHABLE, "--device-id", "cam-07", "--source", "camera:0",
                           "--spool", str(tmp_path / "spool.sqlite")], capture_output=True, text=True, timeout=120)
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert done.returncode == 2 and "Traceback" not in done.stderr
    (line,) = errors
    assert line.startswith("error: source 'camera:0' needs image preprocessing but the bundle has none — "
                           "record it at convert time: edgekit convert ... --image-size HxW")
    assert all(option in line for option in ("--color", "--scale", "--mean", "--std", "--layout"))


@pytest.mark.parametrize("blocked, expected", [(False, "codec ans (constriction backend)"),
                                               (True, "codec ans (portable backend)")])
def test_the_agent_logs_its_codec_and_ans_backend(bundle, stream, tmp_path, caplog, monkeypatch, blocked, expected):
    if blocked:  # as on a Raspberry Pi, where constriction has no wheel
        monkeypatch.setitem(sys.modules, "constriction", None)
    with caplog.at_level(logging.INFO, logger="edgekit.device.agent"):
        agent = Agent(agent_config(bundle, UNREACHABLE, tmp_path, source=str(stream(2)), codec="ans"))
    agent.spool.close()
    (start,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("agent cam-07: bundle")]
    assert expected in start


def test_a_device_the_selftest_refuses_leaves_a_retained_refused_status(bundle, stream, mosquitto, collector,
                                                                        tmp_path):
    root = tampered(bundle, tmp_path, shifted_golden_codes)
    done = subprocess.run([sys.executable, "-m", "edgekit.cli", "device", "run", "--bundle", str(root), "--broker",
                           mosquitto.url, "--device-id", "cam-r", "--source", str(stream(3)),
                           "--spool", str(tmp_path / "spool.sqlite")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 4, done.stderr[-2000:]
    (error,) = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert "device self-test failed" in error

    # Subscribed after the agent has exited: only a retained status can arrive.
    (message,) = collector(mosquitto.url, topic("cam-r", "status")).wait_for(1)
    name, payload, retained = message
    status = json.loads(payload)
    assert retained and status["state"] == "refused" and status["device"] == "cam-r"
    assert status["exit_code"] == 4 and error == f"error: {status['reason']}"
    assert status["selftest"]["passed"] is False and status["selftest"]["metrics"]["max_level_diff"] == 7
    assert status["selftest"]["cpu"]["arch"]


def test_a_failing_parity_refusal_is_published_too(bundle, mosquitto, collector, tmp_path):
    root = tampered(bundle, tmp_path, failing_parity)
    with pytest.raises(ParityError) as refused:
        Agent(agent_config(root, mosquitto.url, tmp_path, device_id="cam-p"))
    (message,) = collector(mosquitto.url, topic("cam-p", "status")).wait_for(1)
    status = json.loads(message[1])
    assert message[2] and status["state"] == "refused" and status["exit_code"] == 3
    assert status["reason"] == str(refused.value) and "failed its parity check at convert time" in status["reason"]


def test_an_unreachable_broker_does_not_keep_a_refused_agent_from_exiting(bundle, tmp_path, caplog):
    root = tampered(bundle, tmp_path, failing_parity)
    with caplog.at_level(logging.WARNING, logger="edgekit.device.agent"), pytest.raises(ParityError):
        Agent(agent_config(root, UNREACHABLE, tmp_path))
    assert "did not take the refused status" in caplog.text

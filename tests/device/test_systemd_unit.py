"""``edgekit device systemd-unit`` on a Pi's first day: the unit takes the agent's options, stops on a
configuration error instead of restarting it every 5 s, replays no finite source, and warns when the agent's
user cannot reach its files.

The unit is checked with ``systemd-analyze verify`` where it exists, and its ExecStart is run as the agent's
real command line against a real Mosquitto: the options it passes on are the ones ``device run`` takes.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess

import pytest

from edgekit.device.commands import device_group

BROKER = "mqtt://gw:1883"


@pytest.fixture
def run(cli_runner):
    from edgekit.auth.commands import keys_group

    return cli_runner(device_group, keys_group)


def service(unit: str) -> dict[str, str]:
    """The unit's ``key=value`` lines (the last of a repeated key)."""
    return dict(line.split("=", 1) for line in unit.splitlines() if "=" in line and not line.startswith("#"))


def verify(unit: str, path) -> None:
    """``systemd-analyze verify``, warnings included, where systemd is installed."""
    path.write_text(unit)
    if shutil.which("systemd-analyze"):
        done = subprocess.run(["systemd-analyze", "verify", str(path)], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0 and not done.stderr.strip(), done.stderr


def test_the_unit_passes_on_codec_runtime_frame_key_and_spool_options(run, bundle, stream, mosquitto, tmp_path,
                                                                     monkeypatch):
    assert run("keys", "add", "cam-07", "--store", tmp_path / "store", "--out", tmp_path / "cam-07.key")[0] == 0
    monkeypatch.chdir(tmp_path)  # relative paths are made absolute: systemd runs the agent from /
    code, unit, err = run("device", "systemd-unit", "--bundle", bundle, "--broker", BROKER, "--device-id", "cam-07",
                          "--source", f"npz:{stream(4)}", "--codec", "zstd", "--runtime", "litert",
                          "--frame-key", "cam-07.key", "--spool", "spool/cam-07.sqlite", "--spool-max-mb", "64",
                          "--spool-policy", "drop-newest")
    assert code == 0 and err == "", err
    unit_args = service(unit)
    exec_start = unit_args["ExecStart"]
    for given in ("--codec zstd", "--runtime litert", f"--frame-key {tmp_path / 'cam-07.key'}",
                  f"--spool {tmp_path / 'spool' / 'cam-07.sqlite'}", "--spool-max-mb 64", "--spool-policy drop-newest"):
        assert given in exec_start
    assert "--spool-max-age" not in exec_start  # not given: the agent's own default applies
    assert unit_args["Restart"] == "on-failure"  # a finite source sent to the end is not replayed
    assert unit_args["RestartPreventExitStatus"] == "2 3 4 5"  # usage, parity, self-test, broker refused
    verify(unit, tmp_path / "edgekit-agent-cam-07.service")

    # The unit's command line is one `edgekit device run` takes: run it, against a real broker.
    (tmp_path / "spool").mkdir()
    args = shlex.split(exec_start)[1:]
    args[args.index("--broker") + 1] = mosquitto.url
    code, out, err = run(*args, "--fps", "0", "--linger", "0")
    assert code == 0, err
    assert "device cam-07: captured 4" in out and "codec zstd" in err
    assert (tmp_path / "spool" / "cam-07.sqlite").is_file()


def test_a_camera_unit_restarts_after_a_clean_exit_and_warns_of_missing_preprocessing(run, bundle, tmp_path):
    code, unit, err = run("device", "systemd-unit", "--bundle", bundle, "--broker", BROKER, "--device-id", "cam-07")
    assert code == 0
    assert service(unit)["Restart"] == "always" and service(unit)["RestartPreventExitStatus"] == "2 3 4 5"
    assert "--source camera:0" in service(unit)["ExecStart"]
    (line,) = err.strip().splitlines()  # the session's bundle was converted from arrays: no preprocessing
    assert line.startswith("warning: the agent will stop at start: source 'camera:0' needs image preprocessing")
    assert "edgekit convert ... --image-size HxW" in line
    verify(unit, tmp_path / "edgekit-agent-cam-07.service")


def test_paths_under_root_are_warned_of_for_another_user(run, bundle, stream):
    args = ("device", "systemd-unit", "--bundle", bundle, "--broker", BROKER, "--device-id", "cam-07",
            "--source", f"npz:{stream(4)}", "--spool", "/root/edgekit/spool-cam-07.sqlite")
    code, unit, err = run(*args, "--user", "pi")
    assert code == 0 and "User=pi" in unit
    (line,) = err.strip().splitlines()
    assert line == ("warning: the agent runs as pi but /root/edgekit/spool-cam-07.sqlite is under /root, which only "
                    "root can enter: put the virtualenv, the bundle and the agent's files under ~pi, or pass "
                    "--user root")
    code, unit, err = run(*args, "--user", "root")
    assert code == 0 and err == ""


def test_options_the_agent_would_refuse_write_no_unit(run, bundle, stream, tmp_path):
    base = ("device", "systemd-unit", "--bundle", bundle, "--broker", BROKER, "--device-id", "cam-07",
            "--source", f"npz:{stream(4)}")
    code, unit, err = run(*base, "--codec", "jpeg")
    assert code == 2 and unit == "" and "has no codec 'jpeg'" in err
    assert run("keys", "add", "cam-08", "--store", tmp_path / "store", "--out", tmp_path / "cam-08.key")[0] == 0
    code, unit, err = run(*base, "--frame-key", tmp_path / "cam-08.key")
    assert code == 2 and unit == "" and "is for device 'cam-08', not 'cam-07'" in err
    code, unit, err = run(*base[:-1], "frames-somewhere")
    assert code == 2 and unit == "" and "cannot tell what kind of source 'frames-somewhere' is" in err

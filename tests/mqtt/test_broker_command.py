"""``edgekit broker`` stops its Mosquitto on SIGTERM, and on SIGINT even when a script started it with ``&``."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edgekit.mqtt.broker import find_mosquitto, wait_for_port

CLI = f"{sys.executable} -m edgekit.cli broker --port 0 --dir"


def _mosquittos_using(config: Path) -> list[int]:
    """Pids of the Mosquitto processes running with ``config`` (Linux /proc)."""
    pids = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        if str(config).encode() in args and any(a.endswith(b"mosquitto") for a in args):
            pids.append(int(cmdline.parent.name))
    return pids


def _started(shell: subprocess.Popen, workdir: Path) -> tuple[int, int]:
    """The broker's (edgekit pid, port) once it listens: the shell prints ``$!``, then edgekit its URL."""
    pid = int(shell.stdout.readline())
    line = shell.stdout.readline()
    port = int(re.search(r"127\.0\.0\.1:(\d+)", line).group(1))
    assert wait_for_port("127.0.0.1", port, 15), line
    assert _mosquittos_using(workdir / "mosquitto.conf"), "no Mosquitto child"
    return pid, port


def _gone(pid: int, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        if Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z":  # exited, not yet reaped by the shell
            return True
        time.sleep(0.05)
    return not Path(f"/proc/{pid}").exists()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_the_mosquitto_child_even_as_a_background_job_of_a_script(tmp_path, sig):
    if find_mosquitto() is None:
        pytest.fail("Mosquitto is not installed: apt-get install mosquitto")
    # A non-interactive shell starts '&' jobs with SIGINT ignored: the case a plain Ctrl-C handler misses.
    script = f"{CLI} {tmp_path} & echo $!; wait"
    shell = subprocess.Popen(["sh", "-c", script], stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        pid, port = _started(shell, tmp_path)
        os.kill(pid, sig)
        assert _gone(pid), f"edgekit broker ignored {sig.name}"
        assert not _mosquittos_using(tmp_path / "mosquitto.conf"), "Mosquitto was left running"
        assert not wait_for_port("127.0.0.1", port, 0.5), "the port is still taken"
        assert shell.wait(15) == 0
    finally:
        for child in _mosquittos_using(tmp_path / "mosquitto.conf"):
            os.kill(child, signal.SIGKILL)
        if shell.poll() is None:
            os.killpg(shell.pid, signal.SIGKILL)


def test_a_scripts_background_job_starts_with_sigint_ignored():
    """The premise of the SIGINT case above: ``sh -c 'cmd &'`` gives cmd SIGINT ignored."""
    out = subprocess.run(["sh", "-c", "sleep 5 & pid=$!; sleep 0.5; grep SigIgn /proc/$pid/status; kill $pid"],
                         capture_output=True, text=True, timeout=10).stdout
    assert int(out.split()[1], 16) & (1 << (signal.SIGINT - 1))

"""Start the roles as a user would: ``edgekit server run`` and ``edgekit device run`` as real subprocesses of
the CLI, with their logs in files; and count what reached the results database.

Shared by ``edgekit demo``, the pipeline tests and the benchmarks. Only the standard library at module level.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from edgekit.mqtt.broker import stop_process


class RoleProcess:
    """A ``python -m edgekit.cli ...`` subprocess with its log in a file, stopped in ``finally`` by callers."""

    def __init__(self, args: list[str], log_path: Path):
        self.args = args
        self.log_path = log_path
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as log:
            self.process = subprocess.Popen([sys.executable, "-m", "edgekit.cli", *args], stdout=subprocess.PIPE,
                                            stderr=log, stdin=subprocess.DEVNULL, env=_child_env())

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_for_log(self, needle: str, timeout: float = 60.0) -> None:
        """Block until ``needle`` appears in the log; RuntimeError (with the log) if the process dies first."""
        deadline = time.monotonic() + timeout
        while needle not in self.log_text():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{' '.join(self.args[:2])} never logged {needle!r}; log:\n{self.log_text()}")
            time.sleep(0.05)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        return stop_process(self.process, sig, timeout)

    def final_json(self, timeout: float = 120.0) -> dict:
        """Wait for exit and return the JSON summary a ``--json`` role prints on stdout."""
        out, _ = self.process.communicate(timeout=timeout)
        lines = out.decode().strip().splitlines()
        if self.process.returncode != 0 or not lines:
            raise RuntimeError(f"{' '.join(self.args[:2])} exited {self.process.returncode}; log:\n{self.log_text()}")
        return json.loads(lines[-1])


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def start_server(bundles: list[Path], broker: str, db: Path, log_path: Path, *extra: str,
                 ready_timeout: float = 60.0) -> RoleProcess:
    """Start ``edgekit server run`` and wait until its subscription is granted (frames sent later are kept)."""
    args = ["server", "run", *[a for b in bundles for a in ("--bundle", str(b))], "--broker", broker, "--db", str(db),
            "--json", *extra]
    role = RoleProcess(args, log_path)
    role.wait_for_log("ready: subscribed", ready_timeout)
    return role


def start_device(bundle: Path, broker: str, device_id: str, source: Path | str, spool: Path, log_path: Path,
                 *extra: str) -> RoleProcess:
    """Start ``edgekit device run`` with JSON logs (its final counters come back via :meth:`final_json`)."""
    args = ["device", "run", "--bundle", str(bundle), "--broker", broker, "--device-id", device_id,
            "--source", str(source), "--spool", str(spool), "--json", *extra]
    return RoleProcess(args, log_path)


def count_results(db: Path, device: str | None = None) -> int:
    """Rows in the results table (0 while the receiver has not created it yet)."""
    if not Path(db).exists():
        return 0
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10.0)
    try:
        sql, args = ("SELECT COUNT(*) FROM results WHERE device = ?", (device,)) if device else \
            ("SELECT COUNT(*) FROM results", ())
        return con.execute(sql, args).fetchone()[0]
    except sqlite3.OperationalError:
        return 0
    finally:
        con.close()

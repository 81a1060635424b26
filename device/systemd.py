"""A systemd unit that runs the device agent at boot (``edgekit device systemd-unit``).

The unit starts after the network is up and restarts the agent after a crash (frames wait in the spool), but
never after a configuration error, which a restart cannot fix: those exits (a usage or bundle error, a
failing-parity bundle, a failed self-test, a broker that refuses the device's credentials) stop the unit,
so ``systemctl status`` shows the code and the journal the one-line reason. A camera never ends by itself,
so its agent comes back even after a clean exit (a camera that stopped delivering frames); a finite source
(a file, a folder, a video) that was sent to the end stays stopped instead of being replayed.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from edgekit.errors import BrokerRefusedError, ParityError, UsageError
from edgekit.selftest import SelfTestError

__all__ = ["agent_command", "render_unit", "quote", "under_root", "NO_RESTART"]

# The agent's exit codes a restart cannot fix (edgekit/errors.py, edgekit/selftest.py), and why.
NO_RESTART = {UsageError.exit_code: "a usage or bundle error", ParityError.exit_code: "a failing-parity bundle",
              SelfTestError.exit_code: "a failed self-test",
              BrokerRefusedError.exit_code: "the broker refused the TLS setup or credentials"}


def quote(arg: str) -> str:
    """One ExecStart argument: ``%`` and ``$`` escaped (systemd expands them), quoted when it has spaces."""
    arg = arg.replace("%", "%%").replace("$", "$$")
    if any(c.isspace() or c in "\"'\\;" for c in arg):
        return '"' + arg.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return arg


def agent_command(edgekit: Path, bundle: Path, broker: str, device_id: str, source: str, fps: float, threads: int,
                  broker_args: tuple[str, ...] = (), trust_args: tuple[str, ...] = (),
                  agent_args: tuple[str, ...] = ()) -> list[str]:
    """The agent's command line. Paths must be absolute: systemd runs the agent from ``/``. ``broker_args``: the
    TLS and credential options (file paths only: the unit file is world-readable); ``trust_args``: the
    bundle-signature options (``--trust-key``, ``--require-signature``); ``agent_args``: the other agent
    options given (``--codec``, ``--runtime``, ``--frame-key``, the spool's)."""
    return [str(edgekit), "device", "run", "--bundle", str(bundle), *trust_args, "--broker", broker, *broker_args,
            "--device-id", device_id, "--source", source, "--fps", f"{fps:g}", "--threads", str(threads),
            *agent_args]


def under_root(command: list[str], user: str) -> list[str]:
    """The paths in ``command`` inside ``/root``, which only root may enter: the agent cannot reach them as
    ``user`` (empty when ``user`` is root)."""
    if user == "root":
        return []
    root = PurePosixPath("/root")
    paths = [arg if arg.startswith("/") else arg.partition(":")[2] for arg in command]  # npz:/root/x.npz too
    return [path for path in paths if path.startswith("/") and root in PurePosixPath(path).parents]


def render_unit(command: list[str], device_id: str, user: str, threads: int, endless: bool) -> str:
    """The unit file's text for the agent ``command`` (:func:`agent_command`); ``endless``: its source is a
    camera, restarted even after a clean exit."""
    name = f"edgekit-agent-{device_id}"
    codes = " ".join(str(code) for code in sorted(NO_RESTART))
    why = "; ".join(f"{code}: {reason}" for code, reason in sorted(NO_RESTART.items()))
    restart = ("always\n# A camera never ends by itself: a clean exit (no more frames) is restarted too." if endless
               else "on-failure\n# A finite source sent to the end exits 0 and stays stopped (not replayed).")
    return f"""\
# The edgekit device agent for {device_id}, written by `edgekit device systemd-unit` (see docs/device.md).
# Install:  sudo tee /etc/systemd/system/{name}.service < this-file
#           sudo systemctl daemon-reload && sudo systemctl enable --now {name}
# Logs:     journalctl -u {name} -f
[Unit]
Description=edgekit device agent ({device_id})
Wants=network-online.target
After=network-online.target

[Service]
Type=simple
User={user}
SupplementaryGroups=video
Environment=PYTHONUNBUFFERED=1
Environment=OMP_NUM_THREADS={threads}
ExecStart={" ".join(quote(a) for a in command)}
Restart={restart}
RestartSec=5
# Configuration errors, which a restart cannot fix ({why}): the unit stops.
RestartPreventExitStatus={codes}

[Install]
WantedBy=multi-user.target
"""

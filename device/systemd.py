"""A systemd unit that runs the device agent at boot (``edgekit device systemd-unit``).

The unit starts after the network is up, restarts the agent whenever it stops (a crash, a reboot of the
broker host: frames wait in the spool), except after the two exits a restart cannot fix: 3 (the bundle
failed its parity check at convert time) and 4 (the self-test failed on this device).
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["render_unit", "quote"]


def quote(arg: str) -> str:
    """One ExecStart argument: ``%`` and ``$`` escaped (systemd expands them), quoted when it has spaces."""
    arg = arg.replace("%", "%%").replace("$", "$$")
    if any(c.isspace() or c in "\"'\\;" for c in arg):
        return '"' + arg.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return arg


def render_unit(edgekit: Path, bundle: Path, broker: str, device_id: str, source: str, fps: float, user: str,
                threads: int, broker_args: tuple[str, ...] = ()) -> str:
    """The unit file's text. Paths must be absolute: systemd runs the agent from ``/``. ``broker_args``: the
    TLS and credential options (file paths only: the unit file is world-readable)."""
    args = [str(edgekit), "device", "run", "--bundle", str(bundle), "--broker", broker, *broker_args,
            "--device-id", device_id,
            "--source", source, "--fps", f"{fps:g}", "--threads", str(threads)]
    name = f"edgekit-agent-{device_id}"
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
ExecStart={" ".join(quote(a) for a in args)}
Restart=always
RestartSec=5
# 3: the bundle failed parity at convert time; 4: the self-test failed here. A restart fixes neither.
RestartPreventExitStatus=3 4

[Install]
WantedBy=multi-user.target
"""

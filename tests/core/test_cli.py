"""The CLI surface: every command has help with an example, and roles import only what they need."""

from __future__ import annotations

import subprocess
import sys

import click
import pytest

from edgekit.cli import _register, cli, main


def _walk(group: click.Group, prefix: tuple[str, ...] = ()):
    for name, command in group.commands.items():
        yield (*prefix, name), command
        if isinstance(command, click.Group):
            yield from _walk(command, (*prefix, name))


_register()
COMMANDS = list(_walk(cli))


def test_the_expected_commands_exist():
    names = {" ".join(path) for path, _ in COMMANDS}
    assert {"convert", "inspect", "device run", "server run", "server stats", "broker", "demo"} <= names


@pytest.mark.parametrize("path,command", COMMANDS, ids=[" ".join(p) for p, _ in COMMANDS])
def test_every_command_has_help_with_an_example(path, command, capsys):
    assert command.help, f"edgekit {' '.join(path)} has no help text"
    if not isinstance(command, click.Group):
        assert "Example" in command.help, f"edgekit {' '.join(path)} --help shows no Example block"
    assert main([*path, "--help"]) == 0
    assert "Usage: edgekit" in capsys.readouterr().out


@pytest.mark.parametrize("argv", [["device", "run", "--help"], ["server", "run", "--help"], ["inspect", "--help"]])
def test_device_and_server_commands_do_not_import_tensorflow(argv):
    probe = (
        "import sys; from edgekit.cli import main; main(%r); "
        "heavy = [m for m in ('tensorflow', 'keras', 'onnx', 'tf2onnx') if m in sys.modules]; "
        "sys.exit(1 if heavy else 0)" % (argv,)
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"edgekit {' '.join(argv)} imported a heavy module: {done.stderr[-500:]}"


def test_a_user_mistake_is_one_line_without_traceback(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "edgekit.cli", "inspect", str(tmp_path / "missing-bundle")],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), done.stderr

"""tools/check_wheels.py (run by ``make wheels-aarch64``): what it resolves, and that it fails on constriction.

The failure test asks PyPI (as ``make test`` does for the check itself): constriction, the dependency that
broke ``pip install 'edgekit[device]'`` on a Raspberry Pi, must fail the check with one line naming it.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

from packaging.requirements import Requirement

SCRIPT = Path(__file__).resolve().parents[2] / "tools" / "check_wheels.py"


def load_tool():
    """The script as a module (it is not part of the package)."""
    spec = importlib.util.spec_from_file_location("check_wheels", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_device_extra_and_core_are_checked_with_aarch64_markers():
    tool = load_tool()
    names = {r.name for r in tool.requirements(["device"], [])}
    assert {"numpy", "zstandard", "ai-edge-litert", "paho-mqtt"} <= names
    assert "constriction" not in names  # optional since issue 8
    x86_only = Requirement("constriction>=0.4; platform_machine == 'x86_64'")
    assert tool.for_target([x86_only, Requirement("numpy>=1.24")], "3.11") == ["numpy>=1.24"]
    assert "constriction" in {r.name for r in tool.requirements(["all"], [])}  # self-references expanded


def test_a_dependency_without_an_aarch64_wheel_fails_with_one_line_naming_it(tmp_path):
    done = subprocess.run([sys.executable, str(SCRIPT), "--also", "constriction>=0.4", "--dest", str(tmp_path)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: constriction>=0.4 has no binary wheel for Linux aarch64")

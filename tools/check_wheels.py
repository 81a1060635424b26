"""Check that edgekit's core and ``device`` dependencies install from binary wheels on a Raspberry Pi.

A dependency without a Linux ARM wheel (constriction was one) makes ``pip install 'edgekit-split[device]'`` fail
on a Pi without a compiler toolchain, while every test on x86 passes. This resolves the requirements listed
in ``pyproject.toml`` with ``pip download --only-binary=:all:`` for manylinux aarch64 up to glibc 2.36
(Raspberry Pi OS bookworm) and each ``--python`` version, and fails with one line naming a requirement that
has no wheel there. Environment markers of the listed requirements are evaluated for that target here (pip
evaluates them for the machine it runs on). Wheels stay in ``--dest``: a second run downloads nothing.

    python tools/check_wheels.py --extra device --python 3.11 --python 3.12 --dest .venv/wheels-aarch64
    python tools/check_wheels.py --also 'constriction>=0.4'   # shows the failure this check exists for
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tomllib
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
GLIBC_MINORS = range(17, 37)  # manylinux_2_17 (= manylinux2014) .. manylinux_2_36 (Debian bookworm)


def requirements(extras: list[str], also: list[str]) -> list[Requirement]:
    """The core dependencies, those of ``extras`` (self-references, ``edgekit-split[...]``, expanded) and ``also``."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    itself = canonicalize_name(project["name"])
    optional = project.get("optional-dependencies", {})
    reqs = [Requirement(r) for r in project["dependencies"] + also]
    pending, seen = list(extras), set()
    while pending:
        extra = pending.pop()
        if extra in seen:
            continue
        seen.add(extra)
        for line in optional[extra]:
            req = Requirement(line)
            if canonicalize_name(req.name) == itself:
                pending.extend(req.extras)
            else:
                reqs.append(req)
    return reqs


def for_target(reqs: list[Requirement], python: str) -> list[str]:
    """Requirements that apply on Linux aarch64 / CPython ``python``, as pip arguments without markers."""
    env = default_environment() | {"platform_machine": "aarch64", "sys_platform": "linux", "os_name": "posix",
                                   "platform_system": "Linux", "implementation_name": "cpython",
                                   "platform_python_implementation": "CPython", "python_version": python,
                                   "python_full_version": f"{python}.0"}
    kept = [r for r in reqs if r.marker is None or r.marker.evaluate(env | {"extra": ""})]
    return [f"{r.name}{'[' + ','.join(sorted(r.extras)) + ']' if r.extras else ''}{r.specifier}" for r in kept]


def download(reqs: list[str], python: str, dest: Path) -> str | None:
    """``None`` when every requirement resolves to aarch64 wheels, else the one-line reason."""
    platforms = [f"--platform=manylinux_2_{m}_aarch64" for m in GLIBC_MINORS] + ["--platform=manylinux2014_aarch64"]
    cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check", "--only-binary=:all:",
           *platforms, f"--python-version={python}", "--implementation=cp", f"--dest={dest}", *reqs]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode == 0:
        return None
    missing = re.search(r"No matching distribution found for (\S+)", done.stderr)
    if missing:
        return f"{missing.group(1)} has no binary wheel for Linux aarch64 / cp{python.replace('.', '')}"
    errors = [line for line in done.stderr.splitlines() if line.startswith("ERROR")] or ["pip download failed"]
    return errors[-1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--extra", action="append", default=[], help="optional-dependency set to include")
    parser.add_argument("--python", action="append", default=[], help="CPython version (default: 3.11)")
    parser.add_argument("--also", action="append", default=[], help="one more requirement to check")
    parser.add_argument("--dest", type=Path, default=Path.home() / ".cache" / "edgekit" / "wheels-aarch64")
    args = parser.parse_args()
    reqs = requirements(args.extra, args.also)
    for python in args.python or ["3.11"]:
        pip_reqs = for_target(reqs, python)
        problem = download(pip_reqs, python, args.dest / f"cp{python.replace('.', '')}")
        if problem:
            print(f"error: {problem}: make it optional (an extra or a platform marker) or find a wheel",
                  file=sys.stderr)
            return 1
        print(f"aarch64 / cp{python.replace('.', '')}: {len(pip_reqs)} requirements ({', '.join(pip_reqs)}) "
              "resolve to binary wheels")
    return 0


if __name__ == "__main__":
    sys.exit(main())

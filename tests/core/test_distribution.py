"""The wheel a Raspberry Pi installs (``make dist``): named edgekit-split, carrying every package and data file.

PyPI's ``edgekit`` is an unrelated project, so the distribution is ``edgekit-split`` while the import package and
the command stay ``edgekit`` (docs/device.md, Install on a Pi). The wheel is built offline from a copy of the
sources (``pip wheel --no-deps --no-build-isolation``, the venv's setuptools), so nothing stale from a ``build/``
folder in the working tree can hide a missing package.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("edgekit", "edgekit.bundle", "edgekit.wire", "edgekit.wire.codecs", "edgekit.mqtt", "edgekit.auth",
            "edgekit.delivery", "edgekit.text", "edgekit.server", "edgekit.device", "edgekit.converters",
            "edgekit.reencode", "edgekit.demo")
DATA = ("edgekit/bundle/schemas/manifest.schema.json", "edgekit/converters/profiles/rpi.json",
        "edgekit/converters/profiles/README.md")


@pytest.fixture(scope="module")
def project():
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


@pytest.fixture(scope="module")
def wheel(project, tmp_path_factory) -> zipfile.ZipFile:
    """The wheel built from a copy of pyproject.toml, README.md and the package folders, without the network."""
    source = tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for folder in set(project["tool"]["setuptools"]["package-dir"].values()):
        shutil.copytree(ROOT / folder, source / folder, ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path_factory.mktemp("wheel")
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet",
                           str(source), "-w", str(out)], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PIP_NO_INDEX": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    (built,) = out.glob("*.whl")
    with zipfile.ZipFile(built) as archive:
        yield archive


def _source_modules(project) -> set[str]:
    """Every .py file of the source folders, as its path inside the wheel (``edgekit/device/agent.py``)."""
    modules = set()
    for package, folder in project["tool"]["setuptools"]["package-dir"].items():
        for path in (ROOT / folder).rglob("*.py"):
            if "__pycache__" not in path.parts:
                modules.add("/".join([*package.split("."), *path.relative_to(ROOT / folder).parts]))
    return modules


def test_the_wheel_is_edgekit_split_with_the_edgekit_command(project, wheel):
    version = project["project"]["version"]
    assert Path(wheel.filename).name == f"edgekit_split-{version}-py3-none-any.whl"
    info = f"edgekit_split-{version}.dist-info"
    metadata = wheel.read(f"{info}/METADATA").decode()
    assert "Name: edgekit-split\n" in metadata
    assert {"Provides-Extra: device", "Provides-Extra: server", "Provides-Extra: convert"} <= set(metadata.splitlines())
    assert "Requires-Dist: edgekit-split[convert,device,server]; extra == \"all\"" in metadata
    assert "edgekit = edgekit.cli:main" in wheel.read(f"{info}/entry_points.txt").decode()


def test_the_wheel_carries_every_package_module_and_data_file(project, wheel):
    names = set(wheel.namelist())
    assert {package.replace(".", "/") + "/__init__.py" for package in PACKAGES} <= names
    assert set(DATA) <= names
    profiles = {f"edgekit/converters/profiles/{p.name}" for p in (ROOT / "converters" / "profiles").glob("*.json")}
    assert len(profiles) >= 5 and profiles <= names
    missing = _source_modules(project) - names  # a new sub-package not listed in [tool.setuptools] packages
    assert not missing, f"modules left out of the wheel: {sorted(missing)}"

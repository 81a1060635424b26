"""The layout's rules, checked on the source: which room may import which, and no import circle.

docs/architecture.md draws the same map. Every import counts, also those inside functions (they are how
heavy dependencies stay lazy, but they are dependencies all the same).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
#: Where each package's source lives (pyproject's package-dir).
FOLDERS = {"edgekit": "edgekit", "edgekit.converters": "converters", "edgekit.reencode": "reencode",
           "edgekit.device": "device", "edgekit.server": "server", "edgekit.demo": "demo"}
BASE = ("edgekit.errors", "edgekit.logs", "edgekit.cpu", "edgekit.preprocess", "edgekit.latency", "edgekit.metrics")
#: room -> the rooms it may import (besides itself). The core's contracts sit below the roles; roles never
#: import each other, except that the workstation's reencode builds on converters (load, cut, parity).
MAY_IMPORT = {
    "base": set(),
    "bundle": {"base"},
    "wire": {"base", "bundle"},
    "mqtt": {"base"},
    "auth": {"base", "wire", "mqtt"},
    "delivery": {"base"},
    "text": {"base"},
    "runtime": {"base", "bundle", "wire", "text"},
    "converters": {"base", "bundle", "wire", "runtime", "text", "reencode-record"},
    "reencode": {"base", "bundle", "wire", "converters", "reencode-record"},
    "reencode-record": {"base", "bundle", "wire"},
    "device": {"base", "bundle", "wire", "mqtt", "auth", "delivery", "runtime", "text"},
    "server": {"base", "bundle", "wire", "mqtt", "auth", "delivery", "runtime", "text"},
    "demo": {"base", "bundle", "wire", "mqtt", "runtime", "converters"},
    "cli": {"base", "bundle", "wire", "mqtt", "auth", "delivery", "runtime", "text", "converters", "reencode",
            "reencode-record", "device", "server", "demo"},
}
#: What convert reads back from a re-encoded model (the record, the learned prior, the layers Keras must know
#: to load it): a room of its own, so that converters never import the rest of reencode, which imports them.
REENCODE_RECORD = ("edgekit.reencode.for_convert", "edgekit.reencode.metadata", "edgekit.reencode.prior",
                   "edgekit.reencode.layers")


def room(module: str) -> str | None:
    """The room of an edgekit module, None for a module outside edgekit."""
    if module == "edgekit" or not module.startswith("edgekit."):
        return None if module != "edgekit" else "base"
    if module.startswith(BASE):
        return "base"
    if module.startswith(REENCODE_RECORD):
        return "reencode-record"
    if module.startswith(("edgekit.runtime", "edgekit.selftest")):
        return "runtime"
    if module == "edgekit.cli" or module.endswith(".commands"):
        return "cli"  # command modules sit beside their room, but they are the CLI's layer: above every room
    return module.split(".")[1]


def modules() -> dict[str, Path]:
    """Every edgekit module name -> its file."""
    found = {}
    for package, folder in FOLDERS.items():
        for path in (REPO / folder).rglob("*.py"):
            rel = path.relative_to(REPO / folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            name = ".".join([package, *parts])
            if package == "edgekit" and len(parts) and f"edgekit.{parts[0]}" in FOLDERS:
                continue
            found[name] = path
    return found


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The edgekit modules that ``name`` imports anywhere in its file (a package import counts as its
    ``__init__``; ``from package import module`` as that module)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            submodules = {f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in known}
            out |= submodules or {base}
    return {m for m in out if m in known and m != name}


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    found = modules()
    return {name: imports(name, path, set(found)) for name, path in found.items()}


def test_every_module_has_a_room(graph):
    assert {m for m in graph if room(m) not in MAY_IMPORT} == set()


def test_rooms_import_only_what_the_map_allows(graph):
    bad = sorted(f"{m} -> {d}" for m, deps in graph.items() for d in deps
                 if room(d) != room(m) and room(d) not in MAY_IMPORT[room(m)])
    assert bad == []


def test_no_import_circle(graph):
    """Depth-first search for a back edge; a package's ``__init__`` importing its own modules is no circle."""
    state: dict[str, int] = {}
    circles = []

    def visit(m: str, stack: list[str]) -> None:
        state[m] = 1
        for d in sorted(graph[m]):
            if m.startswith(d + "."):
                continue  # a module importing its package (its __init__ runs first anyway)
            if state.get(d) == 1:
                circles.append(" -> ".join(stack[stack.index(d):] + [m, d]) if d in stack else f"{m} -> {d}")
            elif d not in state:
                visit(d, stack + [m])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [])
    assert circles == []


def test_modules_stay_small():
    """A module over ~500 lines usually has two jobs: split it where they part."""
    big = {str(p.relative_to(REPO)): n for p in modules().values() if (n := len(p.read_text().splitlines())) > 500}
    assert big == {}

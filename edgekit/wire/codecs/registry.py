"""The one table of feature codecs: wire id <-> name <-> class.

The id is what a frame's ``codec_id`` byte says, the name is what the manifest and the CLI say. Add a codec
by adding one row here (and its file); an id is never reused for another codec, a decoder rejects an id it
does not list (``UnknownCodec``).

A codec's module is imported only when the codec is used, so a device that lacks one codec's dependency still
runs the others; using that codec is a one-line :class:`CodecUnavailable` naming the package to install.
The table lists codecs from least to most compressing, as a rule (``PREFERENCE``: that order, best first).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from edgekit.wire.codecs.base import ArtifactReader, Codec
from edgekit.errors import UsageError

__all__ = ["CodecEntry", "CodecUnavailable", "CODECS", "BY_ID", "BY_NAME", "PREFERENCE", "entry", "build_codec",
           "runnable", "pick_codec"]


class CodecUnavailable(UsageError):
    """A codec whose Python dependency is not installed on this machine."""


@dataclass(frozen=True)
class CodecEntry:
    """One row: the wire ``codec_id``, the manifest ``name``, where the class lives and what it needs."""

    codec_id: int
    name: str
    module: str
    class_name: str
    requires: str = ""  # the pip requirement that provides the module's third-party import ("" when none)

    @property
    def cls(self) -> type[Codec]:
        """The implementing class, imported now (``CodecUnavailable`` when its dependency is missing)."""
        try:
            module = importlib.import_module(self.module)
        except ModuleNotFoundError as err:
            if err.name is None or err.name.split(".")[0] == "edgekit":
                raise
            raise CodecUnavailable(f"codec {self.name!r} needs the Python package {err.name!r}, not installed here",
                                   f"pip install {self.requires or err.name}, or pick another codec with --codec"
                                   ) from None
        return getattr(module, self.class_name)


CODECS: tuple[CodecEntry, ...] = (
    CodecEntry(0, "raw", "edgekit.wire.codecs.raw", "RawCodec"),
    CodecEntry(1, "zstd", "edgekit.wire.codecs.zstd", "ZstdCodec", "zstandard"),
    CodecEntry(2, "ans", "edgekit.wire.codecs.ans", "AnsCodec"),  # constriction: optional (ans.py)
)

BY_ID: dict[int, CodecEntry] = {e.codec_id: e for e in CODECS}
BY_NAME: dict[str, CodecEntry] = {e.name: e for e in CODECS}
PREFERENCE: tuple[str, ...] = tuple(e.name for e in reversed(CODECS))


def entry(name: str) -> CodecEntry:
    """The row for ``name`` (``ValueError`` listing the known names)."""
    try:
        return BY_NAME[name]
    except KeyError:
        raise ValueError(f"unknown codec {name!r}; known: {', '.join(BY_NAME)}") from None


def build_codec(name: str, params: dict[str, Any], read: ArtifactReader | None) -> Codec:
    """Construct codec ``name`` from its manifest params (artifacts read by bundle path through ``read``)."""
    return entry(name).cls.from_params(params, read)


def runnable(name: str) -> bool:
    """Whether this machine has what codec ``name`` needs (imports its module)."""
    try:
        entry(name).cls
    except CodecUnavailable:
        return False
    return True


def pick_codec(wire: dict[str, Any], requested: str | None = None) -> str:
    """The codec a device encodes with: ``requested`` as is; else the bundle's default if this machine can run
    it, else the most compressing codec the bundle offers that it can run (so a missing optional package
    degrades the frame size, not the device). When none can run: the default, whose build names the fix.
    """
    if requested is not None:
        return requested
    default = wire["default_codec"]
    offered = [name for name in PREFERENCE if name in wire.get("codecs", {})]
    return next((name for name in [default, *offered] if name in BY_NAME and runnable(name)), default)

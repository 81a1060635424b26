"""The one table of feature codecs: wire id <-> name <-> class.

The id is what a frame's ``codec_id`` byte says, the name is what the manifest and the CLI say. Add a codec
by adding one row here (and its file); an id is never reused for another codec, a decoder rejects an id it
does not list (``UnknownCodec``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgekit.codecs.ans import AnsCodec
from edgekit.codecs.base import Codec
from edgekit.codecs.raw import RawCodec
from edgekit.codecs.zstd import ZstdCodec

__all__ = ["CodecEntry", "CODECS", "BY_ID", "BY_NAME", "entry", "build_codec"]


@dataclass(frozen=True)
class CodecEntry:
    """One row: the wire ``codec_id``, the manifest ``name`` and the implementing class."""

    codec_id: int
    name: str
    cls: type[Codec]


CODECS: tuple[CodecEntry, ...] = (
    CodecEntry(0, "raw", RawCodec),
    CodecEntry(1, "zstd", ZstdCodec),
    CodecEntry(2, "ans", AnsCodec),
)

BY_ID: dict[int, CodecEntry] = {e.codec_id: e for e in CODECS}
BY_NAME: dict[str, CodecEntry] = {e.name: e for e in CODECS}


def entry(name: str) -> CodecEntry:
    """The row for ``name`` (``ValueError`` listing the known names)."""
    try:
        return BY_NAME[name]
    except KeyError:
        raise ValueError(f"unknown codec {name!r}; known: {', '.join(BY_NAME)}") from None


def build_codec(name: str, params: dict[str, Any], base_dir: Path | None) -> Codec:
    """Construct codec ``name`` from its manifest params (artifact paths relative to ``base_dir``)."""
    return entry(name).cls.from_params(params, base_dir)

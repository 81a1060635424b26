"""Where a text bundle's inputs come from: one text per line of a file or of stdin, or pairs of texts.

::

    --source FILE.txt | text:FILE | -        one text per line (``-``: stdin, read as lines arrive)
    --source FILE.tsv | pairs:FILE | pairs:-  two tab-separated texts per line, sent as two frames

Each line yields one :class:`TextItem` per frame, and a refused line yields its frames too, marked refused, so
the agent's ``seq`` stays tied to the line: a single text is ``seq = line - 1``; a pair is ``seq = 2 (line - 1)``
and ``+ 1``, and the server pairs them by ``seq // 2`` (docs/server.md, Text bundles). A refused line (empty,
not UTF-8, not two texts in a pairs file) is logged with its number and what fixes it, and sent as nothing:
the agent records its seqs as dropped, so the server's accounting has no hole to report.
Lines are read as bytes and decoded here, so one bad line costs that line only.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from edgekit.device.sources import Source
from edgekit.errors import UsageError

__all__ = ["TextItem", "open_text_source", "text_source_kind"]

log = logging.getLogger(__name__)

TEXT_SOURCE_HELP = "a text bundle streams text: use --source FILE.txt, text:FILE, - (stdin), FILE.tsv or pairs:FILE"
TEXT_SUFFIXES = (".txt", ".text")
PAIR_SUFFIXES = (".tsv",)


@dataclass(frozen=True)
class TextItem:
    """One frame's text and the line it came from; ``refusal`` says why the line is not sent (text is then '')."""

    line: int  # 1-based, as an editor shows it
    text: str
    refusal: str | None = None


def text_source_kind(spec: str) -> tuple[str, str]:
    """``(kind, target)`` of a text ``--source``: kind ``text`` or ``pairs``; a one-line UsageError otherwise."""
    kind, _, rest = spec.partition(":")
    if kind in ("text", "pairs") and rest:
        return kind, rest
    if spec == "-":
        return "text", spec
    suffix = Path(spec).suffix.lower()
    if suffix in TEXT_SUFFIXES:
        return "text", spec
    if suffix in PAIR_SUFFIXES:
        return "pairs", spec
    raise UsageError(f"cannot tell what kind of text source {spec!r} is", TEXT_SOURCE_HELP)


def open_text_source(spec: str) -> Source:
    """Parse ``--source`` for a text bundle and check the file exists (stdin is taken as it comes)."""
    kind, target = text_source_kind(spec)
    if target != "-" and not Path(target).is_file():
        raise UsageError(f"text source {target} not found", TEXT_SOURCE_HELP)
    name = "stdin" if target == "-" else target
    per_line = 2 if kind == "pairs" else 1
    length = None if target == "-" else per_line * _count_lines(Path(target))

    def items() -> Iterator[TextItem]:
        if target == "-":
            yield from _items(sys.stdin.buffer, kind)
            return
        with open(target, "rb") as stream:
            yield from _items(stream, kind)

    return Source(f"{name} ({kind}{'' if length is None else f', {length // per_line} lines'})", length, items)


def _count_lines(path: Path) -> int:
    with open(path, "rb") as stream:
        return sum(1 for _ in stream)


def _items(stream: BinaryIO, kind: str) -> Iterator[TextItem]:
    for number, raw in enumerate(stream, start=1):
        texts, refusal = _parse(raw.rstrip(b"\r\n"), kind)
        if refusal is not None:
            log.warning("line %d refused: %s; nothing sent for it", number, refusal,
                        extra={"event": "refused-line", "line": number, "reason": refusal})
            texts = ("",) * (2 if kind == "pairs" else 1)
        for text in texts:
            yield TextItem(number, text, refusal)


def _parse(raw: bytes, kind: str) -> tuple[tuple[str, ...], str | None]:
    """A line's texts, or why it is refused (with the fix)."""
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        return (), (f"not UTF-8 (byte 0x{raw[err.start]:02x} at offset {err.start}): re-encode the file as UTF-8, "
                    "e.g. iconv -f LATIN1 -t UTF-8")
    if kind == "text":
        return ((line,), None) if line.strip() else ((), "empty: there is nothing to embed (remove empty lines)")
    fields = line.split("\t")
    if len(fields) != 2:
        return (), (f"{len(fields)} tab-separated field(s), a pairs file takes two texts per line "
                    "(TEXT_A<TAB>TEXT_B)")
    if not all(f.strip() for f in fields):
        return (), "an empty text in the pair: there is nothing to embed (give two texts)"
    return tuple(fields), None


"""The text source's line rules, on real files and a real stdin: one frame per text, refused lines marked with
their number and reason (never silently skipped, so seqs stay tied to lines), pairs as two frames."""

from __future__ import annotations

import logging
import subprocess
import sys

import pytest

from edgekit.device.text_source import open_text_source, text_source_kind
from edgekit.errors import UsageError


def _items(path):
    return list(open_text_source(str(path)))


def test_one_text_per_line_and_refusals_keep_their_line(tmp_path, caplog):
    path = tmp_path / "in.txt"
    path.write_bytes(b"A man is playing a flute.\n\n   \n" + "Caf\u00e9 au lait.\r\n".encode() + b"bad \xff byte\n")
    with caplog.at_level(logging.WARNING, logger="edgekit.device.text_source"):
        items = _items(path)
    assert [(i.line, i.text, i.refusal is None) for i in items] == [
        (1, "A man is playing a flute.", True), (2, "", False), (3, "", False), (4, "Caf\u00e9 au lait.", True),
        (5, "", False)]
    assert "empty" in items[1].refusal and "empty" in items[2].refusal
    assert "not UTF-8" in items[4].refusal and "0xff" in items[4].refusal and "iconv" in items[4].refusal
    refused = [r for r in caplog.records if getattr(r, "event", None) == "refused-line"]
    assert [r.line for r in refused] == [2, 3, 5]


def test_pairs_are_two_frames_per_line_also_when_refused(tmp_path):
    path = tmp_path / "pairs.tsv"
    path.write_text("a cat sits\ta cat is sitting\nonly one text\n\tsecond\nx\ty\tz\ndog\tpuppy\n")
    items = _items(path)
    assert len(items) == 10  # seq 2k and 2k+1 belong to line k+1, refused or not
    assert [(i.line, i.text) for i in items[:2]] == [(1, "a cat sits"), (1, "a cat is sitting")]
    assert [i.refusal is not None for i in items[2:8]] == [True] * 6
    assert "1 tab-separated field" in items[2].refusal and "3 tab-separated field" in items[6].refusal
    assert "empty text" in items[4].refusal
    assert [(i.line, i.text) for i in items[8:]] == [(5, "dog"), (5, "puppy")]


def test_kinds_and_bad_sources():
    assert text_source_kind("-") == ("text", "-")
    assert text_source_kind("notes.txt") == ("text", "notes.txt")
    assert text_source_kind("x.tsv") == ("pairs", "x.tsv")
    assert text_source_kind("pairs:-") == ("pairs", "-")
    assert text_source_kind("text:log.csv") == ("text", "log.csv")
    with pytest.raises(UsageError, match="cannot tell what kind of text source 'x.npz'"):
        text_source_kind("x.npz")
    with pytest.raises(UsageError, match="text source missing.txt not found"):
        open_text_source("missing.txt")


def test_stdin_is_read_line_by_line(tmp_path):
    """A real stdin pipe in a child process: items come out as lines arrive, the bad ones refused."""
    script = ("from edgekit.device.text_source import open_text_source\n"
              "for item in open_text_source('-'):\n"
              "    print(item.line, repr(item.text), item.refusal is None, flush=True)\n")
    child = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    child.stdin.write(b"first line\n")
    child.stdin.flush()
    assert child.stdout.readline() == b"1 'first line' True\n"  # before stdin ends
    out, _ = child.communicate(b"\n\xfe\xfe\nlast, no newline", timeout=30)
    assert out.decode().splitlines() == ["2 '' False", "3 '' False", "4 'last, no newline' True"]

"""The device half of a text bundle: a line's text ─► the bundle's tokenizer ─► the int8 encoder ─► the code.

The tokenizer (``text/tokenizer.json`` through :mod:`edgekit.text`, the ``tokenizers`` library) truncates a
text longer than the model's ``max_length`` tokens; that is logged once, with the line, and counted, since a
file of long texts would otherwise log every line. Lines the source refused (empty, not UTF-8) get no code and
no frame. The device model runs through the same runner as an image bundle's.
"""

from __future__ import annotations

import logging

import numpy as np

from edgekit.device.sources import Source
from edgekit.device.text_source import TextItem, open_text_source

__all__ = ["TextDeviceHalf", "open_text_input"]

log = logging.getLogger(__name__)


class TextDeviceHalf:
    """``code(item)``: the int8 code of one :class:`TextItem`, or None when its line is refused."""

    def __init__(self, bundle, runner):
        from edgekit.text import Tokenizer

        self.tokenizer = Tokenizer.from_bundle(bundle)
        self.runner = runner
        self.truncated = 0  # texts cut to max_length so far

    def code(self, item: TextItem) -> np.ndarray | None:
        if item.refusal is not None:  # logged by the source, with its line
            return None
        encoded = self.tokenizer.encode(item.text)
        if encoded.truncated:
            self.truncated += 1
            if self.truncated == 1:
                log.warning("line %d: longer than the model's maximum of %d tokens, truncated to it (said once; "
                            "the final stats count every truncated line)", item.line, self.tokenizer.max_length,
                            extra={"event": "truncated", "line": item.line, "max_length": self.tokenizer.max_length})
        return self.runner.run(encoded.ids)[0]


def open_text_input(spec: str, bundle, runner) -> tuple[Source, TextDeviceHalf]:
    """The text source of ``--source`` and the device half that codes its items."""
    return open_text_source(spec), TextDeviceHalf(bundle, runner)

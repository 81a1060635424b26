"""Text to token ids with the Hugging Face ``tokenizers`` library, truncated to the model's maximum length.

The ids are what a text bundle's device model and float encoder take (``input_ids``, int64): special
tokens added, truncated to ``max_length``, batches right-padded with ``pad_id`` (the models derive their
attention mask from it and drop all-pad columns, so padding never changes an embedding).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from edgekit.errors import UsageError

__all__ = ["Tokenizer", "Encoded", "EncodedBatch", "EmptyTextError"]


class EmptyTextError(UsageError):
    """An empty or whitespace-only text: there is nothing to embed, so it is refused, never sent."""


@dataclass(frozen=True)
class Encoded:
    """One text: ``ids`` int64 (1, S); ``truncated`` when tokens beyond ``max_length`` were dropped."""

    ids: np.ndarray
    truncated: bool


@dataclass(frozen=True)
class EncodedBatch:
    """Texts right-padded to the longest: ``ids`` int64 (N, S_max), ``lengths`` (N,), ``truncated`` (N,) bool."""

    ids: np.ndarray
    lengths: np.ndarray
    truncated: np.ndarray


class Tokenizer:
    """A ``tokenizers.Tokenizer`` set to truncate at ``max_length`` and never pad by itself.

    A ``tokenizer.json`` often carries the padding and truncation its training used (all-MiniLM-L6-v2's:
    pad and cut at 128); the bundle's ``max_length`` is what the model was converted and checked with.
    """

    def __init__(self, tokenizer: Any, max_length: int, pad_id: int):
        tokenizer.no_padding()
        tokenizer.enable_truncation(max_length)
        self._tokenizer, self.max_length, self.pad_id = tokenizer, max_length, pad_id

    @classmethod
    def from_json(cls, data: str | bytes, max_length: int, pad_id: int) -> Tokenizer:
        from tokenizers import Tokenizer as HfTokenizer

        text = data.decode("utf-8") if isinstance(data, bytes) else data
        return cls(HfTokenizer.from_str(text), max_length, pad_id)

    @classmethod
    def from_file(cls, path: str | Path, max_length: int, pad_id: int) -> Tokenizer:
        return cls.from_json(Path(path).read_bytes(), max_length, pad_id)

    @classmethod
    def from_bundle(cls, bundle: Any) -> Tokenizer:
        """The bundle's tokenizer, read through its checked reader (path, listing, sha256)."""
        from edgekit.text.spec import TextSpec

        spec = TextSpec.from_bundle(bundle)
        if spec is None:
            raise UsageError(f"bundle {bundle.path} is not a text bundle (its manifest has no text section)",
                             "convert a sentence-transformers model folder with edgekit convert")
        return cls.from_json(bundle.read(spec.tokenizer), spec.max_length, spec.pad_id)

    def _encode(self, text: str) -> Any:
        if not isinstance(text, str):
            raise TypeError(f"text must be str, not {type(text).__name__}")
        if not text.strip():
            raise EmptyTextError("empty text: there is nothing to embed", "give at least one non-blank character")
        return self._tokenizer.encode(text)

    def encode(self, text: str) -> Encoded:
        encoding = self._encode(text)
        return Encoded(np.asarray([encoding.ids], np.int64), bool(encoding.overflowing))

    def encode_batch(self, texts: Sequence[str]) -> EncodedBatch:
        encodings = [self._encode(t) for t in texts]
        lengths = np.asarray([len(e.ids) for e in encodings], np.int64)
        ids = np.full((len(encodings), int(lengths.max(initial=1))), self.pad_id, np.int64)
        for row, encoding in enumerate(encodings):
            ids[row, : len(encoding.ids)] = encoding.ids
        return EncodedBatch(ids, lengths, np.asarray([bool(e.overflowing) for e in encodings]))

"""Text models: the tokenizer and the sentence-embedding helpers that convert, device and server share.

A text bundle (docs/bundle.md, Text bundles) carries a ``tokenizer.json`` and a ``text`` manifest section.
Everything here needs only the ``tokenizers`` library and numpy (no PyTorch, no TensorFlow, no transformers),
so the device and the server run the very tokenization the converter measured parity with.
"""

from edgekit.text.embed import Embedder, cosine
from edgekit.text.spec import TEXT_VERSION, TextSpec
from edgekit.text.tokenize import EmptyTextError, Encoded, EncodedBatch, Tokenizer

__all__ = ["TEXT_VERSION", "TextSpec", "Tokenizer", "Encoded", "EncodedBatch", "EmptyTextError", "Embedder",
           "cosine"]

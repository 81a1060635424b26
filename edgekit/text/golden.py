"""The text half of the start-up self-test: does this machine's tokenizer give the golden token ids?

A text bundle's golden vectors hold the sentences beside their ids (``golden.texts``); the device model's
codes are checked by :mod:`edgekit.selftest` as for images, and this checks the step before: a different
``tokenizers`` version that splits words differently would otherwise feed the model ids it was never
validated with.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgekit.text.tokenize import Tokenizer

__all__ = ["golden_token_mismatch"]


def golden_token_mismatch(bundle: Any) -> str | None:
    """None when the bundle's tokenizer reproduces every golden sentence's ids (or there is nothing to check),
    else one line naming the first sentence that differs."""
    golden = bundle.golden
    spec = bundle.manifest.get("golden", {})
    if golden is None or "texts" not in spec:
        return None
    texts, expected = golden.arrays[spec["texts"]], golden.arrays[golden.inputs]
    tokenizer = Tokenizer.from_bundle(bundle)
    ids = tokenizer.encode_batch([str(t) for t in texts]).ids
    width = max(ids.shape[1], expected.shape[1])
    ids, expected = (np.pad(a, ((0, 0), (0, width - a.shape[1])), constant_values=tokenizer.pad_id)
                     for a in (ids, expected))
    for row, (got, want) in enumerate(zip(ids, expected)):
        if not np.array_equal(got, want):
            return (f"the tokenizer gives other token ids for golden sentence {row} ({str(texts[row])[:40]!r}) "
                    f"than the converter did")
    return None

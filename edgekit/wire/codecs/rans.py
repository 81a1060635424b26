"""Portable rANS (numpy + Python ints): byte-identical to constriction's ``AnsCoder``, for devices without it.

constriction has no wheels for Linux on ARM (a Raspberry Pi would need a Rust toolchain to build it), so the
``ans`` codec falls back to this module there. It implements the same coder (64-bit state, 32-bit words,
24-bit precision, a stack: encode in reverse, decode forward) with the same small API ``ans.py`` uses of
constriction (``AnsCoder(words)``, ``encode_reverse``, ``decode``, ``get_compressed``, ``is_empty``), so
the payload format does not depend on which one ran. The steps, as ``docs/wire-format.md`` ("ans payload")
states them::

    encode s (freq f, start c):  if state >> 40 >= f: emit state & (2**32 - 1); state >>= 32
                                 state = (state // f) << 24 | (c + state % f)
    decode:                      q = state & (2**24 - 1); s: c <= q < c + f
                                 state = (state >> 24) * f + q - c; refill a word while state < 2**32
    compressed = emitted words, then the state's non-zero words low first (an empty coder: no words)

The recurrence is sequential, so it runs as a plain Python loop over ints and lists (numpy calls cost more
than they save on a few hundred symbols); ``benchmarks/bench_ans.py`` measures it against constriction.
"""

from __future__ import annotations

from bisect import bisect_right

import numpy as np

__all__ = ["Categorical", "AnsCoder", "PRECISION"]

PRECISION = 24
_QUANTILE_MASK = (1 << PRECISION) - 1
_WORD_BITS = 32
_WORD_MASK = (1 << _WORD_BITS) - 1
_FLUSH_SHIFT = 64 - PRECISION  # before pushing s, flush a word when state >> 40 >= freq[s]


class Categorical:
    """A model over symbols ``0..n-1`` from integer frequencies >= 1 summing to ``2**24``."""

    def __init__(self, freqs: np.ndarray):
        freqs = np.asarray(freqs, dtype=np.int64)
        ends = np.cumsum(freqs)
        if freqs.ndim != 1 or freqs.size < 2 or freqs.min() < 1 or ends[-1] != 1 << PRECISION:
            raise ValueError("a rANS model needs >= 2 integer frequencies >= 1 summing to 2**24")
        self.freqs = freqs.tolist()
        self.starts = (ends - freqs).tolist()
        self.ends = ends.tolist()  # bisect_right(ends, q) is the symbol whose interval holds q


class AnsCoder:
    """An rANS stack: ``AnsCoder()`` to encode, ``AnsCoder(words)`` to decode compressed u32 words."""

    def __init__(self, compressed: np.ndarray | None = None):
        words = [] if compressed is None else np.asarray(compressed, dtype=np.uint32).tolist()
        if words and words[-1] == 0:
            raise ValueError("compressed data never ends in a zero word")
        state = words.pop() if words else 0
        if words:  # the last word is non-zero, so one more word lifts the state to >= 2**32
            state = (state << _WORD_BITS) | words.pop()
        self._words = words
        self._state = state

    def encode_reverse(self, symbols: np.ndarray, model: Categorical) -> None:
        """Push ``symbols`` last to first, so that :meth:`decode` returns them first to last."""
        syms = np.asarray(symbols).ravel().tolist()
        freqs, starts = model.freqs, model.starts
        if syms and (min(syms) < 0 or max(syms) >= len(freqs)):
            raise ValueError(f"symbols must be in 0..{len(freqs) - 1}")
        state, emit = self._state, self._words.append
        for s in reversed(syms):
            freq = freqs[s]
            if state >> _FLUSH_SHIFT >= freq:
                emit(state & _WORD_MASK)
                state >>= _WORD_BITS
            prefix, remainder = divmod(state, freq)
            state = (prefix << PRECISION) | (starts[s] + remainder)
        self._state = state

    def decode(self, model: Categorical, amount: int) -> np.ndarray:
        """Pop ``amount`` symbols (int32). Like constriction, decoding past the data is deterministic, not an error."""
        freqs, starts, ends = model.freqs, model.starts, model.ends
        state, words = self._state, self._words
        out = []
        for _ in range(amount):
            quantile = state & _QUANTILE_MASK
            s = bisect_right(ends, quantile)
            state = (state >> PRECISION) * freqs[s] + quantile - starts[s]
            if state >> _WORD_BITS == 0 and words:
                state = (state << _WORD_BITS) | words.pop()
            out.append(s)
        self._state = state
        return np.array(out, dtype=np.int32)

    def _state_words(self) -> list[int]:
        """The state's words as they end the compressed data: low word first, high-order zero words left out."""
        state = self._state
        if state >> _WORD_BITS:
            return [state & _WORD_MASK, state >> _WORD_BITS]
        return [state] if state else []

    def get_compressed(self) -> np.ndarray:
        """The compressed u32 words (the last one non-zero); the coder can still be used afterwards."""
        return np.array(self._words + self._state_words(), dtype=np.uint32)

    def is_empty(self) -> bool:
        """Whether all data was decoded: the state is 0 (it stays >= 2**32 while words are left to read)."""
        return self._state == 0

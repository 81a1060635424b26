"""``ans``: rANS entropy coding of the code under a static prior fitted on calibration codes.

The prior is stored in the bundle as *integer* frequency tables (``wire/ans_prior.json``) so that the model
the device encodes with and the model the server decodes with are the same numbers, bit for bit, on any
platform and in any language. The coder is rANS with a 64-bit state, 32-bit words and 24-bit precision:
``constriction``'s ``AnsCoder`` where it is installed (native speed; it has no wheels for Linux on ARM), else
the portable :mod:`edgekit.wire.codecs.rans`, which writes and reads the very same bytes. The stream format is
specified in ``docs/wire-format.md`` ("ans payload").

Alphabet: the int8 values ``lo..hi`` seen in calibration, index ``v - lo``, plus one escape symbol
``K = hi - lo + 1``. A value outside ``lo..hi`` is coded as the escape, and its byte ``v + 128`` follows,
after all main symbols, under a uniform model (exactly 8 bits): anything round-trips, nothing corrupts::

    code (int8, shape) ─► index per channel (last axis) ─► main symbols, channel 0 first, C order within
                       └► escaped values (v + 128)  ────► after the main symbols, in the same order
    decode: N = prod(shape) main symbols (N from the validated header, never from the payload),
            E = count of escapes, E raw bytes, then the coder must be exactly empty.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from edgekit.wire.codecs.base import ArtifactReader, Codec, as_code
from edgekit.errors import BundleError, UsageError
from edgekit.wire.errors import CorruptPayload

__all__ = ["AnsPrior", "AnsCodec", "AnsBackend", "load_backend", "BACKENDS", "PRECISION", "PRIOR_FORMAT"]

PRECISION = 24
TOTAL = 1 << PRECISION
ESCAPE_BITS = 8
PRIOR_FORMAT = "edgekit-ans-prior"
MAX_CHANNELS = 1 << 16
_RAW_FREQS = np.full(256, TOTAL // 256, dtype=np.int64)


@dataclass(frozen=True)
class AnsPrior:
    """Frequency tables: ``freqs[c, i]`` for channel ``c`` (one row when per tensor), each row sums to 2**24."""

    lo: int
    hi: int
    per_channel: bool
    freqs: np.ndarray  # int64 (C, K + 1), every entry >= 1

    @property
    def escape(self) -> int:
        """The escape symbol's index (= the alphabet size K)."""
        return self.hi - self.lo + 1

    @property
    def channels(self) -> int:
        """Number of frequency tables."""
        return int(self.freqs.shape[0])

    @classmethod
    def fit(cls, codes: np.ndarray, per_channel: bool, alpha: float = 0.5, escape_count: float = 1.0) -> AnsPrior:
        """Counts of calibration codes ``(N, *shape)`` + ``alpha`` per value, ``escape_count`` for the escape."""
        codes = np.asarray(codes)
        lo, hi = int(codes.min()), int(codes.max())
        rows = codes.reshape(-1, codes.shape[-1]) if per_channel else codes.reshape(-1, 1)
        k = hi - lo + 1
        counts = np.stack([np.bincount(rows[:, c].astype(np.int64) - lo, minlength=k)
                           for c in range(rows.shape[1])]).astype(np.float64)
        weights = np.concatenate([counts + alpha, np.full((counts.shape[0], 1), escape_count)], axis=1)
        return cls.from_weights(lo, hi, per_channel, weights)

    @classmethod
    def from_weights(cls, lo: int, hi: int, per_channel: bool, weights: np.ndarray) -> AnsPrior:
        """Integer tables from non-negative weights ``(C, K + 1)`` per row (the last column the escape)."""
        return cls(lo=lo, hi=hi, per_channel=per_channel, freqs=np.stack([_quantize(w) for w in weights]))

    def cross_entropy_bits(self, codes: np.ndarray) -> float:
        """Exact code length, in bits, of ``codes`` (N, *shape) under this prior: the bound ``ans`` approaches."""
        sym, channel = _symbols(np.asarray(codes).reshape(-1, codes.shape[-1]), self)
        freqs = self.freqs[channel, sym]
        escapes = int(np.count_nonzero(sym == self.escape))
        return float(-np.log2(freqs / TOTAL).sum()) + ESCAPE_BITS * escapes

    def to_json(self) -> dict[str, Any]:
        """The artifact written to ``wire/ans_prior.json``."""
        return {"format": PRIOR_FORMAT, "version": 1, "precision": PRECISION, "lo": self.lo, "hi": self.hi,
                "mode": "per_channel" if self.per_channel else "per_tensor",
                "freqs": self.freqs.tolist()}

    @classmethod
    def from_json(cls, doc: Any) -> AnsPrior:
        """Validate a prior document (``BundleError`` naming the problem): it drives the decoder."""
        if not isinstance(doc, dict) or doc.get("format") != PRIOR_FORMAT or doc.get("version") != 1:
            raise BundleError("ans prior is not an edgekit-ans-prior version 1 document",
                              "re-run edgekit convert")
        if doc.get("precision") != PRECISION or doc.get("mode") not in ("per_channel", "per_tensor"):
            raise BundleError(f"ans prior precision/mode unsupported: {doc.get('precision')}/{doc.get('mode')}")
        lo, hi = doc.get("lo"), doc.get("hi")
        if not (isinstance(lo, int) and isinstance(hi, int) and -128 <= lo <= hi <= 127):
            raise BundleError(f"ans prior range lo={lo!r} hi={hi!r} is not within -128..127")
        freqs = _freq_table(doc.get("freqs"), hi - lo + 2)
        return cls(lo=lo, hi=hi, per_channel=doc["mode"] == "per_channel", freqs=freqs)

    def save(self, path: Path) -> None:
        """Write the JSON artifact (compact: it is read by machines)."""
        Path(path).write_text(json.dumps(self.to_json(), separators=(",", ":")) + "\n")

    @classmethod
    def load(cls, path: Path) -> AnsPrior:
        """Read and validate the prior file ``path`` outside a bundle (benchmarks, tests)."""
        try:
            data = Path(path).read_bytes()
        except OSError as err:
            raise BundleError(f"cannot read ans prior {path}: {err}") from None
        return cls.from_bytes(data, path)

    @classmethod
    def from_bytes(cls, data: bytes, name: str | Path) -> AnsPrior:
        """Parse and validate a prior document (JSON only: nothing executable is ever loaded from a bundle)."""
        try:
            doc = json.loads(data)
        except ValueError as err:
            raise BundleError(f"cannot read ans prior {name}: {err}") from None
        return cls.from_json(doc)


def _quantize(weights: np.ndarray) -> np.ndarray:
    """Integer frequencies >= 1 summing to 2**24, proportional to ``weights`` (largest remainder, stable)."""
    free = TOTAL - len(weights)
    scaled = weights / weights.sum() * free
    base = np.floor(scaled).astype(np.int64)
    short = free - int(base.sum())
    order = np.argsort(-(scaled - base), kind="stable")
    base[order[:short]] += 1
    return base + 1


def _freq_table(rows: Any, width: int) -> np.ndarray:
    """A list of lists of ints -> int64 (C, width) array, each row >= 1 and summing to 2**24."""
    if not isinstance(rows, list) or not 1 <= len(rows) <= MAX_CHANNELS:
        raise BundleError("ans prior freqs must be a non-empty list of rows")
    if not all(isinstance(r, list) and len(r) == width and all(type(v) is int for v in r) for r in rows):
        raise BundleError(f"ans prior rows must be lists of {width} integers")
    freqs = np.array(rows, dtype=np.int64)
    if freqs.min() < 1 or np.any(freqs.sum(axis=1) != TOTAL):
        raise BundleError("ans prior rows must be >= 1 and sum to 2**24")
    return freqs


def _symbols(rows: np.ndarray, prior: AnsPrior) -> tuple[np.ndarray, np.ndarray]:
    """Symbol index and frequency-table row of every element of ``rows`` (M, channels)."""
    idx = rows.astype(np.int64) - prior.lo
    sym = np.where((idx < 0) | (idx > prior.hi - prior.lo), prior.escape, idx)
    channel = np.broadcast_to(np.arange(rows.shape[1]) if prior.per_channel else 0, rows.shape)
    return sym, channel


@dataclass(frozen=True)
class AnsBackend:
    """An rANS implementation: ``model(freqs)`` from a frequency row, ``coder(words or None)`` an ``AnsCoder``."""

    name: str
    model: Callable[[np.ndarray], Any]
    coder: Callable[[np.ndarray | None], Any]


def _constriction() -> AnsBackend:
    """constriction's coder, whose quantized CDF for ``freqs - 1`` is exactly ``cumsum(freqs)``.

    constriction's fast quantizer gives symbol i the left CDF ``floor(sum_{j<i} p_j * scale) + i`` with
    ``scale = (2**24 - n) / sum(p)``; with ``p = freqs - 1`` the scale is exactly 1, every partial sum is an
    exact integer, and the CDF is the stored one. tests/wire checks it against the portable coder.
    """
    import constriction

    def model(freqs: np.ndarray) -> Any:
        return constriction.stream.model.Categorical((freqs - 1).astype(np.float64), perfect=False)

    return AnsBackend("constriction", model, constriction.stream.stack.AnsCoder)


def _portable() -> AnsBackend:
    """The numpy / pure-Python coder in :mod:`edgekit.wire.codecs.rans` (byte-identical, slower)."""
    from edgekit.wire.codecs import rans

    return AnsBackend("portable", rans.Categorical, rans.AnsCoder)


BACKENDS: dict[str, Callable[[], AnsBackend]] = {"constriction": _constriction, "portable": _portable}


def load_backend(name: str | None = None) -> AnsBackend:
    """Backend ``name``; by default constriction when it imports, else the portable one (same bytes)."""
    if name is None:
        try:
            return _constriction()
        except ImportError:
            return _portable()
    if name not in BACKENDS:
        raise UsageError(f"unknown ans backend {name!r}", f"use one of: {', '.join(BACKENDS)}")
    try:
        return BACKENDS[name]()
    except ImportError:
        raise UsageError(f"the ans backend {name!r} is not installed",
                         "pip install constriction (wheels for x86-64 and macOS), or use the portable backend") from None


class AnsCodec(Codec):
    """rANS under an :class:`AnsPrior`; ``param`` is the prior's mode (0 per tensor, 1 per channel).

    ``backend`` names the implementation (``"constriction"`` or ``"portable"``; default: the fastest installed).
    """

    def __init__(self, prior: AnsPrior, backend: str | None = None):
        self.prior = prior
        self.backend = load_backend(backend)
        self._models = [self.backend.model(row) for row in prior.freqs]
        self._raw_model = self.backend.model(_RAW_FREQS)

    @property
    def param(self) -> int:
        """1 for a per-channel prior, 0 for a per-tensor one: a mismatch is caught before decoding."""
        return int(self.prior.per_channel)

    @classmethod
    def from_params(cls, params: dict[str, Any], read: ArtifactReader | None) -> AnsCodec:
        """``{"prior": "wire/ans_prior.json", "mode": ...}``, the path relative to the bundle."""
        if read is None or not params.get("prior"):
            raise BundleError("the ans codec needs its prior file in the bundle", "re-run edgekit convert")
        return cls(AnsPrior.from_bytes(read(params["prior"]), params["prior"]))

    def for_channels(self, channels: int) -> AnsCodec:
        """A per-channel prior keeps the tables of the first ``channels`` channels; a per-tensor one is unchanged."""
        if not self.prior.per_channel or channels == self.prior.channels:
            return self
        prior = AnsPrior(self.prior.lo, self.prior.hi, True, self.prior.freqs[:channels])
        return AnsCodec(prior, self.backend.name)

    def check_shape(self, shape: tuple[int, ...]) -> None:
        """A per-channel prior needs one table per entry of the code's last axis."""
        self._rows(shape)

    def _rows(self, shape: tuple[int, ...]) -> int:
        """Channels of a code of ``shape``: its last axis when per channel, else 1."""
        channels = shape[-1] if self.prior.per_channel else 1
        if channels != self.prior.channels:
            raise ValueError(f"code shape {shape} has {channels} channels, the ans prior {self.prior.channels}")
        return channels

    def encode(self, code: np.ndarray) -> bytes:
        """Main symbols channel by channel, then escaped bytes; trailing zero bytes of the last word dropped."""
        code = as_code(code)
        by_channel = code.reshape(-1, self._rows(code.shape)).T
        sym, _ = _symbols(by_channel.T, self.prior)
        sym = sym.T.astype(np.int32)
        escaped = (by_channel[sym == self.prior.escape].astype(np.int32) + 128)
        coder = self.backend.coder(None)
        if escaped.size:
            coder.encode_reverse(escaped, self._raw_model)
        for c in reversed(range(sym.shape[0])):
            coder.encode_reverse(np.ascontiguousarray(sym[c]), self._models[c])
        return coder.get_compressed().astype("<u4").tobytes().rstrip(b"\0")

    def decode(self, payload: bytes, shape: tuple[int, ...], limit: int) -> np.ndarray:
        """Decode exactly ``prod(shape)`` symbols (from the validated header) and demand an empty coder."""
        try:
            channels = self._rows(shape)
        except ValueError as err:
            raise CorruptPayload(str(err)) from None
        if math.prod(shape) != limit:
            raise CorruptPayload(f"shape {shape} does not hold {limit} bytes")
        coder = _coder(self.backend, payload)
        per_channel = limit // channels
        try:
            sym = np.stack([coder.decode(self._models[c], per_channel) for c in range(channels)])
            escapes = sym == self.prior.escape
            raw = coder.decode(self._raw_model, int(escapes.sum())) if escapes.any() else None
            empty = coder.is_empty()
        except (ValueError, RuntimeError, OverflowError, TypeError) as err:  # constriction's errors
            raise CorruptPayload(f"ans: {err}") from None
        if not empty:
            raise CorruptPayload("ans stream has data left after the last symbol")
        values = sym.astype(np.int16) + self.prior.lo
        if raw is not None:
            values[escapes] = raw.astype(np.int16) - 128
        return values.T.reshape(shape).astype(np.int8)


def _coder(backend: AnsBackend, payload: bytes) -> Any:
    """An AnsCoder over the payload: little-endian u32 words, the last one's zero high bytes omitted."""
    if payload and payload[-1] == 0:
        raise CorruptPayload("ans payload ends in a zero byte (not canonical)")
    padded = bytes(payload) + b"\0" * (-len(payload) % 4)
    words = np.frombuffer(padded, dtype="<u4").astype(np.uint32)
    try:
        return backend.coder(words)
    except (ValueError, RuntimeError, TypeError) as err:
        raise CorruptPayload(f"ans: {err}") from None

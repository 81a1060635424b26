"""The numpy reference of every text re-encoder: dense layers, a quantizer, and the byte packing of the code.

A text re-encoder is always the same shape, so one reference (here) and one ONNX builder (text_onnx.py) serve
every method::

    embedding ─► encoder layers (dense, ReLU between) ─► z [k] ─► quantizer ─► code uint8 [P]
    code ─► dequantizer ─► ẑ [k] (zero where a nested prefix was not sent) ─► decoder layers ─► L2-normalize

PCA and ITQ are one linear layer each way; the trained methods are small MLPs; product quantization uses no
layers but a linear one and keeps its codebooks in the quantizer.

Quantizers and their payload P:
    binary  sign bits, 8 per byte, most significant bit first          P = k / 8
    scalar  b-bit uniform levels per dimension (b in 1, 2, 4, 8), packed 8/b per byte, first value highest
            bits; level = clip(round(z / step + offset), 0, 2^b - 1), ẑ = (level - offset) * step      P = k * b / 8
    ternary three levels (step and offset as scalar), five to a byte in base 3 (3^5 = 243 ≤ 256): 1.6 bits a
            value, 0.015 above log2 3                                                              P = k / 5
    pq      k split into M sub-vectors, each replaced by the index of its nearest of 256 centroids      P = M
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["Dense", "Quantizer", "TextCodec", "pack_bits", "unpack_bits", "pack_levels", "unpack_levels", "pack_digits",
           "unpack_digits"]


@dataclass
class Dense:
    """``y = x @ weight + bias``, then ReLU if ``relu``."""

    weight: np.ndarray  # [in, out]
    bias: np.ndarray  # [out]
    relu: bool = False

    def __call__(self, x: np.ndarray) -> np.ndarray:
        y = x @ self.weight + self.bias
        return np.maximum(y, 0) if self.relu else y


@dataclass
class Quantizer:
    """How the k-dimensional bottleneck ``z`` becomes bytes and back (see the module docstring)."""

    kind: str  # binary | scalar | ternary | pq
    dims: int  # k
    bits: int = 1  # scalar: bits per value
    step: np.ndarray | None = None  # scalar, ternary: [k]
    offset: np.ndarray | None = None  # scalar, ternary: [k]
    codebooks: np.ndarray | None = None  # pq: [M, 256, k / M]

    @property
    def payload_bytes(self) -> int:
        if self.kind == "pq":
            return int(self.codebooks.shape[0])
        return self.dims // self.values_per_byte

    @property
    def values_per_byte(self) -> int:
        """How many code values share a byte: what a nested prefix of n bytes keeps (n times this)."""
        if self.kind == "pq":
            return 0
        return {"binary": 8, "ternary": 5}.get(self.kind) or 8 // self.bits

    @property
    def radix(self) -> int:
        """How many levels a value has (the base its values are packed in)."""
        return {"binary": 2, "ternary": 3}.get(self.kind) or 1 << self.bits

    def encode(self, z: np.ndarray) -> np.ndarray:
        if self.kind == "binary":
            return pack_bits(z > 0)
        if self.kind in ("scalar", "ternary"):
            return pack_digits(self.levels(z), self.radix, self.values_per_byte)
        return self._pq_indices(z).astype(np.uint8)

    def levels(self, z: np.ndarray) -> np.ndarray:
        """The scalar levels of ``z`` before packing (the trained methods reproduce this rounding in torch)."""
        top = self.radix - 1
        return np.clip(np.floor(z / self.step + self.offset + 0.5), 0, top).astype(np.int64)

    def decode(self, code: np.ndarray, valid_bytes: int | None = None) -> np.ndarray:
        """ẑ from the code; with ``valid_bytes`` only that prefix counts (the values after it are zero)."""
        if self.kind == "pq":
            sub = self.codebooks[np.arange(self.codebooks.shape[0]), code.astype(np.int64)]  # [N, M, d]
            return sub.reshape(len(code), -1).astype(np.float32)
        if self.kind == "binary":
            z = unpack_bits(code, self.dims).astype(np.float32) * 2 - 1
        else:
            levels = unpack_digits(code, self.radix, self.values_per_byte, self.dims)
            z = ((levels - self.offset) * self.step).astype(np.float32)
        if valid_bytes is not None:
            z[:, valid_bytes * self.values_per_byte:] = 0
        return z

    def _pq_indices(self, z: np.ndarray) -> np.ndarray:
        m, _, d = self.codebooks.shape
        sub = z.reshape(len(z), m, d).transpose(1, 0, 2)  # [M, N, d]
        distances = -2 * sub @ self.codebooks.transpose(0, 2, 1) + (self.codebooks ** 2).sum(-1)[:, None, :]
        return distances.argmin(-1).T  # [N, M]: |z|^2 is the same for every centroid, so it is left out

    def to_json(self) -> dict[str, Any]:
        """The quantizer's settings for reencoder.json (its arrays live in the ONNX files)."""
        out: dict[str, Any] = {"kind": self.kind, "dims": self.dims}
        if self.kind == "scalar":
            out["bits"] = self.bits
        if self.kind == "ternary":
            out["levels"] = 3
        if self.kind == "pq":
            out["subspaces"], out["centroids"] = int(self.codebooks.shape[0]), int(self.codebooks.shape[1])
        return out


@dataclass
class TextCodec:
    """A whole re-encoder: encoder layers, quantizer, decoder layers, and (nested) the prefixes that decode."""

    encoder: list[Dense]
    quantizer: Quantizer
    decoder: list[Dense]
    prefixes: list[int] = field(default_factory=list)

    @property
    def payload_bytes(self) -> int:
        return self.quantizer.payload_bytes

    def bottleneck(self, x: np.ndarray) -> np.ndarray:
        for layer in self.encoder:
            x = layer(x)
        return x

    def encode(self, embeddings: np.ndarray) -> np.ndarray:
        """uint8 codes [N, P] of float32 embeddings [N, D]."""
        return self.quantizer.encode(self.bottleneck(np.asarray(embeddings, np.float32)))

    def decode(self, code: np.ndarray, valid_bytes: int | None = None) -> np.ndarray:
        """L2-normalized float32 embeddings [N, D] in the teacher's space from codes [N, P] (or a zero-padded
        prefix of ``valid_bytes`` bytes, for nested codes)."""
        x = self.quantizer.decode(np.asarray(code, np.uint8), valid_bytes)
        for layer in self.decoder:
            x = layer(x)
        norm = np.linalg.norm(x, axis=1, keepdims=True)
        return (x / np.maximum(norm, 1e-12)).astype(np.float32)


def pack_bits(bits: np.ndarray) -> np.ndarray:
    """[N, k] booleans (k a multiple of 8) → [N, k/8] uint8, first bit the most significant (np.packbits)."""
    return np.packbits(np.asarray(bits, bool), axis=1)


def unpack_bits(code: np.ndarray, dims: int) -> np.ndarray:
    """The inverse of :func:`pack_bits`: [N, P] uint8 → [N, dims] of 0/1."""
    return np.unpackbits(np.asarray(code, np.uint8), axis=1)[:, :dims]


def pack_levels(levels: np.ndarray, bits: int) -> np.ndarray:
    """[N, k] integers in 0..2^bits-1 → [N, k*bits/8] uint8, the first value of each byte in its highest bits."""
    return pack_digits(levels, 1 << bits, 8 // bits)


def unpack_levels(code: np.ndarray, bits: int, dims: int) -> np.ndarray:
    """The inverse of :func:`pack_levels`."""
    return unpack_digits(code, 1 << bits, 8 // bits, dims)


def pack_digits(values: np.ndarray, radix: int, per_byte: int) -> np.ndarray:
    """[N, k] integers in 0..radix-1 → [N, k/per_byte] uint8: each byte the base-``radix`` number of its
    ``per_byte`` values, the first the most significant (for radix 2^b the same as b-bit fields, highest first)."""
    grouped = np.asarray(values, np.int64).reshape(len(values), -1, per_byte)
    return (grouped * radix ** np.arange(per_byte - 1, -1, -1)).sum(-1).astype(np.uint8)


def unpack_digits(code: np.ndarray, radix: int, per_byte: int, dims: int) -> np.ndarray:
    """The inverse of :func:`pack_digits`: [N, P] uint8 → [N, dims] integers."""
    places = radix ** np.arange(per_byte - 1, -1, -1)
    digits = (np.asarray(code, np.int64)[:, :, None] // places) % radix
    return digits.reshape(len(code), -1)[:, :dims]

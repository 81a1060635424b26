"""The one small interface every feature codec implements.

A codec turns a contiguous int8 code into payload bytes and back. It is built from its manifest params
(``from_params``) so the device and the server construct the very same codec from the same bundle. Its
artifacts (a dictionary, a prior) come as bytes from ``read``, the bundle's checked reader
(:func:`edgekit.bundle.files.read_bundle_file`): a codec never opens a file itself::

    encode:  int8 ndarray ──► bytes                    (device)
    decode:  bytes, shape, limit ──► int8 ndarray      (server; ``limit`` bounds work and memory)

``decode`` faces the network: the payload's CRC is already checked, but its content may still be hostile
(a fuzzed frame with a recomputed CRC). It must produce exactly ``limit`` bytes or raise
:class:`~edgekit.wire.errors.CorruptPayload`, never allocate more than ``limit`` plus a constant, and never raise
anything else.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Callable
from typing import Any

import numpy as np

from edgekit.wire.errors import CorruptPayload

__all__ = ["Codec", "ArtifactReader", "as_code", "from_raw_bytes"]

#: Reads a bundle file by its manifest path (``"wire/zstd.dict"``) after the path, type, size and hash checks.
ArtifactReader = Callable[[str], bytes]


class Codec(abc.ABC):
    """A feature codec. Its name and wire id live in the registry table only; ``param`` goes in the header."""

    @property
    def param(self) -> int:
        """The header's ``codec_param`` byte: what a decoder must agree on (0 when nothing)."""
        return 0

    @classmethod
    @abc.abstractmethod
    def from_params(cls, params: dict[str, Any], read: ArtifactReader | None) -> Codec:
        """Build from the manifest's ``wire.codecs[name]``; artifacts (bundle paths) come from ``read``."""

    @abc.abstractmethod
    def encode(self, code: np.ndarray) -> bytes:
        """Payload bytes for an int8 code of any shape (C order)."""

    @abc.abstractmethod
    def decode(self, payload: bytes, shape: tuple[int, ...], limit: int) -> np.ndarray:
        """The int8 code of ``shape`` (whose byte size must equal ``limit``), or ``CorruptPayload``."""

    def check_shape(self, shape: tuple[int, ...]) -> None:
        """``ValueError`` if this codec instance cannot code ``shape`` (checked once, when a bundle loads)."""
        return None

    def for_channels(self, channels: int) -> Codec:
        """The codec of a rate level that sends only the first ``channels`` of the code's last axis (a nested
        code, docs/wire-format.md, Levels): the same codec, unless its tables are per channel."""
        return self

    def accepts_param(self, param: int) -> bool:
        """Whether a frame whose header says ``codec_param`` can be decoded by this instance."""
        return param == self.param


def as_code(code: np.ndarray) -> np.ndarray:
    """The code as a C-contiguous int8 array (``ValueError`` for another dtype: never cast silently)."""
    arr = np.asarray(code)
    if arr.dtype != np.int8:
        raise ValueError(f"codes are int8, got {arr.dtype}")
    return np.ascontiguousarray(arr)


def from_raw_bytes(raw: bytes, shape: tuple[int, ...], limit: int) -> np.ndarray:
    """Reinterpret exactly ``limit`` bytes as the int8 code of ``shape`` (a copy the caller owns)."""
    if len(raw) != limit or math.prod(shape) != limit:
        raise CorruptPayload(f"payload decodes to {len(raw)} bytes, expected {limit}")
    return np.frombuffer(raw, dtype=np.int8).reshape(shape).copy()

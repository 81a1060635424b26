"""``raw``: the int8 code as is. The reference point, and the fallback when nothing compresses."""

from __future__ import annotations

from typing import Any

import numpy as np

from edgekit.wire.codecs.base import ArtifactReader, Codec, as_code, from_raw_bytes

__all__ = ["RawCodec"]


class RawCodec(Codec):
    """Payload = the code's bytes in C order; decode checks the length and copies."""

    @classmethod
    def from_params(cls, params: dict[str, Any], read: ArtifactReader | None) -> RawCodec:
        """``raw`` takes no parameters."""
        return cls()

    def encode(self, code: np.ndarray) -> bytes:
        """The bytes of the code."""
        return as_code(code).tobytes()

    def decode(self, payload: bytes, shape: tuple[int, ...], limit: int) -> np.ndarray:
        """The payload must be exactly ``limit`` bytes."""
        return from_raw_bytes(bytes(payload), shape, limit)

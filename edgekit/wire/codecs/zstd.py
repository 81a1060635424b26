"""``zstd``: Zstandard, optionally primed with a dictionary trained on calibration codes at convert time.

Codes of a few hundred bytes are too short for zstd to learn their statistics inside one frame; a
dictionary trained on calibration codes and shipped in the bundle gives it that history up front.

Payload = one zstd frame (RFC 8878) in the *magicless* format, with no content size, no checksum and no
dictionary id: 9-12 bytes a frame that the edgekit header already carries (sizes, CRC, bundle). A decoder in
another language prepends ``28 B5 2F FD`` and hands it to any libzstd. Decoding checks the frame layout
first (``_check_frame``) because libzstd trusts a declared content size for its allocation::

    payload ─► frame descriptor (no FCS/checksum/dict id, window <= 1 MiB; with the dictionary, window >=
            raw_len) ─► blocks end exactly at the end ─► decompress with max_output_size = raw_len
            ─► exactly raw_len bytes, else CorruptPayload

Window and dictionary (RFC 8878, "Dictionary Format"): while a frame's output is at most its window, matches
may reach back into the whole dictionary, however far beyond the window. libzstd sizes the window to the
input (never below 1 KiB), so a dictionary frame's window always covers ``raw_len`` and the dictionary stays
addressable for the whole frame. The decoder demands that window, so the rule docs/wire-format.md states
(dictionary content addressable besides the window) is all another decoder needs.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import zstandard

from edgekit.wire.codecs.base import ArtifactReader, Codec, as_code, from_raw_bytes
from edgekit.wire.errors import CorruptPayload

__all__ = ["ZstdCodec", "MAX_WINDOW_BYTES", "DEFAULT_LEVEL"]

DEFAULT_LEVEL = 3  # zstd's own default; a bundle's level is chosen by fit_codecs within the device budget
MAX_WINDOW_BYTES = 1 << 20
_BLOCK_HEADER = 3


class ZstdCodec(Codec):
    """Zstandard at ``level``, with ``dictionary`` (raw bytes of a trained dictionary) or without."""

    def __init__(self, level: int = DEFAULT_LEVEL, dictionary: bytes | None = None):
        self.level = level
        self.dictionary = dictionary
        params = zstandard.ZstdCompressionParameters.from_level(
            level, format=zstandard.FORMAT_ZSTD1_MAGICLESS, write_content_size=False,
            write_checksum=False, write_dict_id=False)
        zdict = zstandard.ZstdCompressionDict(dictionary) if dictionary else None
        self._cctx = zstandard.ZstdCompressor(dict_data=zdict, compression_params=params)
        self._dctx = zstandard.ZstdDecompressor(dict_data=zdict, format=zstandard.FORMAT_ZSTD1_MAGICLESS,
                                                max_window_size=MAX_WINDOW_BYTES)

    @property
    def param(self) -> int:
        """1 when the frame was compressed with the bundle's dictionary, else 0."""
        return 1 if self.dictionary else 0

    @classmethod
    def from_params(cls, params: dict[str, Any], read: ArtifactReader | None) -> ZstdCodec:
        """``{"level": int, "dictionary": "wire/zstd.dict" | null}``."""
        rel = params.get("dictionary")
        dictionary = None
        if rel:
            if read is None:
                raise ValueError("the zstd dictionary path needs the bundle directory")
            dictionary = read(rel)
        return cls(level=int(params.get("level", DEFAULT_LEVEL)), dictionary=dictionary)

    def encode(self, code: np.ndarray) -> bytes:
        """One magicless zstd frame of the code's bytes."""
        return self._cctx.compress(as_code(code).tobytes())

    def decode(self, payload: bytes, shape: tuple[int, ...], limit: int) -> np.ndarray:
        """Check the frame's layout, then decompress to at most ``limit`` bytes."""
        _check_frame(payload, limit if self.dictionary else 0)
        try:
            raw = self._dctx.decompress(payload, max_output_size=limit)
        except zstandard.ZstdError as err:
            raise CorruptPayload(f"zstd: {err}") from None
        return from_raw_bytes(raw, shape, limit)


def _check_frame(payload: bytes, min_window: int) -> None:
    """The payload is exactly one magicless frame as our encoder writes it (RFC 8878 §3.1.1); its window is
    at least ``min_window`` (``raw_len`` for a dictionary frame, so the whole dictionary is addressable)."""
    if len(payload) < 2:
        raise CorruptPayload(f"zstd payload of {len(payload)} bytes is shorter than a frame header")
    descriptor, window_descriptor = payload[0], payload[1]
    if descriptor != 0:  # FCS flag 0, single segment 0, no checksum, no dict id, reserved 0
        raise CorruptPayload(f"zstd frame descriptor 0x{descriptor:02x}, expected 0x00")
    exponent, mantissa = window_descriptor >> 3, window_descriptor & 7
    window = (1 << (10 + exponent)) + ((1 << (10 + exponent)) >> 3) * mantissa
    if window > MAX_WINDOW_BYTES:
        raise CorruptPayload(f"zstd window {window} above {MAX_WINDOW_BYTES}")
    if window < min_window:
        raise CorruptPayload(f"zstd dictionary frame with window {window} below raw_len {min_window}")
    _check_blocks(payload, 2)


def _check_blocks(payload: bytes, pos: int) -> None:
    """Walk the block headers: the last block must end exactly at the end of the payload."""
    while True:
        if pos + _BLOCK_HEADER > len(payload):
            raise CorruptPayload("zstd frame ends inside a block header")
        header = int.from_bytes(payload[pos:pos + _BLOCK_HEADER], "little")
        last, block_type, size = header & 1, (header >> 1) & 3, header >> 3
        if block_type == 3:
            raise CorruptPayload("zstd reserved block type")
        pos += _BLOCK_HEADER + (1 if block_type == 1 else size)
        if last:
            break
    if pos != len(payload):
        raise CorruptPayload(f"zstd frame is {pos} bytes, payload {len(payload)}")

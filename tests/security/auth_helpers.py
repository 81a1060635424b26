"""Frame edits an attacker makes, for the authentication tests."""

from __future__ import annotations

import struct

from edgekit.auth import TAG_SIZE
from edgekit.frame import HEADER_SIZE, crc32c

_CRC_OFFSET = HEADER_SIZE - 4


def recrc(frame: bytes) -> bytes:
    """Fix the CRC after an edit (what a deliberate forger does); a tag trailer stays as it is."""
    payload_len = struct.unpack_from("<I", frame, 56)[0]
    crc = crc32c(frame[HEADER_SIZE:HEADER_SIZE + payload_len], crc32c(frame[:_CRC_OFFSET]))
    return frame[:_CRC_OFFSET] + crc.to_bytes(4, "little") + frame[HEADER_SIZE:]


def flip_bit(frame: bytes, offset: int, bit: int = 0) -> bytes:
    """``frame`` with one bit flipped (the CRC is not fixed: see :func:`recrc`)."""
    edited = bytearray(frame)
    edited[offset] ^= 1 << bit
    return bytes(edited)


def strip_tag(frame: bytes) -> bytes:
    """A tagged frame made to look untagged: flag cleared, trailer dropped, CRC fixed."""
    return recrc(frame[:3] + b"\x00" + frame[4:-TAG_SIZE])


def wrong_tag(frame: bytes) -> bytes:
    """The frame with its tag replaced by zeros."""
    return frame[:-TAG_SIZE] + bytes(TAG_SIZE)

"""Frame edits an attacker makes (version-2 frames), for the authentication tests."""

from __future__ import annotations

from edgekit.auth import TAG_SIZE
from edgekit.frame import AUTH_FLAG, crc32c, split_v2


def recrc(frame: bytes, bundle_id: str) -> bytes:
    """Fix the CRC after an edit, as a forger can (the bundle id that seeds it is no secret); a tag stays."""
    head = split_v2(frame)
    start = head.crc_offset
    crc = crc32c(frame[start + 4:head.payload_end], crc32c(frame[:start], crc32c(bytes.fromhex(bundle_id))))
    return frame[:start] + crc.to_bytes(4, "little") + frame[start + 4:]


def flip_bit(frame: bytes, offset: int, bit: int = 0) -> bytes:
    """``frame`` with one bit flipped (the CRC is not fixed: see :func:`recrc`)."""
    edited = bytearray(frame)
    edited[offset] ^= 1 << bit
    return bytes(edited)


def strip_tag(frame: bytes, bundle_id: str) -> bytes:
    """A tagged frame made to look untagged: ``AUTH`` cleared, trailer dropped, CRC fixed."""
    return recrc(frame[:1] + bytes((frame[1] & ~AUTH_FLAG,)) + frame[2:-TAG_SIZE], bundle_id)


def wrong_tag(frame: bytes) -> bytes:
    """The frame with its tag replaced by zeros."""
    return frame[:-TAG_SIZE] + bytes(TAG_SIZE)

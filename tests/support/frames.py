"""Frame edits an attacker makes (version-2 frames), for the wire and authentication tests."""

from __future__ import annotations

from edgekit.auth.tags import TAG_SIZE
from edgekit.wire.crc import crc32c
from edgekit.wire.errors import FrameError
from edgekit.wire.frame_v2 import AUTH_FLAG, split_v2


def recrc_v2(frame: bytes, full_id: bytes) -> bytes:
    """A version-2 frame with its CRC recomputed for bundle ``full_id`` (unchanged if it does not split), as a
    forger can (the bundle id that seeds it is no secret); a tag stays."""
    try:
        head = split_v2(frame)
    except FrameError:
        return frame
    crc = crc32c(frame[head.crc_offset + 4:head.payload_end], crc32c(frame[:head.crc_offset], crc32c(full_id)))
    return frame[:head.crc_offset] + crc.to_bytes(4, "little") + frame[head.crc_offset + 4:]


def recrc(frame: bytes, bundle_id: str) -> bytes:
    """:func:`recrc_v2` for the bundle id in hex."""
    return recrc_v2(frame, bytes.fromhex(bundle_id))


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

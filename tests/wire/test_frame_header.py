"""The frame header: layout, CRC32C, and one documented error per kind of damage."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from wire_helpers import recrc

from edgekit.errors import EdgekitError
from edgekit.wire.errors import (ERROR_TYPES, BadHeader, BadMagic, CrcMismatch, FrameError, FrameTooLarge,
                                 TrailingBytes, TruncatedFrame, UnknownFlags, UnsupportedVersion)
from edgekit.wire.frame_v1 import HEADER_SIZE, Header, pack_frame, unpack_header
from edgekit.wire.crc import _crc32c_python, crc32c

CAP = 1 << 16


def header(**overrides) -> Header:
    """A valid header for a (2, 3) int8 code."""
    fields = dict(codec_id=0, codec_param=0, dtype=1, shape=(2, 3), bundle_prefix=bytes(range(8)), seq=7,
                  timestamp_ns=1_700_000_000_000_000_000, boot_id=0xDEADBEEF, scale=0.5, zero_point=-3,
                  raw_len=6, payload_len=6)
    fields.update(overrides)
    return Header(**fields)


def frame(**overrides) -> bytes:
    """A valid raw-codec frame."""
    return pack_frame(header(**overrides), bytes(range(6)))


def patch(data: bytes, offset: int, fmt: str, value) -> bytes:
    """``data`` with one field overwritten and the CRC recomputed."""
    buf = bytearray(data)
    struct.pack_into(fmt, buf, offset, value)
    return recrc(bytes(buf))


def test_header_is_64_bytes_and_round_trips():
    data = frame()
    assert len(data) == HEADER_SIZE + 6 and HEADER_SIZE == 64
    assert unpack_header(data, CAP, CAP) == header()


def test_layout_offsets_match_the_spec():
    data = frame()
    assert data[:2] == b"EK" and data[2] == 1 and data[3] == 0
    assert data[8:16] == bytes(range(8))
    assert struct.unpack_from("<Q", data, 16)[0] == 7
    assert struct.unpack_from("<I", data, 32)[0] == 0xDEADBEEF
    assert struct.unpack_from("<f", data, 36)[0] == 0.5
    assert struct.unpack_from("<i", data, 40)[0] == -3
    assert struct.unpack_from("<4H", data, 44) == (2, 3, 0, 0)
    assert struct.unpack_from("<II", data, 52) == (6, 6)


def test_crc32c_is_castagnoli():
    assert crc32c(b"123456789") == 0xE3069283  # the standard check value of CRC-32C
    assert _crc32c_python(b"123456789") == 0xE3069283
    blob = np.random.default_rng(1).integers(0, 256, 1000, dtype=np.uint8).tobytes()
    assert crc32c(blob) == _crc32c_python(blob) == crc32c(blob[500:], crc32c(blob[:500]))


def test_error_codes_are_distinct_and_carry_reasons():
    codes = [e.code for e in ERROR_TYPES]
    assert len(set(codes)) == len(codes)
    for cls in ERROR_TYPES:
        err = cls("why")
        assert isinstance(err, FrameError) and isinstance(err, EdgekitError)
        assert err.reason == "why" and cls.code in str(err)


@pytest.mark.parametrize("cut", [0, 1, 63, 64, 69])
def test_truncated(cut):
    with pytest.raises(TruncatedFrame):
        unpack_header(frame()[:cut], CAP, CAP)


def test_trailing_bytes():
    with pytest.raises(TrailingBytes):
        unpack_header(frame() + b"\0", CAP, CAP)


def test_bad_magic():
    with pytest.raises(BadMagic):
        unpack_header(b"XK" + frame()[2:], CAP, CAP)


def test_unknown_version_is_rejected_not_guessed():
    for version in (0, 2, 255):
        with pytest.raises(UnsupportedVersion):
            unpack_header(patch(frame(), 2, "<B", version), CAP, CAP)


def test_unknown_flags():
    for flags in (1, 0x80):
        with pytest.raises(UnknownFlags):
            unpack_header(patch(frame(), 3, "<B", flags), CAP, CAP)


def test_declared_sizes_checked_before_anything_else():
    huge = patch(frame(), 56, "<I", 0xFFFFFFFF)
    with pytest.raises(FrameTooLarge):
        unpack_header(huge, CAP, CAP)
    with pytest.raises(FrameTooLarge):
        unpack_header(patch(frame(), 52, "<I", CAP + 1), CAP, CAP)
    with pytest.raises(FrameTooLarge):
        unpack_header(frame(), 5, CAP)


def test_any_single_bit_flip_is_detected():
    data = frame()
    for bit in range(len(data) * 8):
        damaged = bytearray(data)
        damaged[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(FrameError):
            unpack_header(bytes(damaged), CAP, CAP)


def test_crc_mismatch():
    damaged = bytearray(frame())
    damaged[20] ^= 0x10
    with pytest.raises(CrcMismatch):
        unpack_header(bytes(damaged), CAP, CAP)


@pytest.mark.parametrize("offset, fmt, value", [
    (6, "<B", 2),              # undefined dtype
    (7, "<B", 0),              # ndim 0
    (7, "<B", 5),              # ndim 5
    (48, "<H", 1),             # a dim beyond ndim
    (44, "<H", 0),             # a zero dim
    (52, "<I", 7),             # raw_len disagrees with the shape
    (36, "<f", float("nan")),  # scale
    (36, "<f", -1.0),
    (36, "<f", 0.0),
    (36, "<f", float("inf")),
    (40, "<i", 128),           # zero point outside int8
    (40, "<i", -129),
    (16, "<Q", 2**63),         # seq does not fit a signed 64-bit integer (the results store's key)
    (24, "<Q", 2**64 - 1),     # nor does timestamp_ns
])
def test_bad_header_fields(offset, fmt, value):
    with pytest.raises(BadHeader):
        unpack_header(patch(frame(), offset, fmt, value), CAP, CAP)

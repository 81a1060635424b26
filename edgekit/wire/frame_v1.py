"""Frame version 1: what a device sends for one code, byte for byte, in a fixed 64-byte header.

A frame is a fixed 64-byte little-endian header followed by the codec payload. It is self-describing (a
server with the right bundle can decode it without any side channel, so it works over MQTT 3.1.1 where only
the payload travels) and checked (CRC32C over header and payload). The full specification, with a worked
hex example, is ``docs/wire-format.md``; this module is its reference implementation::

    offset  size  field            type     notes
    ------  ----  ---------------  -------  ------------------------------------------------------------
         0     2  magic            bytes    b"EK" (0x45 0x4B)
         2     1  version          u8       1
         3     1  flags            u8       no flag is defined in version 1: must be 0
         4     1  codec_id         u8       0 raw, 1 zstd, 2 ans (edgekit/wire/codecs/registry.py)
         5     1  codec_param      u8       per codec: zstd 1 = bundle dictionary; ans 0/1 = prior mode
         6     1  dtype            u8       1 = int8
         7     1  ndim             u8       1..4
         8     8  bundle_id        bytes    first 8 bytes of the bundle's sha256 id
        16     8  seq              u64      per-boot sequence number (< 2**63)
        24     8  timestamp_ns     u64      capture time, ns since the Unix epoch (< 2**63)
        32     4  boot_id          u32      random, non-zero, new each time the agent starts
        36     4  scale            f32      dequantization scale (finite, > 0)
        40     4  zero_point       i32      dequantization zero point (within the dtype's range)
        44     8  shape            4 x u16  dims [0, ndim) >= 1, dims [ndim, 4) == 0
        52     4  raw_len          u32      prod(shape) * itemsize(dtype)
        56     4  payload_len      u32      bytes after the header
        60     4  crc32c           u32      CRC-32C (Castagnoli) of bytes [0, 60) then the payload
        64     -  payload          bytes    codec output, exactly payload_len bytes

Decoding a header (``unpack_header``) checks, in this order, and raises the first that fails::

    bytes ─► length >= 64 ──► magic ──► version ──► flags ──► size caps ──► exact length ──► CRC ──► Header
             TruncatedFrame   BadMagic  Unsupported UnknownFlags FrameTooLarge Truncated/     CrcMismatch
                                        Version                              TrailingBytes

Field checks that need no bundle (dtype, ndim, dims, raw_len, scale, zero point, seq and timestamp_ns below
2**63, boot_id non-zero) follow as ``BadHeader``; the bundle-dependent ones (``UnknownBundle``,
``ShapeMismatch``, ``QuantMismatch``, ``UnknownCodec``, ``CorruptPayload``) live in ``edgekit.wire.decoder``. Every failure is a :class:`FrameError` subclass with a stable ``code`` (used in dead-letter
messages) and a human ``reason``; nothing else escapes the decoder.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass

import numpy as np

from edgekit.wire.crc import crc32c
from edgekit.wire.errors import (
    BadHeader,
    BadMagic,
    CrcMismatch,
    FrameTooLarge,
    TrailingBytes,
    TruncatedFrame,
    UnknownFlags,
    UnsupportedVersion,
)

MAGIC = b"EK"
VERSION = 1
FRAME_VERSIONS = (1, 2)  # the frame versions this edgekit encodes and decodes (version 2: see below)
MAX_NDIM = 4
KNOWN_FLAGS = 0x00  # version 1 defines no flag; any set bit is rejected
MAX_DIM = 0xFFFF
MAX_ID = 2**63 - 1  # seq and timestamp_ns are u64 on the wire but must fit a signed 64-bit integer (SQLite)

_HEADER = struct.Struct("<2sBBBBBB8sQQIfi4HIII")
HEADER_SIZE = _HEADER.size
_CRC_OFFSET = HEADER_SIZE - 4
_PREFIX_OFFSET = 8  # magic 2, version, flags, codec_id, codec_param, dtype, ndim: 1 byte each
assert HEADER_SIZE == 64

#: dtype code on the wire -> numpy dtype. One table: add a row to support a new code dtype.
DTYPES: dict[int, np.dtype] = {1: np.dtype(np.int8)}
_DTYPE_CODES = {dt: code for code, dt in DTYPES.items()}


# ------------------------------------------------------------------------------------------------ header


@dataclass(frozen=True)
class Header:
    """The decoded, CRC-checked fixed header of a frame (field meanings: see the module docstring)."""

    codec_id: int
    codec_param: int
    dtype: int
    shape: tuple[int, ...]
    bundle_prefix: bytes
    seq: int
    timestamp_ns: int
    boot_id: int
    scale: float
    zero_point: int
    raw_len: int
    payload_len: int
    flags: int = 0
    version: int = VERSION


def pack_frame(header: Header, payload: bytes) -> bytes:
    """Header + payload + CRC as one ``bytes``; the header's ``payload_len`` is taken from ``payload``."""
    dims = tuple(header.shape) + (0,) * (MAX_NDIM - len(header.shape))
    head = _HEADER.pack(
        MAGIC, header.version, header.flags, header.codec_id, header.codec_param, header.dtype,
        len(header.shape), header.bundle_prefix, header.seq, header.timestamp_ns, header.boot_id,
        header.scale, header.zero_point, *dims, header.raw_len, len(payload), 0,
    )[:_CRC_OFFSET]
    crc = crc32c(payload, crc32c(head))
    return b"".join((head, crc.to_bytes(4, "little"), payload))


def frame_bundle_prefix(data: bytes) -> bytes:
    """The bundle-id prefix (header bytes 8..16) of a frame, unchecked: for labels such as the MQTT 5
    ``bundle-id`` property, never for decoding (``unpack_header`` checks the frame first)."""
    return bytes(data[_PREFIX_OFFSET:_PREFIX_OFFSET + 8])


def unpack_header(data: bytes, max_payload_bytes: int, max_raw_bytes: int) -> Header:
    """Check the framing of ``data`` (length, magic, version, flags, caps, CRC, fields) and return its header.

    ``max_payload_bytes`` / ``max_raw_bytes`` are the caller's hard caps: declared sizes above them are
    rejected before anything is allocated or checksummed.
    """
    if len(data) < HEADER_SIZE:
        raise TruncatedFrame(f"{len(data)} bytes, shorter than the {HEADER_SIZE}-byte header")
    fields = _HEADER.unpack_from(data)
    (magic, version, flags, codec_id, codec_param, dtype, ndim, prefix, seq, ts, boot_id, scale,
     zero_point, d0, d1, d2, d3, raw_len, payload_len, crc) = fields
    if magic != MAGIC:
        raise BadMagic(f"magic {magic!r}, expected {MAGIC!r}")
    if version != VERSION:
        raise UnsupportedVersion(f"frame version {version}; this decoder implements version {VERSION}")
    if flags & ~KNOWN_FLAGS:
        raise UnknownFlags(f"flags 0x{flags:02x} has bits this version does not define")
    if payload_len > max_payload_bytes:
        raise FrameTooLarge(f"payload_len {payload_len} above the limit {max_payload_bytes}")
    if raw_len > max_raw_bytes:
        raise FrameTooLarge(f"raw_len {raw_len} above the limit {max_raw_bytes}")
    _check_length(len(data), payload_len)
    _check_crc(data, crc)
    shape = _check_fields(dtype, ndim, (d0, d1, d2, d3), raw_len, scale, zero_point)
    _check_ids(seq, ts, boot_id)
    return Header(codec_id=codec_id, codec_param=codec_param, dtype=dtype, shape=shape, bundle_prefix=prefix,
                  seq=seq, timestamp_ns=ts, boot_id=boot_id, scale=scale, zero_point=zero_point,
                  raw_len=raw_len, payload_len=payload_len, flags=flags, version=version)


def _check_length(actual: int, payload_len: int) -> None:
    """The frame is exactly header + declared payload: no less (truncated), no more (trailing bytes)."""
    expected = HEADER_SIZE + payload_len
    if actual < expected:
        raise TruncatedFrame(f"{actual} bytes, header declares {expected}")
    if actual > expected:
        raise TrailingBytes(f"{actual} bytes, header declares {expected}")


def _check_crc(data: bytes, stored: int) -> None:
    """CRC32C over bytes [0, 60) and the payload (the CRC field itself is excluded)."""
    actual = crc32c(data[HEADER_SIZE:], crc32c(data[:_CRC_OFFSET]))
    if actual != stored:
        raise CrcMismatch(f"crc32c 0x{actual:08x}, header says 0x{stored:08x}")


def _check_fields(dtype: int, ndim: int, dims: tuple[int, ...], raw_len: int, scale: float,
                  zero_point: int) -> tuple[int, ...]:
    """Header fields that must be self-consistent whatever the bundle; returns the shape."""
    if dtype not in DTYPES:
        raise BadHeader(f"dtype code {dtype} is not defined (known: {sorted(DTYPES)})")
    if not 1 <= ndim <= MAX_NDIM:
        raise BadHeader(f"ndim {ndim} outside 1..{MAX_NDIM}")
    shape = dims[:ndim]
    if any(d == 0 for d in shape) or any(d != 0 for d in dims[ndim:]):
        raise BadHeader(f"dims {dims} do not match ndim {ndim} (used dims >= 1, unused dims 0)")
    itemsize = DTYPES[dtype].itemsize
    if math.prod(shape) * itemsize != raw_len:
        raise BadHeader(f"raw_len {raw_len} but shape {shape} holds {math.prod(shape) * itemsize} bytes")
    if not (math.isfinite(scale) and scale > 0):
        raise BadHeader(f"scale {scale!r} is not a finite positive number")
    info = np.iinfo(DTYPES[dtype])
    if not info.min <= zero_point <= info.max:
        raise BadHeader(f"zero_point {zero_point} outside the {DTYPES[dtype]} range")
    return shape


def _check_ids(seq: int, timestamp_ns: int, boot_id: int) -> None:
    """``seq`` and ``timestamp_ns`` must be < 2**63: a result is keyed and stored by them as SQLite's signed
    64-bit INTEGER, so a larger value (CRC-valid or not) would fail every insert of its batch, forever.
    ``boot_id`` 0 is reserved (no agent draws it), so a zeroed header never passes for a real boot."""
    for name, value in (("seq", seq), ("timestamp_ns", timestamp_ns)):
        if value > MAX_ID:
            raise BadHeader(f"{name} {value} is not below 2**63")
    if boot_id == 0:
        raise BadHeader("boot_id 0: a sender draws a random non-zero boot_id at each start")


def dtype_code(dtype: np.dtype) -> int:
    """The wire code of a numpy dtype (``ValueError`` for one the format does not carry)."""
    try:
        return _DTYPE_CODES[np.dtype(dtype)]
    except KeyError:
        raise ValueError(f"dtype {dtype} cannot be sent; frames carry {list(_DTYPE_CODES)}") from None


def check_encodable(shape: tuple[int, ...], scale: float, zero_point: int, dtype: np.dtype) -> None:
    """Refuse on the device what the server would reject, with a ``ValueError`` naming the field."""
    if not 1 <= len(shape) <= MAX_NDIM or not all(1 <= d <= MAX_DIM for d in shape):
        raise ValueError(f"code shape {shape}: frames carry 1..{MAX_NDIM} dims of 1..{MAX_DIM}")
    if not (math.isfinite(scale) and scale > 0):
        raise ValueError(f"scale {scale!r} must be finite and > 0")
    info = np.iinfo(dtype)
    if not info.min <= zero_point <= info.max:
        raise ValueError(f"zero_point {zero_point} outside the {np.dtype(dtype)} range")

"""The binary frame: what a device sends for one code, byte for byte.

A frame is a fixed 64-byte little-endian header followed by the codec payload. It is self-describing (a
server with the right bundle can decode it without any side channel, so it works over MQTT 3.1.1 where only
the payload travels) and checked (CRC32C over header and payload). The full specification, with a worked
hex example, is ``docs/wire-format.md``; this module is its reference implementation::

    offset  size  field            type     notes
    ------  ----  ---------------  -------  ------------------------------------------------------------
         0     2  magic            bytes    b"EK" (0x45 0x4B)
         2     1  version          u8       1
         3     1  flags            u8       no flag is defined in version 1: must be 0
         4     1  codec_id         u8       0 raw, 1 zstd, 2 ans (edgekit/codecs/registry.py)
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
``ShapeMismatch``, ``QuantMismatch``, ``UnknownCodec``, ``CorruptPayload``) live in ``edgekit.wire``. Every failure is a :class:`FrameError` subclass with a stable ``code`` (used in dead-letter
messages) and a human ``reason``; nothing else escapes the decoder.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass

import numpy as np

from edgekit.errors import EdgekitError

__all__ = [
    "MAGIC",
    "VERSION",
    "FRAME_VERSIONS",
    "HEADER_SIZE",
    "MAX_NDIM",
    "MAX_ID",
    "KNOWN_FLAGS",
    "DTYPES",
    "Header",
    "pack_frame",
    "unpack_header",
    "frame_bundle_prefix",
    "crc32c",
    "CRC32C_IMPLEMENTATION",
    "FrameError",
    "TruncatedFrame",
    "TrailingBytes",
    "BadMagic",
    "UnsupportedVersion",
    "UnknownFlags",
    "FrameTooLarge",
    "CrcMismatch",
    "BadHeader",
    "UnknownBundle",
    "ShapeMismatch",
    "QuantMismatch",
    "UnknownCodec",
    "CorruptPayload",
    "ERROR_TYPES",
    "dtype_code",
    "check_encodable",
    "Unauthenticated",
    "V2_BYTE",
    "AUTH_FLAG",
    "TS_NS_FLAG",
    "QUANT_FLAG",
    "LONG_REF_FLAG",
    "KNOWN_FLAGS_V2",
    "AUTH_TAG_BYTES",
    "V2_MIN_HEADER",
    "HeaderV2",
    "frame_version_of",
    "pack_frame_v2",
    "split_v2",
    "crc_matches_v2",
    "check_fields_v2",
    "timestamp_ns_v2",
]

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


# ----------------------------------------------------------------------------------------------- errors


class FrameError(EdgekitError):
    """A frame was rejected. ``code`` is stable (dead letters, metrics); ``reason`` says what was wrong."""

    code = "frame-error"

    def __init__(self, reason: str):
        self.reason = reason
        super().__init__(f"{self.code}: {reason}")


class TruncatedFrame(FrameError):
    """Fewer bytes than a header, or than the header's declared payload length."""

    code = "truncated"


class TrailingBytes(FrameError):
    """More bytes than the header declares: a frame is never padded or concatenated."""

    code = "trailing-bytes"


class BadMagic(FrameError):
    """The first two bytes are not ``EK``: this is not an edgekit frame."""

    code = "bad-magic"


class UnsupportedVersion(FrameError):
    """A frame version this decoder does not implement (never guessed)."""

    code = "unsupported-version"


class UnknownFlags(FrameError):
    """A flag bit this version does not define is set."""

    code = "unknown-flags"


class FrameTooLarge(FrameError):
    """A declared size is above the decoder's limit (checked before any allocation)."""

    code = "too-large"


class CrcMismatch(FrameError):
    """The CRC32C of header and payload does not match: the frame was damaged."""

    code = "crc-mismatch"


class BadHeader(FrameError):
    """A header field holds an impossible value (dtype, ndim, dims, raw_len, scale, zero point, seq, time)."""

    code = "bad-header"


class UnknownBundle(FrameError):
    """No loaded bundle has this bundle-id prefix: the server never decodes with the wrong model."""

    code = "unknown-bundle"


class ShapeMismatch(FrameError):
    """The frame's code shape differs from the bundle's code shape."""

    code = "shape-mismatch"


class QuantMismatch(FrameError):
    """The frame's scale or zero point differs from the bundle's wire quantization (``code.wire_quant``):
    the sender's model is not the one the bundle was validated with, so its code would be mis-read."""

    code = "quant-mismatch"


class UnknownCodec(FrameError):
    """A codec id, or codec parameter, the registry or this bundle does not provide."""

    code = "unknown-codec"


class CorruptPayload(FrameError):
    """The payload passed the CRC but does not decode to exactly ``raw_len`` bytes of code."""

    code = "corrupt-payload"


class Unauthenticated(FrameError):
    """A version-2 frame with the ``authenticated`` flag, and this decoder has no key to check its tag."""

    code = "unauthenticated"


#: Every error a decoder may raise, in the order of the checks. The fuzz test asserts nothing else escapes.
ERROR_TYPES: tuple[type[FrameError], ...] = (
    TruncatedFrame,
    BadMagic,
    UnsupportedVersion,
    UnknownFlags,
    FrameTooLarge,
    TrailingBytes,
    CrcMismatch,
    BadHeader,
    UnknownBundle,
    ShapeMismatch,
    QuantMismatch,
    UnknownCodec,
    CorruptPayload,
    Unauthenticated,
)


# ------------------------------------------------------------------------------------------------ CRC32C


def _crc32c_table() -> list[int]:
    """The byte-wise table of the reflected Castagnoli polynomial 0x82F63B78."""
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
        table.append(crc)
    return table


_TABLE = _crc32c_table()


def _crc32c_python(data: bytes, crc: int = 0) -> int:
    """Pure-Python CRC32C: the fallback where the ``google-crc32c`` wheel has no C extension (slow)."""
    crc ^= 0xFFFFFFFF
    table = _TABLE
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


try:  # the C implementation (SSE4.2 / ARMv8 CRC instructions) from Google's wheel
    import google_crc32c as _gcrc

    if _gcrc.implementation != "c":
        raise ImportError("google-crc32c has no C extension here")

    def crc32c(data: bytes, crc: int = 0) -> int:
        """CRC-32C (Castagnoli) of ``data``, continuing from ``crc`` (0 to start)."""
        return _gcrc.extend(crc, data)

    CRC32C_IMPLEMENTATION = "google-crc32c"
except ImportError:  # pragma: no cover - exercised only where the wheel is absent
    crc32c = _crc32c_python
    CRC32C_IMPLEMENTATION = "python"


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


# ------------------------------------------------------------------------------------------ version 2
#
# A compact header for small codes: everything the bundle fixes (dtype, shape, raw length, scale and zero
# point, payload length) comes from the bundle, and what varies per frame is sent in as few bytes as
# stateless decoding allows (docs/wire-format.md, "Version 2", justifies every byte)::
#
#     E2 | flags | codec | ref (1, or 8 with LONG_REF) | boot_id u32 | seq varint | time u32 ms (u64 ns with
#     TS_NS) | [scale f32, zero point i32 with QUANT] | crc32c u32 | payload | [16-byte tag with AUTH]

V2_BYTE = 0xE2  # magic nibble 0xE, version nibble 2; first bytes 0xE0..0xEF are routed to this decoder
AUTH_FLAG = 0x01  # a 16-byte authentication tag follows the payload (issue 11)
TS_NS_FLAG = 0x02  # the time field is the full u64 timestamp_ns instead of u32 milliseconds
QUANT_FLAG = 0x04  # f32 scale and i32 zero point follow the time field (v1's per-frame quantization)
LONG_REF_FLAG = 0x08  # the bundle reference is the 8-byte bundle-id prefix of v1 instead of 1 byte
KNOWN_FLAGS_V2 = AUTH_FLAG | TS_NS_FLAG | QUANT_FLAG | LONG_REF_FLAG
AUTH_TAG_BYTES = 16
MAX_VARINT_BYTES = 9  # 9 x 7 bits = 63 bits: seq < 2**63 by construction
V2_MIN_HEADER = 1 + 1 + 1 + 1 + 4 + 1 + 4 + 4  # byte 0, flags, codec, ref, boot_id, seq, time, crc
_MS_WRAP = 1 << 32  # the millisecond time field wraps every 2**32 ms (49.7 days)


@dataclass(frozen=True)
class HeaderV2:
    """A split, not yet CRC-checked version-2 frame: fields, and where the payload and the tag lie."""

    flags: int
    codec_id: int
    codec_param: int
    bundle_ref: bytes
    boot_id: int
    seq: int
    time: int  # milliseconds mod 2**32, or timestamp_ns with TS_NS_FLAG
    scale: float | None  # None: the bundle's (no QUANT_FLAG)
    zero_point: int | None
    crc: int
    crc_offset: int  # the header is data[:crc_offset + 4]
    payload_end: int  # the payload is data[crc_offset + 4:payload_end]; a tag, if any, follows
    tag: bytes | None  # the AUTH_FLAG trailer, split off before any check of the payload

    @property
    def payload_len(self) -> int:
        return self.payload_end - self.crc_offset - 4


def frame_version_of(data: bytes) -> int:
    """2 for a version-2 frame (first byte ``E2``), else 1: what a publisher labels and counts frames by."""
    return 2 if data[:1] == bytes((V2_BYTE,)) else 1


def _varint(value: int) -> bytes:
    """Unsigned LEB128: 7 bits per byte, low group first, high bit set on every byte but the last."""
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def pack_frame_v2(*, codec_id: int, codec_param: int, bundle_id: bytes, boot_id: int, seq: int,
                  timestamp_ns: int, payload: bytes, full_timestamp: bool = False,
                  quant: tuple[float, int] | None = None, long_ref: bool = False,
                  tag_fn=None) -> bytes:
    """A version-2 frame. ``bundle_id`` is the full id (bytes): its first byte (or 8) is the reference, and
    all of it seeds the CRC. ``tag_fn(frame_so_far) -> 16 bytes`` sets the authenticated flag and appends
    its tag (issue 11's HMAC); ``quant`` sends the scale and zero point (else the bundle's hold)."""
    flags = (TS_NS_FLAG if full_timestamp else 0) | (QUANT_FLAG if quant is not None else 0) \
        | (LONG_REF_FLAG if long_ref else 0) | (AUTH_FLAG if tag_fn is not None else 0)
    parts = [bytes((V2_BYTE, flags, codec_param << 4 | codec_id)), bundle_id[:8 if long_ref else 1],
             boot_id.to_bytes(4, "little"), _varint(seq)]
    parts.append(timestamp_ns.to_bytes(8, "little") if full_timestamp
                 else (timestamp_ns // 1_000_000 % _MS_WRAP).to_bytes(4, "little"))
    if quant is not None:
        parts.append(struct.pack("<fi", *quant))
    head = b"".join(parts)
    crc = crc32c(payload, crc32c(head, crc32c(bundle_id)))
    frame = b"".join((head, crc.to_bytes(4, "little"), payload))
    if tag_fn is None:
        return frame
    tag = bytes(tag_fn(frame))
    if len(tag) != AUTH_TAG_BYTES:
        raise ValueError(f"an authentication tag is {AUTH_TAG_BYTES} bytes, not {len(tag)}")
    return frame + tag


def split_v2(data: bytes) -> HeaderV2:
    """Checks 1-4 of a version-2 frame (length, version, flags, field layout) and its fields, unchecked.

    A seq varint longer than 9 bytes, or not in its shortest form, is ``BadHeader``: every value has exactly
    one encoding, so a frame's bytes are a function of its fields.
    """
    if len(data) < V2_MIN_HEADER:
        raise TruncatedFrame(f"{len(data)} bytes, shorter than the {V2_MIN_HEADER}-byte version-2 header")
    if data[0] != V2_BYTE:
        raise UnsupportedVersion(f"frame version {data[0] & 0x0F} (first byte 0x{data[0]:02x}); this decoder "
                                 "implements version 1 (first bytes 45 4B) and version 2 (first byte E2)")
    flags = data[1]
    if flags & ~KNOWN_FLAGS_V2:
        raise UnknownFlags(f"flags 0x{flags:02x} has bits version 2 does not define")
    ref_len = 8 if flags & LONG_REF_FLAG else 1
    pos = 3 + ref_len
    boot_id = int.from_bytes(data[pos:pos + 4], "little")
    seq, pos = _read_varint(data, pos + 4)
    time_len = 8 if flags & TS_NS_FLAG else 4
    quant_len = 8 if flags & QUANT_FLAG else 0
    tag_len = AUTH_TAG_BYTES if flags & AUTH_FLAG else 0
    crc_offset = pos + time_len + quant_len
    if len(data) < crc_offset + 4 + tag_len:
        raise TruncatedFrame(f"{len(data)} bytes, the version-2 header (flags 0x{flags:02x}) and trailer "
                             f"need {crc_offset + 4 + tag_len}")
    time = int.from_bytes(data[pos:pos + time_len], "little")
    scale, zero_point = struct.unpack_from("<fi", data, pos + time_len) if quant_len else (None, None)
    payload_end = len(data) - tag_len
    return HeaderV2(flags=flags, codec_id=data[2] & 0x0F, codec_param=data[2] >> 4,
                    bundle_ref=bytes(data[3:3 + ref_len]), boot_id=boot_id, seq=seq, time=time, scale=scale,
                    zero_point=zero_point, crc=int.from_bytes(data[crc_offset:crc_offset + 4], "little"),
                    crc_offset=crc_offset, payload_end=payload_end,
                    tag=bytes(data[payload_end:]) if tag_len else None)


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    """The LEB128 value at ``pos`` and the position after it (``TruncatedFrame``/``BadHeader`` as documented)."""
    value = 0
    for i in range(MAX_VARINT_BYTES):
        if pos + i >= len(data):
            raise TruncatedFrame(f"{len(data)} bytes: the seq varint runs past the end")
        byte = data[pos + i]
        value |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            if byte == 0 and i > 0:
                raise BadHeader("seq varint is not in its shortest form (a final 00 byte)")
            return value, pos + i + 1
    raise BadHeader(f"seq varint longer than {MAX_VARINT_BYTES} bytes (seq must be below 2**63)")


def crc_matches_v2(data: bytes, header: HeaderV2, crc_seed: int) -> bool:
    """Whether the CRC-32C of (bundle id ‖ header before the CRC ‖ payload) is the stored one; ``crc_seed`` is
    ``crc32c(full bundle id)``, so a frame routed to another bundle whose reference collides fails here."""
    crc = crc32c(data[header.crc_offset + 4:header.payload_end], crc32c(data[:header.crc_offset], crc_seed))
    return crc == header.crc


def check_fields_v2(header: HeaderV2) -> None:
    """The field checks of a CRC-valid version-2 header (``BadHeader``), as v1's check 8 for the same fields."""
    if header.boot_id == 0:
        raise BadHeader("boot_id 0: a sender draws a random non-zero boot_id at each start")
    if header.flags & TS_NS_FLAG and header.time > MAX_ID:
        raise BadHeader(f"timestamp_ns {header.time} is not below 2**63")
    if header.scale is not None:
        if not (math.isfinite(header.scale) and header.scale > 0):
            raise BadHeader(f"scale {header.scale!r} is not a finite positive number")
        if not -128 <= header.zero_point <= 127:
            raise BadHeader(f"zero_point {header.zero_point} outside the int8 range")


def timestamp_ns_v2(header: HeaderV2, now_ns: int) -> int:
    """The frame's capture time in ns. Milliseconds mod 2**32 are read as the instant nearest the receiver's
    clock ``now_ns`` with those low bits: exact while capture and decoding are less than 2**31 ms (24.8 days)
    apart, which the device's spool (at most 7 days by default) keeps."""
    if header.flags & TS_NS_FLAG:
        return header.time
    now_ms = now_ns // 1_000_000
    ms = now_ms + (header.time - now_ms + _MS_WRAP // 2) % _MS_WRAP - _MS_WRAP // 2
    if not 0 <= ms * 1_000_000 <= MAX_ID:  # as v1's timestamp_ns: stored as a signed 64-bit integer
        raise BadHeader(f"time {header.time} ms (mod 2**32) reads as {ms} ms, outside 0..2**63 ns")
    return ms * 1_000_000

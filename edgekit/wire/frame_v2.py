"""Frame version 2: a compact header for small codes.

Everything the bundle fixes (dtype, shape, raw length, scale and zero point, payload length) comes from the
bundle, and what varies per frame is sent in as few bytes as stateless decoding allows (docs/wire-format.md,
"Version 2", justifies every byte)::

    E2 | flags | codec | ref (1, or 8 with LONG_REF) | boot_id u32 | seq varint | time u32 ms (u64 ns with
    TS_NS) | [scale f32, zero point i32 with QUANT] | [level u8 with LEVEL] | crc32c u32 | payload |
    [16-byte tag with AUTH]
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass

from edgekit.wire.crc import crc32c
from edgekit.wire.errors import BadHeader, TruncatedFrame, UnknownFlags, UnsupportedVersion
from edgekit.wire.frame_v1 import MAX_ID

V2_BYTE = 0xE2  # magic nibble 0xE, version nibble 2; first bytes 0xE0..0xEF are routed to this decoder
AUTH_FLAG = 0x01  # a 16-byte authentication tag follows the payload (issue 11)
TS_NS_FLAG = 0x02  # the time field is the full u64 timestamp_ns instead of u32 milliseconds
QUANT_FLAG = 0x04  # f32 scale and i32 zero point follow the time field (v1's per-frame quantization)
LONG_REF_FLAG = 0x08  # the bundle reference is the 8-byte bundle-id prefix of v1 instead of 1 byte
LEVEL_FLAG = 0x10  # a u8 rate level (index into the bundle's wire.levels) follows: the payload codes fewer channels
KNOWN_FLAGS_V2 = AUTH_FLAG | TS_NS_FLAG | QUANT_FLAG | LONG_REF_FLAG | LEVEL_FLAG
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
    level: int | None  # None: the whole code (no LEVEL_FLAG)
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
                  tag_fn=None, level: int | None = None) -> bytes:
    """A version-2 frame. ``bundle_id`` is the full id (bytes): its first byte (or 8) is the reference, and
    all of it seeds the CRC. ``tag_fn(frame_so_far) -> 16 bytes`` sets the authenticated flag and appends
    its tag (issue 11's HMAC); ``quant`` sends the scale and zero point (else the bundle's hold); ``level``
    (0..255, an index into the bundle's ``wire.levels``) says the payload codes only that level's channels."""
    flags = (TS_NS_FLAG if full_timestamp else 0) | (QUANT_FLAG if quant is not None else 0) \
        | (LONG_REF_FLAG if long_ref else 0) | (AUTH_FLAG if tag_fn is not None else 0) \
        | (LEVEL_FLAG if level is not None else 0)
    parts = [bytes((V2_BYTE, flags, codec_param << 4 | codec_id)), bundle_id[:8 if long_ref else 1],
             boot_id.to_bytes(4, "little"), _varint(seq)]
    parts.append(timestamp_ns.to_bytes(8, "little") if full_timestamp
                 else (timestamp_ns // 1_000_000 % _MS_WRAP).to_bytes(4, "little"))
    if quant is not None:
        parts.append(struct.pack("<fi", *quant))
    if level is not None:
        parts.append(bytes((level,)))
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
    level_len = 1 if flags & LEVEL_FLAG else 0
    tag_len = AUTH_TAG_BYTES if flags & AUTH_FLAG else 0
    crc_offset = pos + time_len + quant_len + level_len
    if len(data) < crc_offset + 4 + tag_len:
        raise TruncatedFrame(f"{len(data)} bytes, the version-2 header (flags 0x{flags:02x}) and trailer "
                             f"need {crc_offset + 4 + tag_len}")
    time = int.from_bytes(data[pos:pos + time_len], "little")
    scale, zero_point = struct.unpack_from("<fi", data, pos + time_len) if quant_len else (None, None)
    payload_end = len(data) - tag_len
    level = data[crc_offset - 1] if level_len else None
    return HeaderV2(flags=flags, codec_id=data[2] & 0x0F, codec_param=data[2] >> 4,
                    bundle_ref=bytes(data[3:3 + ref_len]), boot_id=boot_id, seq=seq, time=time, scale=scale,
                    zero_point=zero_point, level=level, crc=int.from_bytes(data[crc_offset:crc_offset + 4], "little"),
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

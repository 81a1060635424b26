"""The server's side: bytes ─► a checked, routed, decoded :class:`~edgekit.wire.spec.Frame`.

::

    bytes ─► unpack_header (framing, caps, CRC) ─► route by bundle-id prefix ─► the bundle's frame
    versions, shape, scale and zero point, limits, codec id/param ─► codec.decode (bounded by raw_len) ─► Frame
    (first byte E0..EF: split_v2 ─► candidates by 1-byte reference ─► CRC seeded with each full
    bundle id picks the bundle ─► its frame versions, fields, tag, quant, codec ─► codec.decode)

Every rejection is a documented :class:`edgekit.wire.errors.FrameError` subclass, raised in the order of
docs/wire-format.md's checks.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from typing import Any

from edgekit.errors import BundleError
from edgekit.wire.codecs.base import Codec
from edgekit.wire.codecs.registry import BY_ID, BY_NAME
from edgekit.wire.crc import crc32c
from edgekit.wire.errors import (
    CrcMismatch,
    FrameTooLarge,
    LevelNotAllowed,
    QuantMismatch,
    ShapeMismatch,
    Unauthenticated,
    UnknownBundle,
    UnknownCodec,
    VersionNotAllowed,
)
from edgekit.wire.frame_v1 import HEADER_SIZE, Header, unpack_header
from edgekit.wire.frame_v2 import V2_BYTE, HeaderV2, check_fields_v2, crc_matches_v2, split_v2, timestamp_ns_v2
from edgekit.wire.spec import CODE_DTYPE, DEFAULT_CAP, Frame, WireSpec, widen


class _Route:
    """A decoder's view of one bundle: its spec and the codecs it provides, built once."""

    def __init__(self, spec: WireSpec):
        self.spec = spec
        self.codecs = {name: spec.build(name) for name in spec.wire.get("codecs", {}) if name in BY_NAME}
        self.crc_seed = crc32c(spec.full_id)  # a version-2 CRC starts with the full bundle id
        self.versions = spec.frame_versions
        self.level_codecs = {name: [c.for_channels(n) for n in spec.levels] for name, c in self.codecs.items()}

    def check_version(self, version: int) -> None:
        """Refuse a frame version the bundle's ``wire.frame_versions`` does not list (absent: version 1 only):
        the list is the bundle's contract with its receivers, so a frame outside it is never decoded."""
        if version not in self.versions:
            raise VersionNotAllowed(f"frame version {version}, but bundle {self.spec.bundle_id[:16]} allows "
                                    f"{list(self.versions)} (wire.frame_versions)")

    def level_codec(self, name: str, level: int) -> tuple[Codec, tuple[int, ...]]:
        """The codec and code shape of rate ``level`` (``LevelNotAllowed`` when the bundle does not list it):
        built when the bundle loaded, so any listed level decodes without reloading anything."""
        levels = self.spec.levels
        if level >= len(levels):
            listed = f"lists levels 0..{len(levels) - 1} (wire.levels {list(levels)})" if levels else "has no levels"
            raise LevelNotAllowed(f"frame of rate level {level}, but bundle {self.spec.bundle_id[:16]} {listed}")
        return self.level_codecs[name][level], self.spec.level_shape(level)


class WireDecoder:
    """Server side: frame bytes -> :class:`Frame`, routed by bundle-id prefix among the given bundles."""

    def __init__(self, bundles: Iterable[Any] = (), verify_tag: Callable[[str, bytes, bytes], None] | None = None):
        self._routes: dict[bytes, _Route] = {}
        self.verify_tag = verify_tag  # (bundle_id, signed bytes, tag) -> None or a FrameError (issue 11)
        for bundle in bundles:
            self.add(bundle if isinstance(bundle, WireSpec) else WireSpec.from_bundle(bundle))

    def add(self, spec: WireSpec) -> None:
        """Serve frames of one more bundle (``BundleError`` if its prefix collides with a loaded one)."""
        other = self._routes.get(spec.prefix)
        if other is not None and other.spec.bundle_id != spec.bundle_id:
            raise BundleError(f"bundles {other.spec.bundle_id[:16]} and {spec.bundle_id[:16]} share a prefix")
        self._routes[spec.prefix] = _Route(spec)

    def _caps(self) -> tuple[int, int]:
        """The largest payload and raw sizes (bytes) any loaded bundle accepts (checked before routing)."""
        if not self._routes:
            return DEFAULT_CAP, DEFAULT_CAP
        specs = [r.spec for r in self._routes.values()]
        return max(s.max_payload_bytes for s in specs), max(s.max_code_bytes for s in specs)

    def decode(self, data: bytes, now_ns: int | None = None,
               verify_tag: Callable[[str, bytes, bytes], None] | None = None) -> Frame:
        """Decode one frame of either version; raises only :class:`edgekit.wire.errors.FrameError` subclasses.

        ``now_ns`` (default: this host's clock) places a version-2 millisecond time field in time.
        ``verify_tag`` checks this frame's tag instead of the decoder's own (a receiver binds it to the device
        of the topic the frame came on, edgekit/auth/).
        """
        data = bytes(data)
        if data[:1] and data[0] & 0xF0 == V2_BYTE & 0xF0:
            return self._decode_v2(data, time.time_ns() if now_ns is None else now_ns,
                                   verify_tag or self.verify_tag)
        header = unpack_header(data, *self._caps())
        route = self._route(header)
        codec, name = self._codec(route, header)
        code = codec.decode(memoryview(data)[HEADER_SIZE:], header.shape, header.raw_len)
        return Frame(bundle_id=route.spec.bundle_id, boot_id=header.boot_id, seq=header.seq,
                     timestamp_ns=header.timestamp_ns, code=code, scale=header.scale,
                     zero_point=header.zero_point, codec=name, flags=header.flags, frame_bytes=len(data))

    def _route(self, header: Header) -> _Route:
        """The bundle for this frame, checked against its shape and limits."""
        route = self._routes.get(header.bundle_prefix)
        if route is None:
            raise UnknownBundle(f"no loaded bundle has id prefix {header.bundle_prefix.hex()}")
        route.check_version(header.version)
        spec = route.spec
        if header.shape != spec.code_shape:
            raise ShapeMismatch(f"frame code shape {header.shape}, bundle {spec.code_shape}")
        mismatch = spec.quant_mismatch(header.scale, header.zero_point)
        if mismatch:
            raise QuantMismatch(mismatch)
        if header.payload_len > spec.max_payload_bytes or header.raw_len > spec.max_code_bytes:
            raise FrameTooLarge(f"payload {header.payload_len} / raw {header.raw_len} bytes above this bundle's "
                                f"limits {spec.max_payload_bytes} / {spec.max_code_bytes}")
        return route

    @staticmethod
    def _codec(route: _Route, header: Header) -> tuple[Codec, str]:
        """The bundle's codec for the header's id and param."""
        row = BY_ID.get(header.codec_id)
        if row is None:
            raise UnknownCodec(f"codec id {header.codec_id} is not defined")
        codec = route.codecs.get(row.name)
        if codec is None:
            raise UnknownCodec(f"bundle {route.spec.bundle_id[:16]} does not provide codec {row.name!r}")
        if not codec.accepts_param(header.codec_param):
            raise UnknownCodec(f"{row.name} param {header.codec_param}; this bundle's is {codec.param}")
        return codec, row.name

    def _decode_v2(self, data: bytes, now_ns: int, verify_tag: Callable[[str, bytes, bytes], None] | None) -> Frame:
        """Version 2, in the documented order: framing, route, size, CRC, version, fields, tag, quant, codec,
        level, payload (a levelled frame's channels, the rest filled with the zero point)."""
        header = split_v2(data)
        route = self._route_v2(data, header)
        check_fields_v2(header)
        timestamp_ns = timestamp_ns_v2(header, now_ns)  # check 9 too
        if header.tag is not None:
            if verify_tag is None:
                raise Unauthenticated("the frame carries an authentication tag and this decoder has no key")
            verify_tag(route.spec.bundle_id, data[:header.payload_end], header.tag)
        spec = route.spec
        scale, zero_point = self._quant_v2(spec, header)
        codec, name = self._codec(route, header)
        shape = spec.code_shape
        if header.level is not None:
            codec, shape = route.level_codec(name, header.level)
        code = codec.decode(memoryview(data)[header.crc_offset + 4:header.payload_end], shape,
                            math.prod(shape) * CODE_DTYPE.itemsize)
        if header.level is not None:
            code = widen(code, spec.code_shape, zero_point)
        return Frame(bundle_id=spec.bundle_id, boot_id=header.boot_id, seq=header.seq,
                     timestamp_ns=timestamp_ns, code=code, scale=scale, zero_point=zero_point,
                     codec=name, flags=header.flags, frame_bytes=len(data), level=header.level)

    @staticmethod
    def _quant_v2(spec: WireSpec, header: HeaderV2) -> tuple[float, int]:
        """The frame's scale and zero point: the bundle's, or the frame's own (QUANT flag), which must agree."""
        if header.scale is None:
            if spec.wire_quant is None:
                raise QuantMismatch(f"the frame carries no scale and zero point, and bundle {spec.bundle_id[:16]}"
                                    " fixes none")
            return spec.wire_quant
        mismatch = spec.quant_mismatch(header.scale, header.zero_point)
        if mismatch:
            raise QuantMismatch(mismatch)
        return header.scale, header.zero_point

    def _route_v2(self, data: bytes, header: HeaderV2) -> _Route:
        """The bundle whose reference and CRC match: the reference narrows, the CRC (seeded with the full
        bundle id) decides, so bundles whose 1-byte references collide are told apart."""
        ref = header.bundle_ref
        candidates = [r for prefix, r in self._routes.items() if prefix.startswith(ref)]
        if not candidates:
            raise UnknownBundle(f"no loaded bundle has id prefix {ref.hex()}")
        largest = max(r.spec.max_payload_bytes for r in candidates)
        if header.payload_len > largest:
            raise FrameTooLarge(f"payload {header.payload_len} bytes above the limit {largest} of the bundles "
                                f"with reference {ref.hex()}")
        for route in candidates:
            if crc_matches_v2(data, header, route.crc_seed):
                if header.payload_len > route.spec.max_payload_bytes:
                    raise FrameTooLarge(f"payload {header.payload_len} bytes above bundle "
                                        f"{route.spec.bundle_id[:16]}'s limit {route.spec.max_payload_bytes}")
                route.check_version(2)
                return route
        raise CrcMismatch(f"crc32c 0x{header.crc:08x} matches no loaded bundle with reference {ref.hex()}")

"""Frames bound to bundles: the device's encoder, the server's decoder, and dequantization.

Device and server build their codec from the same bundle (``manifest["wire"]`` and the artifacts under
``wire/``), so what one encodes the other decodes bit-exactly::

    device:  int8 code ─► codec.encode ─► pack_frame(header, payload) ─► bytes ─► MQTT
             (version 2, the default where the bundle allows it: pack_frame_v2)
    server:  bytes ─► unpack_header (framing, caps, CRC) ─► route by bundle-id prefix ─► shape, scale and
             zero point, limits, codec id/param ─► codec.decode (bounded by raw_len) ─► Frame ─► dequantize
             (first byte E0..EF: split_v2 ─► candidates by 1-byte reference ─► CRC seeded with each full
             bundle id picks the bundle ─► fields, tag, quant, codec ─► codec.decode)

Both can be built from plain values (bundle id, code shape, wire section, bundle directory, wire
quantization), which is what ``from_bundle`` reads off a :class:`edgekit.bundle.Bundle` (manifest keys
``bundle_id``, ``code.shape``, ``wire``, ``code.wire_quant``). A codec is built, and round-trips a probe code,
when its bundle is loaded: a bad prior or dictionary rejects the bundle then, never frame by frame. Every
rejection of a frame is a documented :class:`edgekit.frame.FrameError` subclass.
"""

from __future__ import annotations

import math
import secrets
import struct
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.bundle_files import read_bundle_file
from edgekit.codecs.base import ArtifactReader, Codec, as_code
from edgekit.codecs.registry import BY_ID, BY_NAME, build_codec, entry
from edgekit.errors import BundleError, EdgekitError
from edgekit.frame import (
    FRAME_VERSIONS,
    HEADER_SIZE,
    MAX_ID,
    V2_BYTE,
    CrcMismatch,
    FrameTooLarge,
    Header,
    HeaderV2,
    QuantMismatch,
    ShapeMismatch,
    Unauthenticated,
    UnknownBundle,
    UnknownCodec,
    check_encodable,
    check_fields_v2,
    crc32c,
    crc_matches_v2,
    dtype_code,
    pack_frame,
    pack_frame_v2,
    split_v2,
    timestamp_ns_v2,
    unpack_header,
)

__all__ = [
    "Frame",
    "WireSpec",
    "WireEncoder",
    "WireDecoder",
    "dequantize",
    "new_boot_id",
    "mqtt5_properties",
    "CONTENT_TYPE",
    "BUNDLE_ID_PROPERTY",
    "PREFIX_BYTES",
]

CONTENT_TYPE = "application/vnd.edgekit.frame"
BUNDLE_ID_PROPERTY = "bundle-id"
PREFIX_BYTES = 8
CODE_DTYPE = np.dtype(np.int8)  # the one code dtype of frame version 1: limits in elements x its itemsize = bytes
#: ``wire.codecs.ans.mode`` in the manifest -> the ans codec_param its prior file's ``mode`` gives
_ANS_MODES = {"per_tensor": 0, "per_channel": 1}
_DEFAULT_CAP = 1 << 20  # cap of a decoder that has no bundle yet: every frame is then UnknownBundle


@dataclass(frozen=True)
class Frame:
    """One decoded frame. ``bundle_id`` is the full id of the bundle it was routed to."""

    bundle_id: str
    boot_id: int
    seq: int
    timestamp_ns: int
    code: np.ndarray
    scale: float
    zero_point: int
    codec: str
    flags: int = 0
    frame_bytes: int = 0

    def dequantize(self) -> np.ndarray:
        """The float32 code the server half takes (see :func:`dequantize`)."""
        return dequantize(self.code, self.scale, self.zero_point)


def dequantize(code: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """``(code - zero_point) * scale`` in float32: the one dequantization, shared by server and parity check.

    The scale is rounded to float32 first, as the frame carries it, so the device-side parity check and the
    server compute the same floats.
    """
    return (np.asarray(code).astype(np.float32) - np.float32(zero_point)) * np.float32(scale)


def new_boot_id() -> int:
    """A random non-zero 32-bit ``boot_id`` for an agent start."""
    return secrets.randbits(32) or 1


def mqtt5_properties(bundle_id: str) -> tuple[str, list[tuple[str, str]]]:
    """MQTT 5 content type and user properties for a frame (MQTT 3.1.1 needs neither: all is in the payload)."""
    return CONTENT_TYPE, [(BUNDLE_ID_PROPERTY, bundle_id[: 2 * PREFIX_BYTES])]


@dataclass
class WireSpec:
    """What frames need from a bundle: id, code shape, the manifest's ``wire`` section, its directory, and
    the wire quantization (scale, zero point) every frame's header must carry.

    ``wire_quant`` is None only for a spec made without a bundle (convert's codec fitting, codec tests):
    then the header's scale and zero point are not compared with anything. ``reader`` reads codec artifacts:
    a loaded bundle's :meth:`~edgekit.bundle.Bundle.read` (hash-checked against the manifest); without one,
    files under ``base_dir`` are read with the same path, type and size checks (no manifest to hash against).
    """

    bundle_id: str
    code_shape: tuple[int, ...]
    wire: dict[str, Any]
    base_dir: Path | None = None
    wire_quant: tuple[float, int] | None = None
    reader: ArtifactReader | None = None
    prefix: bytes = field(init=False)

    def __post_init__(self) -> None:
        self.code_shape = tuple(int(d) for d in self.code_shape)
        try:
            self.prefix = bytes.fromhex(self.bundle_id)[:PREFIX_BYTES]
        except ValueError:
            raise BundleError(f"bundle id {self.bundle_id!r} is not hex") from None
        if len(self.prefix) != PREFIX_BYTES:
            raise BundleError(f"bundle id {self.bundle_id!r} is shorter than {PREFIX_BYTES} bytes")
        if self.wire_quant is not None:  # as a header carries them: f32 scale, i32 zero point
            self.wire_quant = (float(np.float32(self.wire_quant[0])), int(self.wire_quant[1]))
        limits = self.wire.get("limits")
        if not (isinstance(limits, dict) and all(type(limits.get(k)) is int and limits[k] > 0
                                                 for k in ("max_code_elements", "max_payload_bytes"))):
            raise BundleError(f"bundle {self.bundle_id[:16]}: wire.limits needs positive integers "
                              "max_code_elements and max_payload_bytes", "re-create the bundle with edgekit convert")

        versions = self.wire.get("frame_versions", [1])  # a bundle older than version 2 allows version 1 only
        if not (isinstance(versions, list) and set(versions) & set(FRAME_VERSIONS)):
            raise BundleError(f"bundle {self.bundle_id[:16]}: wire.frame_versions is {versions!r}; this edgekit "
                              f"sends and reads frame versions {list(FRAME_VERSIONS)}",
                              "update edgekit, or re-create the bundle with this edgekit's convert")

    @property
    def frame_versions(self) -> tuple[int, ...]:
        """The frame versions the bundle allows that this edgekit speaks (``wire.frame_versions``; absent:
        version 1 only, so a bundle made before version 2 keeps working with old and new receivers)."""
        return tuple(v for v in FRAME_VERSIONS if v in self.wire.get("frame_versions", [1]))

    @property
    def full_id(self) -> bytes:
        """The whole bundle id as bytes: a version-2 frame's CRC starts with it."""
        return bytes.fromhex(self.bundle_id)

    @classmethod
    def from_bundle(cls, bundle: Any) -> WireSpec:
        """Read ``bundle_id``, ``code.shape``, ``wire``, ``code.wire_quant`` and ``path`` off a loaded Bundle."""
        quant = bundle.manifest["code"]["wire_quant"]
        return cls(bundle.bundle_id, tuple(bundle.code.shape), bundle.wire, Path(bundle.path),
                   (quant["scale"], quant["zero_point"]), bundle.read)

    @property
    def max_code_bytes(self) -> int:
        """The largest ``raw_len``: ``limits.max_code_elements`` x the code dtype's itemsize (bytes)."""
        return self.wire["limits"]["max_code_elements"] * CODE_DTYPE.itemsize

    @property
    def max_payload_bytes(self) -> int:
        """``limits.max_payload_bytes``."""
        return self.wire["limits"]["max_payload_bytes"]

    def quant_mismatch(self, scale: float, zero_point: int) -> str | None:
        """Why a header's (f32) ``scale`` and ``zero_point`` differ from the bundle's, or None when they agree."""
        if self.wire_quant is None or (float(np.float32(scale)), int(zero_point)) == self.wire_quant:
            return None
        return (f"scale {scale!r} / zero point {zero_point}, but bundle {self.bundle_id[:16]}'s code.wire_quant "
                f"is {self.wire_quant[0]!r} / {self.wire_quant[1]}")

    def build(self, name: str) -> Codec:
        """Codec ``name`` from this bundle (``BundleError`` if the bundle does not provide it)."""
        codecs = self.wire.get("codecs", {})
        if name not in codecs:
            raise BundleError(f"bundle {self.bundle_id[:16]} has no codec {name!r}",
                              f"use one of: {', '.join(codecs) or 'none'}")
        if name not in BY_NAME:
            raise BundleError(f"bundle {self.bundle_id[:16]} names codec {name!r}, which this edgekit does not know",
                              f"known: {', '.join(BY_NAME)}")
        try:
            codec = build_codec(name, codecs[name], self._artifact_reader())
        except EdgekitError:  # already one line with its fix (a bad prior, a codec this device cannot run)
            raise
        except Exception as err:  # an unreadable file, or a dictionary libzstd refuses: the bundle, not a frame
            raise BundleError(f"bundle {self.bundle_id[:16]}: codec {name!r} cannot be built from its artifact: "
                              f"{err}", "re-create the bundle with edgekit convert") from None
        try:
            codec.check_shape(self.code_shape)
        except ValueError as err:
            raise BundleError(f"codec {name!r} does not fit the bundle's code: {err}") from None
        self._check_declared_mode(name, codecs[name], codec)
        self._probe(name, codec)
        return codec

    def _artifact_reader(self) -> ArtifactReader | None:
        """The bundle's checked reader, or the same checks under ``base_dir`` (None: no artifacts to read)."""
        if self.reader is not None or self.base_dir is None:
            return self.reader
        base_dir = self.base_dir
        return lambda rel: read_bundle_file(base_dir, rel)

    def _check_declared_mode(self, name: str, params: dict[str, Any], codec: Codec) -> None:
        """The ans prior file's ``mode`` decides; the manifest's ``mode`` is a copy and must agree with it."""
        if name == "ans" and "mode" in params and _ANS_MODES.get(params["mode"]) != codec.param:
            raise BundleError(f"bundle {self.bundle_id[:16]}: wire.codecs.ans.mode is {params['mode']!r} but its "
                              "prior file says otherwise", "re-create the bundle with edgekit convert")

    def _probe(self, name: str, codec: Codec) -> None:
        """Round-trip an all-zero code, so that an artifact that parses but cannot code (libzstd reads a
        dictionary's tables lazily) rejects the bundle now rather than every frame later."""
        probe = np.zeros(self.code_shape, dtype=CODE_DTYPE)
        try:
            ok = np.array_equal(codec.decode(codec.encode(probe), self.code_shape, probe.nbytes), probe)
        except Exception as err:  # libzstd's ZstdError, a CorruptPayload, ...: all mean a bad artifact
            ok, why = False, f"{type(err).__name__}: {err}"
        else:
            why = "the probe code does not round-trip"
        if not ok:
            raise BundleError(f"bundle {self.bundle_id[:16]}: codec {name!r} fails on its own artifact ({why})",
                              "re-create the bundle with edgekit convert")


class WireEncoder:
    """Device side: code -> frame bytes with the bundle's codec (default: the bundle's ``default_codec``)."""

    def __init__(self, bundle_id: str, code_shape: tuple[int, ...], wire: dict[str, Any],
                 base_dir: Path | str | None = None, codec: str | None = None,
                 wire_quant: tuple[float, int] | None = None, reader: ArtifactReader | None = None,
                 frame_version: int | None = None):
        self.spec = WireSpec(bundle_id, code_shape, wire, Path(base_dir) if base_dir else None, wire_quant, reader)
        self.frame_version = frame_version or max(self.spec.frame_versions)
        if self.frame_version not in self.spec.frame_versions:
            raise BundleError(f"bundle {bundle_id[:16]} does not allow frame version {self.frame_version}",
                              f"use one of {list(self.spec.frame_versions)} (wire.frame_versions)")
        self.codec_name = codec or wire["default_codec"]
        self.codec = self.spec.build(self.codec_name)
        self._codec_id = entry(self.codec_name).codec_id
        self._dtype = dtype_code(np.int8)
        #: frame bytes -> 16-byte tag (``edgekit.auth.seal``): when set, version-2 frames carry ``AUTH`` and it
        self.sealer: Callable[[bytes], bytes] | None = None

    @classmethod
    def from_bundle(cls, bundle: Any, codec: str | None = None, frame_version: int | None = None) -> WireEncoder:
        """The encoder for a loaded Bundle (frames of the newest version it allows, unless told)."""
        spec = WireSpec.from_bundle(bundle)
        return cls(spec.bundle_id, spec.code_shape, spec.wire, spec.base_dir, codec, spec.wire_quant, spec.reader,
                   frame_version)

    def encode(self, code_int8: np.ndarray, scale: float, zero_point: int, seq: int, boot_id: int,
               timestamp_ns: int) -> bytes:
        """One frame. ``code_int8`` has the bundle's code shape (a leading batch axis of 1 is accepted).

        ``ValueError`` for what the server would reject (shape, dtype, scale, zero point, field ranges).
        """
        code = as_code(code_int8)
        if code.shape != self.spec.code_shape and code.shape != (1, *self.spec.code_shape):
            raise ValueError(f"code shape {code.shape}, the bundle's is {self.spec.code_shape}")
        code = code.reshape(self.spec.code_shape)
        with np.errstate(over="ignore"):
            scale32 = float(np.float32(scale))  # as the frame carries it; inf is refused below
        check_encodable(code.shape, scale32, int(zero_point), np.int8)
        mismatch = self.spec.quant_mismatch(scale32, int(zero_point))
        if mismatch:
            raise ValueError(mismatch)
        if seq > MAX_ID or timestamp_ns > MAX_ID:
            raise ValueError(f"seq {seq} / timestamp_ns {timestamp_ns}: frames carry values below 2**63")
        if boot_id == 0:
            raise ValueError("boot_id 0 is reserved: use new_boot_id()")
        payload = self.codec.encode(code)
        if len(payload) > self.spec.max_payload_bytes:
            raise ValueError(f"payload {len(payload)} bytes above the bundle limit {self.spec.max_payload_bytes}")
        if self.frame_version == 2:
            return self._pack_v2(payload, scale32, int(zero_point), seq, boot_id, timestamp_ns)
        if self.sealer is not None:
            raise ValueError("authenticated frames need frame version 2; this encoder makes version 1")
        header = Header(codec_id=self._codec_id, codec_param=self.codec.param, dtype=self._dtype,
                        shape=code.shape, bundle_prefix=self.spec.prefix, seq=seq, timestamp_ns=timestamp_ns,
                        boot_id=boot_id, scale=scale32, zero_point=int(zero_point), raw_len=code.size,
                        payload_len=len(payload))
        try:
            return pack_frame(header, payload)
        except struct.error as err:
            raise ValueError(f"frame field out of range (seq/boot_id/timestamp_ns): {err}") from None


    def _pack_v2(self, payload: bytes, scale: float, zero_point: int, seq: int, boot_id: int,
                 timestamp_ns: int) -> bytes:
        """A version-2 frame: the scale and zero point travel only when no bundle quantization fixes them."""
        quant = None if self.spec.wire_quant is not None else (scale, zero_point)
        return pack_frame_v2(codec_id=self._codec_id, codec_param=self.codec.param, bundle_id=self.spec.full_id,
                             boot_id=boot_id, seq=seq, timestamp_ns=timestamp_ns, payload=payload, quant=quant,
                             tag_fn=self.sealer)


class _Route:
    """A decoder's view of one bundle: its spec and the codecs it provides, built once."""

    def __init__(self, spec: WireSpec):
        self.spec = spec
        self.codecs = {name: spec.build(name) for name in spec.wire.get("codecs", {}) if name in BY_NAME}
        self.crc_seed = crc32c(spec.full_id)  # a version-2 CRC starts with the full bundle id


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
            return _DEFAULT_CAP, _DEFAULT_CAP
        specs = [r.spec for r in self._routes.values()]
        return max(s.max_payload_bytes for s in specs), max(s.max_code_bytes for s in specs)

    def decode(self, data: bytes, now_ns: int | None = None,
               verify_tag: Callable[[str, bytes, bytes], None] | None = None) -> Frame:
        """Decode one frame of either version; raises only :class:`edgekit.frame.FrameError` subclasses.

        ``now_ns`` (default: this host's clock) places a version-2 millisecond time field in time.
        ``verify_tag`` checks this frame's tag instead of the decoder's own (a receiver binds it to the device
        of the topic the frame came on, edgekit/auth.py).
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
        """Version 2, in the documented order: framing, route, size, CRC, fields, tag, quant, codec, payload."""
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
        raw_len = math.prod(spec.code_shape) * CODE_DTYPE.itemsize
        code = codec.decode(memoryview(data)[header.crc_offset + 4:header.payload_end], spec.code_shape, raw_len)
        return Frame(bundle_id=spec.bundle_id, boot_id=header.boot_id, seq=header.seq,
                     timestamp_ns=timestamp_ns, code=code, scale=scale, zero_point=zero_point,
                     codec=name, flags=header.flags, frame_bytes=len(data))

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
                return route
        raise CrcMismatch(f"crc32c 0x{header.crc:08x} matches no loaded bundle with reference {ref.hex()}")

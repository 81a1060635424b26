"""What a bundle fixes about its frames (:class:`WireSpec`), the decoded :class:`Frame`, and dequantization.

Device and server build their codec from the same bundle (``manifest["wire"]`` and the artifacts under
``wire/``), so what one encodes the other decodes bit-exactly::

    device:  int8 code ─► codec.encode ─► pack_frame(header, payload) ─► bytes ─► MQTT
             (version 2, the default where the bundle allows it: pack_frame_v2)
    server:  bytes ─► unpack_header (framing, caps, CRC) ─► route by bundle-id prefix ─► frame version
             allowed (wire.frame_versions), shape, scale and zero point, limits, codec id/param ─► codec.decode
             (bounded by raw_len) ─► Frame ─► dequantize
             (first byte E0..EF: split_v2 ─► candidates by 1-byte reference ─► CRC seeded with each full
             bundle id picks the bundle ─► version allowed, fields, tag, quant, codec ─► codec.decode)

Both can be built from plain values (bundle id, code shape, wire section, bundle directory, wire
quantization), which is what ``from_bundle`` reads off a :class:`edgekit.bundle.manifest.Bundle` (manifest keys
``bundle_id``, ``code.shape``, ``wire``, ``code.wire_quant``). A codec is built, and round-trips a probe code,
when its bundle is loaded: a bad prior or dictionary rejects the bundle then, never frame by frame. Every
rejection of a frame is a documented :class:`edgekit.wire.errors.FrameError` subclass.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.bundle.files import read_bundle_file
from edgekit.errors import BundleError, EdgekitError
from edgekit.wire.codecs.base import ArtifactReader, Codec
from edgekit.wire.codecs.registry import BY_NAME, build_codec
from edgekit.wire.frame_v1 import FRAME_VERSIONS

CONTENT_TYPE = "application/vnd.edgekit.frame"
BUNDLE_ID_PROPERTY = "bundle-id"
PREFIX_BYTES = 8
CODE_DTYPE = np.dtype(np.int8)  # the one code dtype of frame version 1: limits in elements x its itemsize = bytes
#: ``wire.codecs.ans.mode`` in the manifest -> the ans codec_param its prior file's ``mode`` gives
_ANS_MODES = {"per_tensor": 0, "per_channel": 1}
DEFAULT_CAP = 1 << 20  # cap of a decoder that has no bundle yet: every frame is then UnknownBundle


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
    level: int | None = None  # the rate level it carried (an index into wire.levels), None: the whole code

    def dequantize(self) -> np.ndarray:
        """The float32 code the server half takes (see :func:`dequantize`)."""
        return dequantize(self.code, self.scale, self.zero_point)


def dequantize(code: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """``(code - zero_point) * scale`` in float32: the one dequantization, shared by server and parity check.

    The scale is rounded to float32 first, as the frame carries it, so the device-side parity check and the
    server compute the same floats.
    """
    return (np.asarray(code).astype(np.float32) - np.float32(zero_point)) * np.float32(scale)


def widen(code: np.ndarray, shape: tuple[int, ...], zero_point: int) -> np.ndarray:
    """A rate level's code (its first channels) as the whole code of ``shape``: the channels it left out hold
    ``zero_point``, the level that dequantizes to 0.0, which is what a nested decoder saw for them in training."""
    whole = np.full(shape, zero_point, dtype=code.dtype)
    whole[..., :code.shape[-1]] = code
    return whole


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
    a loaded bundle's :meth:`~edgekit.bundle.manifest.Bundle.read` (hash-checked against the manifest); without one,
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
        self._check_levels()

    def _check_levels(self) -> None:
        """``wire.levels``: ascending channel counts of the code's last axis (at most 256 of them, each from 1 to
        the code's channels), the rate levels a nested code's frames may carry (docs/wire-format.md, Levels)."""
        levels = self.wire.get("levels")
        if levels is None:
            return
        channels = self.code_shape[-1]
        if not (isinstance(levels, list) and 1 <= len(levels) <= 256 and all(type(c) is int for c in levels)
                and all(a < b for a, b in zip([0, *levels], levels)) and levels[-1] <= channels):
            raise BundleError(f"bundle {self.bundle_id[:16]}: wire.levels is {levels!r}, not ascending channel "
                              f"counts from 1 to the code's {channels}", "re-create the bundle with edgekit convert")

    @property
    def levels(self) -> tuple[int, ...]:
        """The channel count of each rate level (``wire.levels``); empty for a bundle without levels."""
        return tuple(self.wire.get("levels") or ())

    def level_shape(self, level: int) -> tuple[int, ...]:
        """The code shape a frame of rate ``level`` carries: the first ``levels[level]`` channels."""
        return (*self.code_shape[:-1], self.levels[level])

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

"""The device's side: an int8 code ─► codec payload ─► a frame (version 2 where the bundle allows it).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.errors import BundleError
from edgekit.wire.codecs.base import ArtifactReader, Codec, as_code
from edgekit.wire.codecs.registry import entry
from edgekit.wire.frame_v1 import MAX_ID, Header, check_encodable, dtype_code, pack_frame
from edgekit.wire.frame_v2 import pack_frame_v2
from edgekit.wire.spec import WireSpec


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
        self._level_codecs = [self.codec.for_channels(c) for c in self.spec.levels]
        #: frame bytes -> 16-byte tag (``edgekit.auth.seal``): when set, version-2 frames carry ``AUTH`` and it
        self.sealer: Callable[[bytes], bytes] | None = None

    @classmethod
    def from_bundle(cls, bundle: Any, codec: str | None = None, frame_version: int | None = None) -> WireEncoder:
        """The encoder for a loaded Bundle (frames of the newest version it allows, unless told)."""
        spec = WireSpec.from_bundle(bundle)
        return cls(spec.bundle_id, spec.code_shape, spec.wire, spec.base_dir, codec, spec.wire_quant, spec.reader,
                   frame_version)

    def encode(self, code_int8: np.ndarray, scale: float, zero_point: int, seq: int, boot_id: int,
               timestamp_ns: int, level: int | None = None) -> bytes:
        """One frame. ``code_int8`` has the bundle's code shape (a leading batch axis of 1 is accepted);
        ``level`` (an index into the bundle's ``wire.levels``) sends only that rate level's first channels.

        ``ValueError`` for what the server would reject (shape, dtype, scale, zero point, field ranges, level).
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
        payload = self._level_codec(level).encode(code if level is None else code[..., :self.spec.levels[level]])
        if len(payload) > self.spec.max_payload_bytes:
            raise ValueError(f"payload {len(payload)} bytes above the bundle limit {self.spec.max_payload_bytes}")
        if self.frame_version == 2:
            return self._pack_v2(payload, scale32, int(zero_point), seq, boot_id, timestamp_ns, level)
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


    def _level_codec(self, level: int | None) -> Codec:
        """The codec of rate ``level`` (None: the whole code); ``ValueError`` for a level the bundle does not list
        or a version-1 frame, which has no level field."""
        if level is None:
            return self.codec
        if not 0 <= level < len(self._level_codecs):
            raise ValueError(f"rate level {level}: bundle {self.spec.bundle_id[:16]} lists "
                             f"{len(self._level_codecs)} levels (wire.levels {list(self.spec.levels)})")
        if self.frame_version != 2:
            raise ValueError("rate levels need frame version 2; this encoder makes version 1")
        return self._level_codecs[level]

    def _pack_v2(self, payload: bytes, scale: float, zero_point: int, seq: int, boot_id: int,
                 timestamp_ns: int, level: int | None = None) -> bytes:
        """A version-2 frame: the scale and zero point travel only when no bundle quantization fixes them."""
        quant = None if self.spec.wire_quant is not None else (scale, zero_point)
        return pack_frame_v2(codec_id=self._codec_id, codec_param=self.codec.param, bundle_id=self.spec.full_id,
                             boot_id=boot_id, seq=seq, timestamp_ns=timestamp_ns, payload=payload, quant=quant,
                             tag_fn=self.sealer, level=level)

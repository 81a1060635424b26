"""Helpers shared by the wire tests (and the fuzz target): real codes from Fashion-MNIST, fitted specs, CRC fix-up."""

from __future__ import annotations

import secrets
import struct
from pathlib import Path

import numpy as np

from support.frames import recrc_v2

from edgekit.wire.codecs import fit_codecs
from edgekit.wire.crc import crc32c
from edgekit.wire.frame_v1 import HEADER_SIZE
from edgekit.wire.spec import WireSpec


def codes_774(images: np.ndarray) -> np.ndarray:
    """2x2 mean pool to 14x14, space-to-depth to (7, 7, 4), quantized to int8 0..127 (scale 1/127)."""
    x = images.astype(np.float32).reshape(-1, 14, 2, 14, 2).mean((2, 4)) / 255
    x = x.reshape(-1, 7, 2, 7, 2).transpose(0, 1, 3, 2, 4).reshape(-1, 7, 7, 4)
    return np.clip(np.round(x * 127), -128, 127).astype(np.int8)


def codes_16(images: np.ndarray) -> np.ndarray:
    """7x7 mean pool to a 4x4 = (16,) vector, quantized to the full int8 range (zero point -128)."""
    x = images.astype(np.float32).reshape(-1, 4, 7, 4, 7).mean((2, 4)).reshape(-1, 16) / 255
    return np.clip(np.round(x * 255) - 128, -128, 127).astype(np.int8)


def make_spec(root: Path, calib: np.ndarray, heldout: np.ndarray, codec: str | None = None) -> WireSpec:
    """A bundle directory holding only ``wire/``, fitted on ``calib``, and its WireSpec (random bundle id).

    The spec allows frame version 1 only, so the version-1 tests see 64-byte headers; :func:`as_v2` widens it.
    """
    section, report = fit_codecs(calib, heldout, root / "wire", codec=codec)
    spec = WireSpec(secrets.token_hex(32), calib.shape[1:], {**section, "frame_versions": [1]}, root)
    spec.report = report  # type: ignore[attr-defined]
    return spec


def as_v2(spec: WireSpec, quant: tuple[float, int] | None = None) -> WireSpec:
    """The same bundle allowing frame versions 1 and 2 (as convert writes it), with a wire quantization."""
    return WireSpec(spec.bundle_id, spec.code_shape, {**spec.wire, "frame_versions": [1, 2]}, spec.base_dir,
                    quant or spec.wire_quant)


def recrc(frame: bytes) -> bytes:
    """The frame with its CRC recomputed, so a test reaches the checks after the CRC."""
    body = bytes(frame)
    crc = crc32c(body[HEADER_SIZE:], crc32c(body[:60]))
    return body[:60] + crc.to_bytes(4, "little") + body[HEADER_SIZE:]


# ------------------------------------------------------------------------------------------------ fuzzing

_INTERESTING = (0, 1, 0x7F, 0x80, 0xFF, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF)
_FIELDS = ((2, "<B"), (3, "<B"), (4, "<B"), (5, "<B"), (6, "<B"), (7, "<B"), (36, "<f"), (40, "<i"),
           (44, "<H"), (46, "<H"), (48, "<H"), (50, "<H"), (52, "<I"), (56, "<I"))


def _field_value(rng: np.random.Generator, fmt: str) -> int | float:
    """An edge-case or random value that fits the field's format."""
    if fmt == "<f":
        return float(rng.choice([0.0, -1.0, float("nan"), float("inf"), 1e-45, 3e38, rng.normal()]))
    bits = struct.calcsize(fmt) * 8
    value = int(rng.choice(_INTERESTING)) if rng.random() < 0.6 else int(rng.integers(0, 1 << bits))
    value &= (1 << bits) - 1
    return value - (1 << bits) if fmt == "<i" and value >= 1 << 31 else value


def _mutate_v2_fields(rng: np.random.Generator, data: bytearray, other: bytes, kind: int) -> bytearray:
    """Kinds 6-8 for a version-2 frame, which has no fixed offsets or length field: a header byte set to
    an edge value, the payload replaced, or spliced after another frame's header."""
    from edgekit.wire.errors import FrameError
    from edgekit.wire.frame_v2 import split_v2

    try:
        end = split_v2(bytes(data)).crc_offset + 4
    except FrameError:
        end = min(len(data), 17)
    if kind == 6:
        pos = int(rng.integers(end))
        data[pos] = int(rng.choice([0, 1, 0x7F, 0x80, 0xFF, 0xE2, 0x0F, int(rng.integers(256))]))
        return data
    if kind == 7:
        return data[:end] + bytearray(rng.integers(0, 256, int(rng.integers(0, 300)), dtype=np.uint8).tobytes())
    return data[:end] + bytearray(other[-int(rng.integers(1, len(other))):])


def mutate(rng: np.random.Generator, frame: bytes, other: bytes, full_id: bytes | None = None) -> bytes:
    """One random mutation of ``frame`` (``other`` is a second valid frame, for splicing; ``full_id`` the
    bundle id a version-2 ``frame`` belongs to, for a valid CRC after the mutation)."""
    data = bytearray(frame)
    kind = int(rng.integers(9))
    pos = int(rng.integers(len(data)))
    if full_id is not None and kind >= 6:
        out = bytes(_mutate_v2_fields(rng, data, other, kind))
        return recrc_v2(out, full_id) if rng.random() < 0.5 else out
    if kind == 0:  # one bit
        data[pos] ^= 1 << int(rng.integers(8))
    elif kind == 1:  # a few bits anywhere
        for p in rng.integers(0, len(data), int(rng.integers(2, 9))):
            data[int(p)] ^= 1 << int(rng.integers(8))
    elif kind == 2:  # a byte set to a random value
        data[pos] = int(rng.integers(256))
    elif kind == 3:  # truncated
        del data[pos:]
    elif kind == 4:  # extended
        data += rng.integers(0, 256, int(rng.integers(1, 17)), dtype=np.uint8).tobytes()
    elif kind == 5:  # bytes inserted or deleted in the middle
        if rng.random() < 0.5:
            data[pos:pos] = rng.integers(0, 256, int(rng.integers(1, 9)), dtype=np.uint8).tobytes()
        else:
            del data[pos:pos + int(rng.integers(1, 9))]
    elif kind == 6:  # a header field set to an edge value
        offset, fmt = _FIELDS[int(rng.integers(len(_FIELDS)))]
        struct.pack_into(fmt, data, offset, _field_value(rng, fmt))
    elif kind == 7:  # the payload replaced by random bytes, its length field kept consistent
        payload = rng.integers(0, 256, int(rng.integers(0, 300)), dtype=np.uint8).tobytes()
        data = data[:HEADER_SIZE] + bytearray(payload)
        struct.pack_into("<I", data, 56, len(payload))
    else:  # header of one frame, payload of another
        tail = other[HEADER_SIZE:] if other[0] == 0x45 else other[17:]  # a version-2 frame: past its header
        data = data[:HEADER_SIZE] + bytearray(tail)
        struct.pack_into("<I", data, 56, len(tail))
    out = bytes(data)
    if full_id is not None:
        return recrc_v2(out, full_id) if rng.random() < 0.5 else out
    return recrc(out) if len(out) >= HEADER_SIZE and rng.random() < 0.5 else out


def fuzz(decoder, frames: list[bytes], shapes: set[tuple[int, ...]], mutations: int, seed: int = 0,
         ids: list[bytes | None] | None = None) -> dict:
    """Decode ``mutations`` mutated frames; count outcomes by error code. Anything else is re-raised.

    Half of the mutations get a valid CRC, so the checks behind the CRC (routing, fields, codecs) are
    fuzzed too, not just the checksum. ``ids[i]`` is the full bundle id of ``frames[i]`` when it is a
    version-2 frame (its CRC starts with it), None for version 1.
    """
    from edgekit.wire.errors import FrameError

    ids = ids or [None] * len(frames)
    rng = np.random.default_rng(seed)
    counts: dict[str, int] = {}
    picks = rng.integers(0, len(frames), size=(mutations, 2))
    now_ns = 1_760_000_000_000_000_000
    for a, b in picks:
        data = mutate(rng, frames[a], frames[b], ids[a])
        try:
            frame = decoder.decode(data, now_ns=now_ns)
        except FrameError as err:
            if not err.reason:
                raise AssertionError(f"{err.code} without a reason for {data.hex()}") from err
            counts[err.code] = counts.get(err.code, 0) + 1
            continue
        except Exception as err:
            raise AssertionError(f"undocumented {type(err).__name__}: {err} for frame {data.hex()}") from err
        if frame.code.dtype != np.int8 or frame.code.shape not in shapes:
            raise AssertionError(f"decoded a malformed code from {data.hex()}")
        counts["decoded"] = counts.get("decoded", 0) + 1
    return counts


# ------------------------------------------------------------------------------------- docs worked example

EXAMPLE_BUNDLE_ID = "5e0c2b9f6a3d41e8" + "7b" * 24
EXAMPLE_CODE = np.array([0, 1, -1, 2, 0, 0, -128, 127], dtype=np.int8).reshape(2, 2, 2)
EXAMPLE_FIELDS = dict(scale=0.05, zero_point=-3, seq=42, boot_id=0x1234ABCD, timestamp_ns=1_718_000_000_123_456_789)
#: per-tensor prior over -1..2 plus the escape: powers of two, so the example can be checked by hand
EXAMPLE_PRIOR = {"format": "edgekit-ans-prior", "version": 1, "precision": 24, "lo": -1, "hi": 2,
                 "mode": "per_tensor", "freqs": [[1 << 22, 1 << 23, 1 << 21, 1 << 20, 1 << 20]]}
EXAMPLE_WIRE = {"frame_version": 1, "default_codec": "raw",
                "codecs": {"raw": {}, "ans": {"prior": "wire/ans_prior.json", "mode": "per_tensor"}},
                "limits": {"max_code_elements": 8, "max_payload_bytes": 96}}


def example_frames(root: Path) -> dict[str, bytes]:
    """The frames of docs/wire-format.md's worked examples (raw and ans), built by the real encoder."""
    import json

    from edgekit.wire.encoder import WireEncoder

    (root / "wire").mkdir(parents=True, exist_ok=True)
    (root / "wire" / "ans_prior.json").write_text(json.dumps(EXAMPLE_PRIOR))
    wire = EXAMPLE_WIRE
    out = {}
    for codec in ("raw", "ans"):
        enc = WireEncoder(EXAMPLE_BUNDLE_ID, (2, 2, 2), wire, root, codec)
        fields = dict(EXAMPLE_FIELDS)
        out[codec] = enc.encode(EXAMPLE_CODE, fields.pop("scale"), fields.pop("zero_point"), **fields)
    return out


def hexdump(data: bytes) -> str:
    """``xxd``-style: offset, 16 bytes in hex per line."""
    return "\n".join(f"{i:04x}: " + " ".join(f"{b:02x}" for b in data[i:i + 16]) for i in range(0, len(data), 16))


EXAMPLE_QUANT = (0.05, -3)
EXAMPLE_NOW_NS = 1_718_000_005_000_000_000  # the receiver's clock in the version-2 example: 5 s after capture


def example_frames_v2(root: Path) -> dict[str, bytes]:
    """The version-2 worked examples (raw and ans): the same code and fields, the quantization in the bundle."""
    from edgekit.wire.encoder import WireEncoder

    example_frames(root)  # writes the prior
    wire = {**EXAMPLE_WIRE, "frame_versions": [1, 2]}
    out = {}
    for codec in ("raw", "ans"):
        enc = WireEncoder(EXAMPLE_BUNDLE_ID, (2, 2, 2), wire, root, codec, EXAMPLE_QUANT)
        fields = dict(EXAMPLE_FIELDS)
        out[codec] = enc.encode(EXAMPLE_CODE, fields.pop("scale"), fields.pop("zero_point"), **fields)
    return out


# ------------------------------------------------------------------------- docs test vectors, version 2

VECTOR_KEY = bytes(range(32))  # the AUTH vector's device key: 00 01 .. 1f
VECTOR_DEVICE = "cam-07"
#: the per-channel prior of the ans vector: one row per channel of the (2, 2, 2) code's last axis
VECTOR_PRIOR_PER_CHANNEL = {**EXAMPLE_PRIOR, "mode": "per_channel",
                            "freqs": [[1 << 23, 1 << 22, 1 << 21, 1 << 20, 1 << 20],
                                      [1 << 21, 1 << 22, 1 << 23, 1 << 20, 1 << 20]]}
#: the zstd vector's bundle: a (2, 3, 4) code, so that zstd codes it with the dictionary's tables and content
ZSTD_VECTOR_BUNDLE_ID = "a3f1c2d4e5b60718293a4b5c6d7e8f90" * 2
ZSTD_VECTOR_SHAPE = (2, 3, 4)


def zstd_vector_dictionary() -> tuple[bytes, np.ndarray]:
    """A 256-byte formatted dictionary trained (as convert trains one) on 200 codes drawn from a fixed seed,
    and the code of the vector (the last of them). The bytes depend on libzstd's trainer: the document's
    vector is checked by decoding it, not by training again."""
    import zstandard

    rng = np.random.default_rng(0)
    values = np.array([-1, 0, 0, 0, 1, 1, 2, 3, -2], dtype=np.int8)
    base = rng.choice(values, 24)
    samples = []
    for _ in range(200):
        sample = base.copy()
        sample[rng.integers(0, 24, 3)] = rng.choice(values, 3)
        samples.append(sample)
    dictionary = zstandard.train_dictionary(256, [s.tobytes() for s in samples]).as_bytes()
    return dictionary, samples[-1].reshape(ZSTD_VECTOR_SHAPE)


def vector_specs(root: Path, dictionary: bytes) -> dict[str, WireSpec]:
    """The bundles the version-2 test vectors are made with: the worked example's, the same with the
    per-channel prior, and the zstd vector's with ``dictionary`` (artifacts written under ``root``)."""
    import json

    from edgekit.wire.codecs.fit import limits_for

    example_frames(root)  # writes the per-tensor prior
    (root / "wire" / "ans_per_channel.json").write_text(json.dumps(VECTOR_PRIOR_PER_CHANNEL))
    (root / "wire" / "zstd.dict").write_bytes(dictionary)
    versions = {"frame_versions": [1, 2]}
    per_channel = {"raw": {}, "ans": {"prior": "wire/ans_per_channel.json", "mode": "per_channel"}}
    zstd = {"raw": {}, "zstd": {"level": 19, "dictionary": "wire/zstd.dict"}}
    return {
        "example": WireSpec(EXAMPLE_BUNDLE_ID, (2, 2, 2), {**EXAMPLE_WIRE, **versions}, root, EXAMPLE_QUANT),
        "per_channel": WireSpec(EXAMPLE_BUNDLE_ID, (2, 2, 2), {**EXAMPLE_WIRE, **versions, "codecs": per_channel},
                                root, EXAMPLE_QUANT),
        "zstd": WireSpec(ZSTD_VECTOR_BUNDLE_ID, ZSTD_VECTOR_SHAPE,
                         {**EXAMPLE_WIRE, **versions, "codecs": zstd, "limits": limits_for(ZSTD_VECTOR_SHAPE)},
                         root, EXAMPLE_QUANT),
    }


def vectors_v2(root: Path) -> dict[str, bytes]:
    """docs/wire-format.md's version-2 test vectors, made by edgekit's encoder (``pack_frame_v2`` for the
    flags the encoder does not choose by itself): the worked example's fields, one feature per vector."""
    from edgekit.auth.tags import seal
    from edgekit.wire.encoder import WireEncoder
    from edgekit.wire.frame_v2 import pack_frame_v2

    dictionary, zstd_code = zstd_vector_dictionary()
    specs = vector_specs(root, dictionary)
    fields = {k: v for k, v in EXAMPLE_FIELDS.items() if k not in ("scale", "zero_point")}

    def encoder(spec: WireSpec, codec: str) -> WireEncoder:
        return WireEncoder(spec.bundle_id, spec.code_shape, spec.wire, root, codec, spec.wire_quant)

    def packed(**flags) -> bytes:
        frame = dict(codec_id=0, codec_param=0, bundle_id=specs["example"].full_id, payload=EXAMPLE_CODE.tobytes())
        return pack_frame_v2(**{**frame, **fields, **flags})

    authenticated = encoder(specs["example"], "raw")
    authenticated.sealer = seal(VECTOR_KEY, VECTOR_DEVICE)
    return {
        "TS_NS": packed(full_timestamp=True),
        "QUANT": packed(quant=EXAMPLE_QUANT),
        "LONG_REF": packed(long_ref=True, seq=300),
        "AUTH": authenticated.encode(EXAMPLE_CODE, *EXAMPLE_QUANT, **fields),
        "ans per channel": encoder(specs["per_channel"], "ans").encode(EXAMPLE_CODE, *EXAMPLE_QUANT, **fields),
        "zstd dictionary": encoder(specs["zstd"], "zstd").encode(zstd_code, *EXAMPLE_QUANT, **fields),
    }

"""Frame version 2 on real codes: round trips, one test per check of docs/wire-format.md's version-2 table."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from wire_helpers import as_v2

from edgekit.errors import BundleError
from edgekit.wire.frame_v2 import AUTH_TAG_BYTES, V2_MIN_HEADER, frame_version_of, pack_frame_v2, split_v2
from edgekit.wire.errors import (BadHeader, CorruptPayload, CrcMismatch, FrameError, FrameTooLarge, QuantMismatch,
                                 Unauthenticated, UnknownBundle, UnknownCodec, UnknownFlags, UnsupportedVersion,
                                 TruncatedFrame)
from edgekit.wire.crc import crc32c
from edgekit.wire.decoder import WireDecoder
from edgekit.wire.encoder import WireEncoder
from edgekit.wire.spec import WireSpec

CODECS = ["raw", "zstd", "ans"]
QUANT = (0.02, -128)
NOW = 1_760_000_000_000_000_000  # the receiver's clock in these tests (2025-10-09)


@pytest.fixture(scope="module")
def v2(spec) -> WireSpec:
    """The (7, 7, 4) bundle allowing versions 1 and 2, with a wire quantization."""
    return as_v2(spec, QUANT)


def enc(spec: WireSpec, codec: str | None = None, version: int | None = None) -> WireEncoder:
    return WireEncoder(spec.bundle_id, spec.code_shape, spec.wire, spec.base_dir, codec, spec.wire_quant, frame_version=version)


def frame_of(spec: WireSpec, code: np.ndarray, codec: str = "raw", seq: int = 7, **fields) -> bytes:
    """A version-2 frame with the bundle's quantization, built by the low-level packer (for tests that vary
    one field at a time)."""
    payload = enc(spec, codec).codec.encode(code)
    args = dict(codec_id={"raw": 0, "zstd": 1, "ans": 2}[codec], codec_param=enc(spec, codec).codec.param,
                bundle_id=spec.full_id, boot_id=9, seq=seq, timestamp_ns=NOW, payload=payload)
    args.update(fields)
    return pack_frame_v2(**args)


@pytest.mark.parametrize("codec", CODECS)
def test_every_codec_round_trips_real_codes_in_version_2(v2, codes, codec):
    encoder, decoder = enc(v2, codec), WireDecoder([v2])
    assert encoder.frame_version == 2  # the newest the bundle allows
    for i, code in enumerate(codes[4000:4200]):
        data = encoder.encode(code, *QUANT, seq=i, boot_id=9, timestamp_ns=NOW + i * 1_000_000)
        frame = decoder.decode(data, now_ns=NOW)
        assert np.array_equal(frame.code, code) and frame.code.dtype == np.int8
        assert (frame.seq, frame.boot_id, frame.timestamp_ns, frame.codec) == (i, 9, NOW + i * 1_000_000, codec)
        assert (frame.scale, frame.zero_point) == v2.wire_quant and frame.frame_bytes == len(data)
        assert len(data) - len(encoder.codec.encode(code)) == 17 + (i >= 128)  # header: 17 B, 18 B from seq 128


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seq=st.integers(0, 2**63 - 1), boot_id=st.integers(1, 2**32 - 1), ts=st.integers(0, 2**63 - 1),
       skew_ms=st.integers(-(2**31) + 1, 2**31 - 1), full=st.booleans(), long_ref=st.booleans(),
       quant=st.booleans(), codec=st.sampled_from(CODECS), index=st.integers(0, 9999))
def test_version_2_fields_round_trip(v2, codes, seq, boot_id, ts, skew_ms, full, long_ref, quant, codec, index):
    data = frame_of(v2, codes[index], codec, seq=seq, boot_id=boot_id, timestamp_ns=ts, full_timestamp=full,
                    long_ref=long_ref, quant=QUANT if quant else None)
    now = ts + skew_ms * 1_000_000  # the receiver's clock, less than 2**31 ms away from the capture
    if not full and now < 0:
        return
    frame = WireDecoder([v2]).decode(data, now_ns=now)
    assert (frame.seq, frame.boot_id) == (seq, boot_id)
    assert frame.timestamp_ns == (ts if full else ts // 1_000_000 * 1_000_000)
    assert np.array_equal(frame.code, codes[index]) and (frame.scale, frame.zero_point) == v2.wire_quant


def test_bundles_without_frame_versions_send_version_1(spec, codes):
    """A bundle made before version 2 (no wire.frame_versions) allows version 1 only."""
    old = WireSpec(spec.bundle_id, spec.code_shape, {k: v for k, v in spec.wire.items() if k != "frame_versions"},
                   spec.base_dir, QUANT)
    assert old.frame_versions == (1,) and enc(old).frame_version == 1
    with pytest.raises(BundleError, match="does not allow frame version 2"):
        enc(old, version=2)
    with pytest.raises(BundleError, match="frame_versions"):
        WireSpec(spec.bundle_id, spec.code_shape, {**spec.wire, "frame_versions": [3]}, spec.base_dir)


def test_one_decoder_serves_both_versions(v2, codes):
    decoder = WireDecoder([v2])
    v1 = enc(v2, "ans", 1).encode(codes[0], *QUANT, seq=1, boot_id=2, timestamp_ns=NOW)
    new = enc(v2, "ans", 2).encode(codes[0], *QUANT, seq=1, boot_id=2, timestamp_ns=NOW)
    assert (frame_version_of(v1), frame_version_of(new)) == (1, 2) and len(v1) - len(new) == 64 - 17
    assert all(np.array_equal(decoder.decode(f, now_ns=NOW).code, codes[0]) for f in (v1, new))


def test_colliding_references_are_told_apart_by_the_crc(v2, spec16, codes, codes16):
    """Two bundles whose ids share the first byte: the CRC, seeded with the full id, picks the right one."""
    other = WireSpec(v2.bundle_id[:2] + "ff" * 31, spec16.code_shape, {**spec16.wire, "frame_versions": [1, 2]},
                     spec16.base_dir, (0.5, 3))
    decoder = WireDecoder([v2, other])
    a = enc(v2).encode(codes[1], *QUANT, seq=1, boot_id=2, timestamp_ns=NOW)
    b = enc(other).encode(codes16[1], 0.5, 3, seq=1, boot_id=2, timestamp_ns=NOW)
    assert a[3] == b[3]
    assert decoder.decode(a, now_ns=NOW).bundle_id == v2.bundle_id
    assert decoder.decode(b, now_ns=NOW).bundle_id == other.bundle_id


def check(decoder: WireDecoder, data: bytes, error: type[FrameError]) -> None:
    with pytest.raises(error) as info:
        decoder.decode(data, now_ns=NOW)
    assert type(info.value) is error and info.value.reason


def test_each_version_2_check_raises_its_documented_error(v2, codes):
    """One frame per row of the version-2 checks table, in its order."""
    d = WireDecoder([v2])
    good = frame_of(v2, codes[2])
    check(d, good[:V2_MIN_HEADER - 1], TruncatedFrame)  # 1
    check(d, b"\xe3" + good[1:], UnsupportedVersion)  # 2
    check(d, good[:1] + b"\x20" + good[2:], UnknownFlags)  # 3
    check(d, good[:8] + b"\x80" * 9 + good[9:], BadHeader)  # 4a: a varint of more than 9 bytes
    check(d, frame_of(v2, codes[2])[:8] + b"\x85\x00" + good[9:], BadHeader)  # 4a: not the shortest form
    check(d, frame_of(v2, codes[2], quant=QUANT)[:20], TruncatedFrame)  # 4b: the quant extension is cut
    stranger = WireSpec(("00" if v2.bundle_id[:2] != "00" else "11") + v2.bundle_id[2:], v2.code_shape, v2.wire,
                        v2.base_dir, QUANT)
    check(d, frame_of(stranger, codes[2]), UnknownBundle)  # 5
    check(d, frame_of(v2, codes[2], payload=bytes(v2.max_payload_bytes + 1)), FrameTooLarge)  # 6
    check(d, good[:-1] + bytes([good[-1] ^ 1]), CrcMismatch)  # 7
    check(d, frame_of(v2, codes[2], boot_id=0), BadHeader)  # 9
    check(d, frame_of(v2, codes[2], full_timestamp=True, timestamp_ns=2**63), BadHeader)  # 9
    check(d, frame_of(v2, codes[2], quant=(float("nan"), 0)), BadHeader)  # 9
    check(d, frame_of(v2, codes[2], tag_fn=lambda body: bytes(AUTH_TAG_BYTES)), Unauthenticated)  # 10
    check(d, frame_of(v2, codes[2], quant=(0.5, 0)), QuantMismatch)  # 11
    check(d, frame_of(v2, codes[2], codec_id=9), UnknownCodec)  # 12
    check(d, frame_of(v2, codes[2], payload=b"\x01\x02"), CorruptPayload)  # 13


def test_a_per_bundle_limit(v2, spec16, codes):
    """Check 8: the largest limit of the candidates passes, this bundle's does not."""
    big = WireSpec(v2.bundle_id[:2] + "ee" * 31, spec16.code_shape,
                   {**spec16.wire, "limits": {"max_code_elements": 16, "max_payload_bytes": 10_000}},
                   spec16.base_dir, (0.5, 3))
    frame = frame_of(v2, codes[2], payload=bytes(v2.max_payload_bytes + 1))
    check(WireDecoder([v2, big]), frame, FrameTooLarge)


def test_the_authentication_hook_sees_the_signed_bytes_and_the_tag(v2, codes):
    """Issue 11's place to plug in: the tag is split off first, checked after the CRC, before the payload."""
    seen = []
    frame = frame_of(v2, codes[3], tag_fn=lambda body: crc32c(body).to_bytes(4, "little") * 4)
    decoded = WireDecoder([v2], verify_tag=lambda bid, signed, tag: seen.append((bid, signed, tag))).decode(
        frame, now_ns=NOW)
    assert np.array_equal(decoded.code, codes[3]) and decoded.flags == 0x01
    assert seen == [(v2.bundle_id, frame[:-AUTH_TAG_BYTES], frame[-AUTH_TAG_BYTES:])]
    header = split_v2(frame)
    assert header.tag == frame[-AUTH_TAG_BYTES:] and header.payload_end == len(frame) - AUTH_TAG_BYTES
    with pytest.raises(ValueError, match="16 bytes"):
        frame_of(v2, codes[3], tag_fn=lambda body: b"short")


def test_the_millisecond_time_is_read_nearest_the_receivers_clock_and_stays_below_2_63_ns():
    from edgekit.wire.frame_v2 import timestamp_ns_v2

    frame = pack_frame_v2(codec_id=0, codec_param=0, bundle_id=bytes(32), boot_id=1, seq=0, payload=b"x",
                          timestamp_ns=NOW)
    header = split_v2(frame)
    day_ms = 86_400_000
    for skew_days in (-24, -1, 0, 1, 24):  # within 2**31 ms = 24.8 days either way: exact
        assert timestamp_ns_v2(header, NOW + skew_days * day_ms * 1_000_000) == NOW
    assert timestamp_ns_v2(header, NOW + 26 * day_ms * 1_000_000) != NOW  # beyond: the documented limit
    past_2_63 = dataclasses.replace(header, time=(2**63 // 1_000_000 + 1) % 2**32)
    with pytest.raises(BadHeader):  # a receiver whose clock is just below 2**63 ns reads it past 2**63 ns
        timestamp_ns_v2(past_2_63, 2**63 - 1)

"""WireEncoder -> WireDecoder on real codes: bit-exact, routed by bundle, and rejected when it must be."""

from __future__ import annotations

import copy
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from wire_helpers import make_spec, recrc

from edgekit.wire.codecs import fit_codecs
from edgekit.errors import BundleError, UsageError
from edgekit.wire.errors import FrameTooLarge, ShapeMismatch, UnknownBundle, UnknownCodec
from edgekit.wire.spec import CONTENT_TYPE, WireSpec, dequantize, mqtt5_properties, new_boot_id
from edgekit.wire.decoder import WireDecoder
from edgekit.wire.encoder import WireEncoder

CODECS = ["raw", "zstd", "ans"]


def encoder(spec: WireSpec, codec: str | None = None) -> WireEncoder:
    """The device side for ``spec``."""
    return WireEncoder(spec.bundle_id, spec.code_shape, spec.wire, spec.base_dir, codec)


def encode(spec: WireSpec, code: np.ndarray, codec: str | None = None, **fields) -> bytes:
    """One frame with default metadata."""
    meta = dict(scale=0.0078125, zero_point=0, seq=1, boot_id=5, timestamp_ns=123)
    meta.update(fields)
    return encoder(spec, codec).encode(code, meta.pop("scale"), meta.pop("zero_point"), **meta)


@pytest.mark.parametrize("codec", CODECS)
def test_every_codec_round_trips_real_codes(spec, spec16, codes, codes16, codec):
    for sp, data in ((spec, codes[4000:4300]), (spec16, codes16[4000:4300])):
        dec = WireDecoder([sp])
        enc = encoder(sp, codec)
        for i, code in enumerate(data):
            frame = dec.decode(enc.encode(code, 0.5, -128, seq=i, boot_id=9, timestamp_ns=i * 1000))
            assert np.array_equal(frame.code, code) and frame.code.dtype == np.int8
            assert (frame.codec, frame.seq, frame.boot_id, frame.timestamp_ns) == (codec, i, 9, i * 1000)
            assert frame.bundle_id == sp.bundle_id


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seq=st.integers(0, 2**63 - 1), boot_id=st.integers(1, 2**32 - 1), ts=st.integers(0, 2**63 - 1),
       scale=st.floats(1e-30, 1e30), zero_point=st.integers(-128, 127), codec=st.sampled_from(CODECS),
       index=st.integers(0, 9999))
def test_metadata_round_trips(spec, codes, seq, boot_id, ts, scale, zero_point, codec, index):
    data = encode(spec, codes[index], codec, scale=scale, zero_point=zero_point, seq=seq, boot_id=boot_id,
                  timestamp_ns=ts)
    frame = WireDecoder([spec]).decode(data)
    assert (frame.seq, frame.boot_id, frame.timestamp_ns, frame.zero_point) == (seq, boot_id, ts, zero_point)
    assert frame.scale == float(np.float32(scale))
    assert np.array_equal(frame.code, codes[index]) and frame.frame_bytes == len(data)


def test_default_codec_is_the_smallest_on_heldout(spec):
    stats = spec.report["codecs"]
    assert spec.wire["default_codec"] == min(stats, key=lambda n: stats[n]["mean_frame_bytes"])
    assert encoder(spec).codec_name == spec.wire["default_codec"]


def test_dequantize_is_the_affine_map_in_float32(spec, codes):
    frame = WireDecoder([spec]).decode(encode(spec, codes[0], scale=0.1, zero_point=-3))
    expected = (codes[0].astype(np.float32) + 3) * np.float32(0.1)
    assert frame.dequantize().dtype == np.float32
    assert np.array_equal(frame.dequantize(), expected)
    assert np.array_equal(dequantize(codes[0], 0.1, -3), expected)


def test_batch_axis_of_one_is_accepted_other_shapes_are_not(spec, codes):
    assert WireDecoder([spec]).decode(encode(spec, codes[:1])).code.shape == spec.code_shape
    with pytest.raises(ValueError):
        encode(spec, codes[:2])
    with pytest.raises(ValueError):
        encode(spec, codes[0].astype(np.int16))


@pytest.mark.parametrize("fields", [dict(scale=0.0), dict(scale=float("nan")), dict(scale=1e39),
                                    dict(zero_point=128), dict(seq=-1), dict(boot_id=2**32),
                                    dict(timestamp_ns=2**64), dict(seq=2**63), dict(timestamp_ns=2**63)])
def test_encoder_refuses_what_the_server_would_reject(spec, codes, fields):
    with pytest.raises(ValueError):
        encode(spec, codes[0], **fields)


def test_routing_among_bundles(spec, spec16, codes, codes16):
    dec = WireDecoder([spec, spec16])
    assert dec.decode(encode(spec, codes[1])).bundle_id == spec.bundle_id
    assert dec.decode(encode(spec16, codes16[1])).bundle_id == spec16.bundle_id
    with pytest.raises(UnknownBundle):
        WireDecoder([spec]).decode(encode(spec16, codes16[1]))
    stranger = bytearray(encode(spec, codes[1]))
    stranger[8:16] = bytes(8)
    with pytest.raises(UnknownBundle):
        WireDecoder([spec]).decode(recrc(bytes(stranger)))


def test_prefix_collision_is_refused(spec):
    twin = WireSpec(spec.bundle_id[:16] + "0" * 48, spec.code_shape, spec.wire, spec.base_dir)
    with pytest.raises(BundleError):
        WireDecoder([spec, twin])


def test_shape_mismatch(spec, codes):
    other = WireSpec(spec.bundle_id, (4, 7, 7), spec.wire, spec.base_dir)
    with pytest.raises(ShapeMismatch):
        WireDecoder([other]).decode(encode(spec, codes[0], "raw"))


def test_codec_the_bundle_does_not_provide(spec, codes):
    wire = copy.deepcopy(spec.wire)
    del wire["codecs"]["zstd"]
    with pytest.raises(UnknownCodec):
        WireDecoder([WireSpec(spec.bundle_id, spec.code_shape, wire, spec.base_dir)]).decode(
            encode(spec, codes[0], "zstd"))


def test_codec_param_mismatch(spec, codes):
    wire = copy.deepcopy(spec.wire)
    assert wire["codecs"]["zstd"]["dictionary"]
    wire["codecs"]["zstd"]["dictionary"] = None
    with pytest.raises(UnknownCodec):
        WireDecoder([WireSpec(spec.bundle_id, spec.code_shape, wire, spec.base_dir)]).decode(
            encode(spec, codes[0], "zstd"))


def test_unknown_codec_id(spec, codes):
    data = bytearray(encode(spec, codes[0], "raw"))
    data[4] = 200
    with pytest.raises(UnknownCodec):
        WireDecoder([spec]).decode(recrc(bytes(data)))


def test_bundle_limits_apply_per_bundle(spec, spec16, codes):
    data = bytearray(encode(spec, codes[0], "raw"))
    struct.pack_into("<I", data, 56, spec16.wire["limits"]["max_payload_bytes"] + 1)
    with pytest.raises(FrameTooLarge):
        WireDecoder([spec16]).decode(recrc(bytes(data)))


def test_encoder_for_a_codec_the_bundle_lacks(spec):
    wire = copy.deepcopy(spec.wire)
    del wire["codecs"]["ans"]
    with pytest.raises(BundleError):
        WireEncoder(spec.bundle_id, spec.code_shape, wire, spec.base_dir, "ans")


def test_fit_writes_relative_artifacts_and_limits(spec):
    for name, rel in (("zstd", spec.wire["codecs"]["zstd"]["dictionary"]),
                      ("ans", spec.wire["codecs"]["ans"]["prior"])):
        assert rel.startswith("wire/") and (spec.base_dir / rel).is_file(), name
    assert spec.wire["limits"] == {"max_code_elements": 196, "max_payload_bytes": 4 * 196 + 64}


def test_fit_report_has_the_numbers_the_issue_asks_for(spec):
    report = spec.report
    for name in CODECS:
        stats = report["codecs"][name]
        assert stats["mean_frame_bytes"] > stats["mean_payload_bytes"] and stats["p95_frame_bytes"] >= stats[
            "mean_frame_bytes"] * 0.5
        assert stats["encode_us"] > 0 and stats["decode_us"] > 0
    # priced as the agent sends them: version-2 frames, 17-20 B of header (a varint seq), not version 1's 64 B
    assert report["frame_version"] == 2 and 17 <= report["header_bytes"] <= 20
    assert report["codecs"]["raw"]["mean_payload_bytes"] == 196
    assert report["codecs"]["raw"]["mean_frame_bytes"] == 196 + report["header_bytes"]
    assert 0 < report["order0_entropy_bits_per_element"] <= 8
    assert report["cross_entropy_bytes_per_sample"] >= report["order0_entropy_bytes_per_sample"] * 0.9
    assert report["ans"]["payload_vs_bound"] <= 1.03 + 8 / report["cross_entropy_bytes_per_sample"]


def test_fit_honours_a_named_codec_and_rejects_unknown_names(tmp_path, codes):
    assert make_spec(tmp_path / "a", codes[:200], codes[200:300], codec="raw").wire["default_codec"] == "raw"
    with pytest.raises(UsageError):
        fit_codecs(codes[:200], codes[200:300], tmp_path / "b" / "wire", codec="lz4")


def test_fit_without_enough_samples_for_a_dictionary(tmp_path, codes):
    section, report = fit_codecs(codes[:3], codes[3:5], tmp_path / "wire")
    assert section["codecs"]["zstd"]["dictionary"] is None and report["zstd"]["dictionary"] is False
    assert "too few samples" in report["zstd"]["reason"]


def test_fit_rejects_bad_inputs(tmp_path, codes):
    with pytest.raises(UsageError):
        fit_codecs(codes[:10].astype(np.float32), codes[10:20], tmp_path / "wire")
    with pytest.raises(UsageError):
        fit_codecs(codes[:10], codes[10:20, :3], tmp_path / "wire")


def test_mqtt5_properties_and_boot_ids(spec):
    content_type, props = mqtt5_properties(spec.bundle_id)
    assert content_type == CONTENT_TYPE == "application/vnd.edgekit.frame"
    assert props == [("bundle-id", spec.bundle_id[:16])]
    ids = {new_boot_id() for _ in range(100)}
    assert len(ids) > 90 and all(0 < i < 2**32 for i in ids)


def test_a_prior_that_does_not_fit_the_code_is_refused_at_load(spec16):
    other_shape = WireSpec(spec16.bundle_id, (4, 4), spec16.wire, spec16.base_dir)  # last axis 4, prior has 16
    assert spec16.wire["codecs"]["ans"]["mode"] == "per_channel"
    with pytest.raises(BundleError):
        WireDecoder([other_shape])


def test_a_codec_name_this_edgekit_does_not_know(spec):
    wire = copy.deepcopy(spec.wire)
    wire["codecs"]["lz4"] = {}
    with pytest.raises(BundleError):
        WireEncoder(spec.bundle_id, spec.code_shape, wire, spec.base_dir, "lz4")
    assert WireDecoder([WireSpec(spec.bundle_id, spec.code_shape, wire, spec.base_dir)])  # ignored when decoding

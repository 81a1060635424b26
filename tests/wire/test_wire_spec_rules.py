"""The rules docs/wire-format.md states beyond the byte layout, one test each: where a decoder finds the bundle id,
code shape and wire quantization, limit units, codec parameters, the ans mode, boot_id, the zstd window rule for
dictionary frames, and bad artifacts rejecting the bundle at load."""

from __future__ import annotations

import copy
import json
import shutil
import struct

import numpy as np
import pytest
import zstandard
from wire_helpers import make_spec, recrc

from edgekit.bundle.manifest import Bundle
from edgekit.wire.codecs.zstd import MAX_WINDOW_BYTES
from edgekit.errors import BundleError
from edgekit.wire.errors import BadHeader, CorruptPayload, FrameTooLarge, QuantMismatch, UnknownCodec
from edgekit.wire.spec import CODE_DTYPE, WireSpec, new_boot_id
from edgekit.wire.decoder import WireDecoder
from edgekit.wire.encoder import WireEncoder

QUANT = (0.0470588244497776, -128)  # a real TFLite code scale (f32) and zero point


def _copy(spec: WireSpec, tmp_path, **changes) -> WireSpec:
    """``spec`` with its bundle folder copied (so artifacts can be damaged) and fields changed."""
    root = tmp_path / "bundle"
    shutil.copytree(spec.base_dir, root)
    fields = dict(bundle_id=spec.bundle_id, code_shape=spec.code_shape, wire=copy.deepcopy(spec.wire),
                  base_dir=root, wire_quant=spec.wire_quant)
    fields.update(changes)
    return WireSpec(**fields)


def _encoder(spec: WireSpec, codec: str) -> WireEncoder:
    return WireEncoder(spec.bundle_id, spec.code_shape, spec.wire, spec.base_dir, codec, spec.wire_quant)


def _window(payload: bytes) -> int:
    """The window size a magicless zstd frame declares (RFC 8878 §3.1.1.1.2)."""
    exponent, mantissa = payload[1] >> 3, payload[1] & 7
    base = 1 << (10 + exponent)
    return base + (base >> 3) * mantissa


def test_bundle_id_code_shape_and_quant_come_from_the_named_manifest_keys(spec, codes):
    manifest = {"bundle_id": spec.bundle_id, "code": {"name": "code", "shape": list(spec.code_shape),
                                                      "dtype": "int8", "wire_quant": {"scale": QUANT[0],
                                                                                      "zero_point": QUANT[1]}},
                "wire": spec.wire}
    from_manifest = WireSpec.from_bundle(Bundle(spec.base_dir, manifest))
    assert from_manifest.prefix == bytes.fromhex(manifest["bundle_id"])[:8]
    assert from_manifest.code_shape == tuple(manifest["code"]["shape"])
    assert from_manifest.wire_quant == QUANT
    frame = _encoder(from_manifest, "raw").encode(codes[0], *QUANT, seq=0, boot_id=1, timestamp_ns=0)
    assert frame[8:16].hex() == manifest["bundle_id"][:16]
    assert struct.unpack_from("<4H", frame, 44)[:3] == tuple(manifest["code"]["shape"])


def test_limits_are_bytes_max_code_elements_times_itemsize(spec, codes):
    elements = spec.wire["limits"]["max_code_elements"]
    assert spec.max_code_bytes == elements * CODE_DTYPE.itemsize == 196
    frame = _encoder(spec, "raw").encode(codes[0], 1.0, 0, seq=0, boot_id=1, timestamp_ns=0)
    assert struct.unpack_from("<I", frame, 52)[0] == spec.max_code_bytes  # raw_len, in bytes, at the limit: decodes
    assert np.array_equal(WireDecoder([spec]).decode(frame).code, codes[0])
    smaller = copy.deepcopy(spec.wire)
    smaller["limits"]["max_code_elements"] = elements - 1  # one element short
    short = WireSpec(spec.bundle_id, spec.code_shape, smaller, spec.base_dir)
    with pytest.raises(FrameTooLarge, match="raw_len 196 above the limit 195"):  # check 5: the largest limit
        WireDecoder([short]).decode(frame)
    larger = copy.deepcopy(spec.wire)
    larger["limits"]["max_code_elements"] = 1000
    other = WireSpec("ab" * 32, spec.code_shape, larger, spec.base_dir)
    with pytest.raises(FrameTooLarge, match="raw 196 bytes above this bundle's limits 848 / 195"):  # check 12
        WireDecoder([short, other]).decode(frame)


def test_limits_must_be_positive_integers(spec):
    for bad in ({}, {"max_code_elements": 196}, {"max_code_elements": "196", "max_payload_bytes": 848},
                {"max_code_elements": 0, "max_payload_bytes": 848}):
        with pytest.raises(BundleError, match="wire.limits"):
            WireSpec(spec.bundle_id, spec.code_shape, {**spec.wire, "limits": bad}, spec.base_dir)


def test_zstd_without_the_dictionary_is_refused_when_the_bundle_has_one(spec, codes, tmp_path):
    assert spec.wire["codecs"]["zstd"]["dictionary"]
    plain_wire = copy.deepcopy(spec.wire)
    plain_wire["codecs"]["zstd"]["dictionary"] = None
    plain = WireSpec(spec.bundle_id, spec.code_shape, plain_wire, spec.base_dir)
    frame = _encoder(plain, "zstd").encode(codes[0], 1.0, 0, seq=0, boot_id=1, timestamp_ns=0)
    assert frame[5] == 0  # codec_param 0: without the dictionary; a valid zstd frame all the same
    assert np.array_equal(WireDecoder([plain]).decode(frame).code, codes[0])
    with pytest.raises(UnknownCodec, match="param 0"):
        WireDecoder([spec]).decode(frame)


def test_the_prior_files_ans_mode_wins_and_the_manifest_copy_must_agree(spec16, tmp_path):
    assert spec16.wire["codecs"]["ans"]["mode"] == "per_channel"
    wrong = _copy(spec16, tmp_path)
    wrong.wire["codecs"]["ans"]["mode"] = "per_tensor"
    with pytest.raises(BundleError, match="ans.mode"):
        WireDecoder([wrong])
    with pytest.raises(BundleError, match="ans.mode"):
        _encoder(wrong, "ans")
    del wrong.wire["codecs"]["ans"]["mode"]  # the copy is optional: the prior decides
    assert _encoder(wrong, "ans").codec.param == 1


def test_boot_id_zero_is_rejected_by_check_8_and_never_sent(spec, codes, monkeypatch):
    frame = bytearray(_encoder(spec, "raw").encode(codes[0], 1.0, 0, seq=0, boot_id=1, timestamp_ns=0))
    struct.pack_into("<I", frame, 32, 0)
    with pytest.raises(BadHeader, match="boot_id 0"):
        WireDecoder([spec]).decode(recrc(bytes(frame)))
    with pytest.raises(ValueError, match="boot_id 0"):
        _encoder(spec, "raw").encode(codes[0], 1.0, 0, seq=0, boot_id=0, timestamp_ns=0)
    monkeypatch.setattr("edgekit.wire.spec.secrets.randbits", lambda bits: 0)  # the one draw that must be replaced
    assert new_boot_id() == 1


def test_header_scale_and_zero_point_must_equal_the_bundles_wire_quant(spec, codes):
    bound = WireSpec(spec.bundle_id, spec.code_shape, spec.wire, spec.base_dir, QUANT)
    decoder = WireDecoder([bound])
    unbound = WireEncoder(spec.bundle_id, spec.code_shape, spec.wire, spec.base_dir, "raw")
    good = unbound.encode(codes[0], *QUANT, seq=0, boot_id=1, timestamp_ns=0)
    assert decoder.decode(good).scale == QUANT[0]
    for scale, zero_point in ((QUANT[0] * 2, QUANT[1]), (QUANT[0], QUANT[1] + 1),
                              (float(np.nextafter(np.float32(QUANT[0]), np.float32(1))), QUANT[1])):
        frame = unbound.encode(codes[0], scale, zero_point, seq=0, boot_id=1, timestamp_ns=0)
        with pytest.raises(QuantMismatch):
            decoder.decode(frame)
        with pytest.raises(ValueError, match="wire_quant"):
            _encoder(bound, "raw").encode(codes[0], scale, zero_point, seq=0, boot_id=1, timestamp_ns=0)


def test_dictionary_frames_declare_a_window_that_keeps_the_dictionary_addressable(spec, codes):
    """RFC 8878: while a frame's output is at most its window, matches may reach the whole dictionary. Our
    frames declare a window >= raw_len, however small the window and large the dictionary."""
    dictionary = (spec.base_dir / spec.wire["codecs"]["zstd"]["dictionary"]).read_bytes()
    encoder = _encoder(spec, "zstd")
    payloads = [encoder.codec.encode(c) for c in codes[6000:6200]]
    windows = {_window(p) for p in payloads}
    assert windows == {1024} and len(dictionary) > 4 * max(windows)  # matches may reach 4+ windows back
    strict = zstandard.ZstdDecompressor(dict_data=zstandard.ZstdCompressionDict(dictionary),
                                        max_window_size=max(windows))  # a decoder holding only the window
    for code, payload in zip(codes[6000:6200], payloads):
        assert strict.decompress(b"\x28\xb5\x2f\xfd" + payload, max_output_size=code.nbytes) == code.tobytes()


def test_a_dictionary_frame_whose_window_is_below_raw_len_is_corrupt(tmp_path, codes):
    """A (2048,) code: our encoder declares a 2 KiB window; the same frame declaring 1 KiB is refused."""
    wide = codes[:, :, :, :].reshape(len(codes), -1)[:, :196]
    long_codes = np.ascontiguousarray(np.tile(wide, (1, 11))[:, :2048])
    spec = make_spec(tmp_path, long_codes[:1000], long_codes[1000:1100])
    assert spec.wire["codecs"]["zstd"]["dictionary"]
    frame = bytearray(_encoder(spec, "zstd").encode(long_codes[2000], 1.0, 0, seq=0, boot_id=1, timestamp_ns=0))
    assert _window(bytes(frame[64:])) == 2048 <= MAX_WINDOW_BYTES
    assert np.array_equal(WireDecoder([spec]).decode(bytes(frame)).code, long_codes[2000])
    frame[65] = 0x00  # window descriptor: 1 KiB
    with pytest.raises(CorruptPayload, match="below raw_len 2048"):
        WireDecoder([spec]).decode(recrc(bytes(frame)))


def test_a_damaged_dictionary_rejects_the_bundle_at_load_not_each_frame(spec, tmp_path):
    damaged = _copy(spec, tmp_path)
    path = damaged.base_dir / damaged.wire["codecs"]["zstd"]["dictionary"]
    data = bytearray(path.read_bytes())
    assert data[:4] == bytes.fromhex("37a430ec")  # a formatted dictionary (RFC 8878 §5), as convert writes
    data[8:40] = b"\xff" * 32  # its entropy tables
    path.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="zstd"):
        WireDecoder([damaged])
    with pytest.raises(BundleError, match="zstd"):
        _encoder(damaged, "zstd")
    assert _encoder(damaged, "raw")  # a device sending another codec does not need the dictionary


def test_a_damaged_prior_rejects_the_bundle_at_load(spec, tmp_path):
    damaged = _copy(spec, tmp_path)
    path = damaged.base_dir / damaged.wire["codecs"]["ans"]["prior"]
    prior = json.loads(path.read_text())
    prior["freqs"][0][0] += 1  # the row no longer sums to 2**24
    path.write_text(json.dumps(prior))
    with pytest.raises(BundleError, match="2\\*\\*24"):
        WireDecoder([damaged])
    path.write_text("{not json")
    with pytest.raises(BundleError, match="ans prior"):
        WireDecoder([damaged])

"""Every codec round-trips every int8 code bit-exactly, and fails on hostile payloads only with CorruptPayload."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from edgekit.wire.codecs import CODECS, AnsCodec, AnsPrior, RawCodec, ZstdCodec
from edgekit.wire.codecs.ans import TOTAL
from edgekit.errors import BundleError
from edgekit.wire.errors import CorruptPayload

SHAPES = hnp.array_shapes(min_dims=1, max_dims=4, min_side=1, max_side=9)


def int8_arrays(shape):
    """Any int8 values, with a bias to small ones so both in-support and escaped symbols appear."""
    return hnp.arrays(np.int8, shape, elements=st.one_of(st.integers(-3, 3), st.integers(-128, 127)))


@st.composite
def codes_and_calibration(draw):
    """A code, and calibration codes of the same shape covering only part of the int8 range."""
    shape = draw(SHAPES)
    code = draw(int8_arrays(shape))
    lo = draw(st.integers(-128, 127))
    hi = draw(st.integers(lo, min(127, lo + 20)))
    seed = draw(st.integers(0, 2**32 - 1))
    calib = np.random.default_rng(seed).integers(lo, hi + 1, size=(8, *shape)).astype(np.int8)
    return code, calib


def roundtrip(codec, code: np.ndarray) -> np.ndarray:
    """Encode then decode with the codec's own limit."""
    return codec.decode(codec.encode(code), code.shape, code.size)


@settings(max_examples=150, deadline=None)
@given(code=SHAPES.flatmap(int8_arrays))
def test_raw_round_trips(code):
    assert np.array_equal(roundtrip(RawCodec(), code), code)


@settings(max_examples=150, deadline=None)
@given(code=SHAPES.flatmap(int8_arrays), level=st.sampled_from([1, 3, 19]))
def test_zstd_round_trips(code, level):
    assert np.array_equal(roundtrip(ZstdCodec(level), code), code)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=codes_and_calibration())
def test_zstd_with_dictionary_round_trips(data, codes):
    code, _ = data
    dictionary = zstandard.train_dictionary(1024, [c.tobytes() for c in codes[:500]]).as_bytes()
    assert np.array_equal(roundtrip(ZstdCodec(19, dictionary), code), code)


@settings(max_examples=300, deadline=None)
@given(data=codes_and_calibration(), per_channel=st.booleans())
def test_ans_round_trips_including_values_outside_the_prior(data, per_channel):
    code, calib = data
    codec = AnsCodec(AnsPrior.fit(calib, per_channel=per_channel))
    assert np.array_equal(roundtrip(codec, code), code)


def test_ans_escapes_cost_what_the_prior_says():
    calib = np.zeros((4, 8), np.int8)
    prior = AnsPrior.fit(calib, per_channel=False)
    code = np.array([[0, 0, 0, 0, 0, 0, 0, 100]], np.int8)
    bits = prior.cross_entropy_bits(code)
    escape_bits = -math.log2(prior.freqs[0, prior.escape] / TOTAL) + 8
    assert bits == pytest.approx(escape_bits - 7 * math.log2(prior.freqs[0, 0] / TOTAL))
    assert len(AnsCodec(prior).encode(code[0])) <= math.ceil(bits / 8) + 4


def test_ans_payload_is_close_to_the_cross_entropy_bound(spec, codes):
    codec = AnsCodec(AnsPrior.load(spec.base_dir / spec.wire["codecs"]["ans"]["prior"]))
    heldout = codes[3000:4000]
    sizes = np.array([len(codec.encode(c)) for c in heldout])
    bounds = np.array([codec.prior.cross_entropy_bits(c[None]) / 8 for c in heldout])
    assert sizes.mean() <= 1.03 * bounds.mean() + 8
    assert np.all(sizes <= 1.03 * bounds + 8)


def test_prior_selection_is_judged_on_heldout(spec):
    report = spec.report["ans"]
    assert report["mode"] == min(report["mean_payload_bytes"], key=report["mean_payload_bytes"].get)


@pytest.mark.parametrize("mutate", [
    lambda d: d.update(format="pickle"),
    lambda d: d.update(version=2),
    lambda d: d.update(precision=16),
    lambda d: d.update(lo=-200),
    lambda d: d.update(hi=d["lo"] - 1),
    lambda d: d["freqs"][0].__setitem__(0, d["freqs"][0][0] + 1),  # no longer sums to 2**24
    lambda d: d["freqs"][0].__setitem__(0, 0.5),
    lambda d: d["freqs"][0].append(1),
    lambda d: d.update(freqs=[]),
    lambda d: d.update(mode="per_pixel"),
])
def test_prior_documents_are_validated(tmp_path, mutate):
    doc = AnsPrior.fit(np.arange(-4, 4, dtype=np.int8).reshape(2, 4), per_channel=False).to_json()
    mutate(doc)
    path = tmp_path / "prior.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(BundleError):
        AnsPrior.load(path)


def test_prior_file_that_is_not_json(tmp_path):
    path = tmp_path / "prior.json"
    path.write_bytes(b"\x80\x04\x95 not json")
    with pytest.raises(BundleError):
        AnsPrior.load(path)


def hostile_codecs():
    """One instance of every registered codec kind, for the hostile-payload tests."""
    prior = AnsPrior.fit(np.arange(-8, 8, dtype=np.int8).reshape(4, 4), per_channel=True)
    dictionary = bytes(range(256)) * 4
    return [RawCodec(), ZstdCodec(3), ZstdCodec(3, dictionary), AnsCodec(prior)]


def test_every_registered_codec_is_exercised():
    assert {type(c) for c in hostile_codecs()} == {e.cls for e in CODECS}


@settings(max_examples=400, deadline=None)
@given(payload=st.binary(max_size=300), which=st.integers(0, 3))
def test_hostile_payloads_raise_only_corrupt_payload(payload, which):
    codec = hostile_codecs()[which]
    try:
        out = codec.decode(payload, (4, 4), 16)
    except CorruptPayload as err:
        assert err.reason
    else:
        assert out.shape == (4, 4) and out.dtype == np.int8


def test_zstd_refuses_a_declared_content_size_instead_of_allocating_it():
    params = zstandard.ZstdCompressionParameters.from_level(
        3, format=zstandard.FORMAT_ZSTD1_MAGICLESS, write_content_size=True)
    bomb = zstandard.ZstdCompressor(compression_params=params).compress(b"\0" * 50_000_000)
    assert len(bomb) < 5000
    with pytest.raises(CorruptPayload):
        ZstdCodec(3).decode(bomb, (16,), 16)


def test_zstd_stops_at_the_limit_without_a_content_size():
    params = zstandard.ZstdCompressionParameters.from_level(
        3, format=zstandard.FORMAT_ZSTD1_MAGICLESS, write_content_size=False)
    bomb = zstandard.ZstdCompressor(compression_params=params).compress(b"\0" * 50_000_000)
    with pytest.raises(CorruptPayload):
        ZstdCodec(3).decode(bomb, (16,), 16)


def test_zstd_rejects_bytes_after_the_frame():
    codec = ZstdCodec(3)
    payload = codec.encode(np.arange(16, dtype=np.int8))
    with pytest.raises(CorruptPayload):
        codec.decode(payload + b"\x01", (16,), 16)


def test_ans_rejects_non_canonical_and_trailing_data():
    codec = AnsCodec(AnsPrior.fit(np.arange(-8, 8, dtype=np.int8).reshape(4, 4), per_channel=False))
    code = np.arange(-8, 8, dtype=np.int8)
    payload = codec.encode(code)
    with pytest.raises(CorruptPayload):
        codec.decode(payload + b"\0", (16,), 16)
    with pytest.raises(CorruptPayload):
        codec.decode(payload + b"\x01\x02\x03\x04", (16,), 16)


def test_codec_rejects_wrong_dtype():
    for codec in hostile_codecs():
        with pytest.raises(ValueError):
            codec.encode(np.zeros(16, np.uint8))

"""The text re-encoders' codes: byte packing, the ONNX halves against the numpy reference, PQ and nested round
trips. Tiny data (random unit vectors): seconds."""

from __future__ import annotations

import numpy as np
import pytest

from edgekit.reencode.text_codes import (Dense, Quantizer, TextCodec, pack_bits, pack_digits, pack_levels, unpack_bits,
                                         unpack_digits, unpack_levels)
from edgekit.reencode.text_export import OnnxHalves
from edgekit.reencode.text_methods import fit_itq, fit_pca, fit_pq, fit_whiten
from edgekit.reencode.text_onnx import save_halves


def _unit_vectors(n: int, dims: int = 32, seed: int = 0) -> np.ndarray:
    """Unit vectors with a decaying spectrum (as sentence embeddings have), so PCA and PQ have structure to find."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, dims)) * (0.9 ** np.arange(dims))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _halves(codec: TextCodec, tmp_path, dims: int = 32) -> OnnxHalves:
    save_halves(codec, dims, tmp_path)
    return OnnxHalves(tmp_path)


def test_bits_pack_most_significant_first():
    bits = np.zeros((1, 16), bool)
    bits[0, [0, 9, 15]] = True
    code = pack_bits(bits)
    assert code.dtype == np.uint8 and code.tolist() == [[0b10000000, 0b01000001]]
    assert (unpack_bits(code, 16) == bits).all()


@pytest.mark.parametrize("bits", [1, 2, 4, 8])
def test_levels_round_trip(bits):
    levels = np.random.default_rng(bits).integers(0, 1 << bits, (5, 8 * 8 // bits))
    code = pack_levels(levels, bits)
    assert code.shape == (5, 8)
    assert (unpack_levels(code, bits, levels.shape[1]) == levels).all()
    if bits == 4:
        assert pack_levels(np.array([[0xA, 0x3]]), 4).tolist() == [[0xA3]]


@pytest.mark.parametrize("fit", [lambda x: fit_pca(x, 8, 2), lambda x: fit_pca(x, 8, 4), lambda x: fit_itq(x, 4),
                                 lambda x: fit_pq(x, 4), lambda x: fit_whiten(x, 4, 2), lambda x: fit_whiten(x, 4, 4, 0.5),
                                 lambda x: fit_whiten(x, 4, 3), lambda x: fit_whiten(x, 3, 3, 0.5)],
                         ids=["pca-2bit", "pca-4bit", "itq", "pq", "whiten-1bit", "whiten-2bit", "whiten-ternary",
                              "whiten-ternary-15-values"])
def test_onnx_halves_match_the_reference(fit, tmp_path):
    x = _unit_vectors(300)
    codec = fit(x)
    halves = _halves(codec, tmp_path)
    codes = halves.encode(x)
    assert codes.dtype == np.uint8 and codes.shape == (300, codec.payload_bytes)
    assert (codes == codec.encode(x)).all(1).mean() >= 0.99  # PQ's argmin may flip on a float tie, nothing else
    decoded = halves.decode(codes)
    np.testing.assert_allclose(decoded, codec.decode(codes), atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(decoded, axis=1), 1, atol=1e-5)
    assert (decoded * x).sum(1).mean() > 0.5  # the decoded vector points where the input did


def test_pq_round_trip_and_more_bytes_reconstruct_better():
    x = _unit_vectors(600)
    errors = []
    for payload in (2, 4, 8):
        codec = fit_pq(x, payload)
        code = codec.encode(x)
        assert code.shape == (600, payload)
        assert (codec.encode(codec.decode(code)) == code).mean() > 0.9  # a centroid encodes to itself
        errors.append(float(((codec.decode(code) - x) ** 2).sum(1).mean()))
    assert errors[0] > errors[1] > errors[2]


def test_nested_prefixes_decode_and_longer_is_closer(tmp_path):
    x = _unit_vectors(400)
    base = fit_itq(x, 4)
    codec = TextCodec(base.encoder, base.quantizer, base.decoder, prefixes=[1, 2, 4])
    halves = _halves(codec, tmp_path)
    code = halves.encode(x)
    cosines = []
    for prefix in (1, 2, 4):
        padded = code.copy()
        padded[:, prefix:] = 0
        decoded = halves.decode(padded, prefix)
        np.testing.assert_allclose(decoded, codec.decode(padded, prefix), atol=1e-5)
        np.testing.assert_allclose(decoded, halves.decode(code, prefix), atol=1e-6)  # bytes past the prefix ignored
        cosines.append(float((decoded * x).sum(1).mean()))
    assert cosines[0] < cosines[1] < cosines[2]


def test_scalar_quantizer_clips_and_centres():
    q = Quantizer("scalar", 4, 2, np.ones(4, np.float32), np.full(4, 1.5, np.float32))
    z = np.array([[-9.0, -0.2, 0.2, 9.0]], np.float32)
    assert unpack_levels(q.encode(z), 2, 4).tolist() == [[0, 1, 2, 3]]
    assert q.decode(q.encode(z)).tolist() == [[-1.5, -0.5, 0.5, 1.5]]


def test_ternary_digits_pack_five_to_a_byte_in_base_3():
    values = np.random.default_rng(3).integers(0, 3, (6, 20))
    code = pack_digits(values, 3, 5)
    assert code.shape == (6, 4) and int(code.max()) <= 242
    assert (unpack_digits(code, 3, 5, 20) == values).all()
    assert pack_digits(np.array([[2, 0, 0, 0, 1]]), 3, 5).tolist() == [[2 * 81 + 1]]
    assert (pack_digits(values[:, :8] % 2, 2, 8) == pack_bits(values[:, :8] % 2 == 1)).all()  # radix 2: np.packbits


def test_ternary_whiten_levels_are_equally_likely_and_decode_to_three_values():
    x = _unit_vectors(900)
    codec = fit_whiten(x, 4, 3)
    q = codec.quantizer
    assert q.kind == "ternary" and q.dims == 20 and codec.payload_bytes == 4 and q.to_json()["levels"] == 3
    levels = q.levels(codec.bottleneck(x))
    shares = np.stack([(levels == level).mean(0) for level in range(3)])
    np.testing.assert_allclose(shares, 1 / 3, atol=0.02)  # log2 3 bits of information per value, in 1.6 on the wire
    z_hat = q.decode(codec.encode(x))
    np.testing.assert_allclose(np.sort(np.unique(np.round(z_hat / q.step, 5))), [-1, 0, 1])
    assert (np.sign(z_hat) == np.sign(codec.bottleneck(x)) * (levels != 1)).all()  # a nonzero value keeps its sign
    with pytest.raises(Exception, match="choose 2 \\(sign bits\\), 3 \\(ternary\\) or 4"):
        fit_whiten(x, 4, 5)


def test_dense_relu():
    layer = Dense(np.eye(2, dtype=np.float32), np.array([0, -1], np.float32), relu=True)
    assert layer(np.array([[1.0, 0.5]], np.float32)).tolist() == [[1.0, 0.0]]


def test_whiten_gives_every_kept_direction_unit_variance():
    x = _unit_vectors(500)
    codec = fit_whiten(x, 4, 4, power=0.0)
    z = codec.bottleneck(x)
    np.testing.assert_allclose(z.std(0), 1, atol=1e-3)  # the leading direction no longer outweighs the rest
    assert np.abs(z.mean(0)).max() < 1e-4
    code = codec.encode(x)
    z_hat = codec.quantizer.decode(code)
    unit = z_hat / np.linalg.norm(z_hat, axis=1, keepdims=True)
    decoded = codec.decode(code)
    # power 0: the decoder is an isometry of the code, so decoded cosines are the whitened codes' cosines
    np.testing.assert_allclose(decoded[:50] @ decoded[50:100].T, unit[:50] @ unit[50:100].T, atol=1e-5)
    weighted = fit_whiten(x, 4, 4, power=1.0).decode(code)
    assert not np.allclose(weighted, decoded, atol=1e-3)  # power 1 weighs directions by their spread again


def test_held_out_spearman_never_fits_on_the_held_out_source():
    from edgekit.errors import UsageError
    from edgekit.reencode.text_pipeline import held_out_spearman
    from edgekit.reencode.text_train import PairData

    rng = np.random.default_rng(0)
    x = _unit_vectors(120)
    first, second = np.arange(0, 120, 2), np.arange(1, 120, 2)
    groups = np.repeat(["news-2012", "forum-2014", "captions-2015"], 20)
    pairs = PairData(x, first, second, rng.uniform(0, 5, 60), groups)
    seen = []

    def fit(train):
        seen.append({tuple(row) for row in np.round(train, 6)})
        return fit_whiten(train, 2, 2)

    score = held_out_spearman(fit, pairs)
    assert -1 <= score <= 1 and len(seen) == 3
    for group, fitted in zip(sorted(set(groups)), seen):
        held = groups == group
        held_rows = {tuple(row) for row in np.round(x[np.concatenate([first[held], second[held]])], 6)}
        assert not held_rows & fitted and len(fitted) == 80
    with pytest.raises(UsageError, match="at least two STS-B sources"):
        held_out_spearman(fit, PairData(x, first, second, pairs.scores, np.repeat(["one"], 60)))

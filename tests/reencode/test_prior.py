"""The learned logistic prior mapped onto the int8 wire levels (numpy): mass conserved, levels placed right."""

from __future__ import annotations

import numpy as np

from edgekit.wire.codecs.ans import AnsCodec
from edgekit.wire.codecs.fit import prior_from_pmf
from edgekit.reencode.prior import integer_pmf, wire_pmf

PRIOR = {"family": "logistic", "loc": [0.0, 2.5, -1.0], "scale": [0.3, 1.5, 4.0]}


def test_integer_pmf_sums_to_one_and_peaks_at_the_location():
    values, pmf = integer_pmf(PRIOR)
    np.testing.assert_allclose(pmf.sum(axis=1), 1.0, atol=1e-12)
    assert list(values[pmf.argmax(axis=1)]) == [0, 2, -1]


def test_scale_one_levels_are_the_integers_and_the_tails_go_to_the_escape():
    lo, pmf = wire_pmf(PRIOR, (1.0, 0))
    values, exact = integer_pmf(PRIOR)
    kept = pmf[:, :-1]
    np.testing.assert_allclose(kept, exact[:, lo + 128: lo + 128 + kept.shape[1]])
    np.testing.assert_allclose(pmf.sum(axis=1), 1.0, atol=1e-12)
    assert pmf[:, -1].max() < 1e-4


def test_a_finer_wire_step_puts_the_integers_on_every_other_level():
    lo, pmf = wire_pmf(PRIOR, (0.5, 3))
    _, exact = integer_pmf(PRIOR)
    level_of_zero = 3 - lo
    assert pmf[0, level_of_zero] == exact[0, 128]
    assert pmf[0, level_of_zero + 1] == 0.0 and pmf[1, level_of_zero + 2] == exact[1, 129]


def test_codes_drawn_from_the_prior_code_near_its_entropy():
    rng = np.random.default_rng(0)
    lo, pmf = wire_pmf(PRIOR, (1.0, 0))
    codes = np.stack([rng.choice(np.arange(lo, lo + pmf.shape[1] - 1), size=(400, 4, 4), p=p[:-1] / p[:-1].sum())
                      for p in pmf], axis=-1).astype(np.int8)
    codec = AnsCodec(prior_from_pmf(lo, pmf))
    entropy_bits = -(pmf[:, :-1] * np.log2(np.maximum(pmf[:, :-1], 1e-300))).sum() * 16
    measured_bits = 8 * np.mean([len(codec.encode(c)) for c in codes])
    assert entropy_bits <= measured_bits + 8 < 1.1 * entropy_bits + 40

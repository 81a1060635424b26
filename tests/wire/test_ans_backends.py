"""The portable rANS coder and constriction write the same bytes and read each other's payloads.

constriction is in the dev dependencies on x86-64, so both backends run here for real; the device path
without constriction is simulated by blocking its import in a subprocess.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from edgekit.wire.codecs.ans import TOTAL, AnsCodec, AnsPrior, load_backend
from edgekit.errors import UsageError
from edgekit.wire.errors import CorruptPayload


def both(prior: AnsPrior) -> tuple[AnsCodec, AnsCodec]:
    """The codec with constriction and with the portable coder."""
    return AnsCodec(prior, "constriction"), AnsCodec(prior, "portable")


@st.composite
def priors(draw) -> AnsPrior:
    """Any valid prior: 1..5 rows, alphabets of 1..255 values, frequencies from flat to very skewed (1s included)."""
    lo = draw(st.integers(-128, 127))
    hi = draw(st.integers(lo, min(127, lo + draw(st.sampled_from([0, 3, 20, 254])))))
    rows = draw(st.integers(1, 5))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    k = hi - lo + 2
    weights = rng.random((rows, k)) ** draw(st.sampled_from([0.0, 1.0, 8.0, 40.0]))
    free = TOTAL - k
    freqs = np.floor(weights / weights.sum(axis=1, keepdims=True) * free).astype(np.int64)
    freqs[np.arange(rows), rng.integers(0, k, rows)] += free - freqs.sum(axis=1)
    return AnsPrior(lo=lo, hi=hi, per_channel=rows > 1, freqs=freqs + 1)


@st.composite
def priors_and_codes(draw) -> tuple[AnsPrior, np.ndarray]:
    """A prior and a code it can carry: values mostly inside ``lo..hi``, some escaped."""
    prior = draw(priors())
    channels = prior.channels if prior.per_channel else draw(st.integers(1, 6))
    rows = draw(st.integers(0, 40))
    inside = st.integers(prior.lo, prior.hi)
    code = draw(hnp.arrays(np.int8, (rows, channels),
                           elements=st.one_of(inside, inside, inside, st.integers(-128, 127))))
    return prior, code


@settings(max_examples=400, deadline=None)
@given(data=priors_and_codes())
def test_portable_and_constriction_payloads_are_byte_identical_and_interchangeable(data):
    prior, code = data
    fast, portable = both(prior)
    payload = fast.encode(code)
    assert portable.encode(code) == payload
    assert np.array_equal(portable.decode(payload, code.shape, code.size), code)
    assert np.array_equal(fast.decode(payload, code.shape, code.size), code)


def test_real_codes_give_identical_payloads(spec, codes):
    prior = AnsPrior.load(spec.base_dir / spec.wire["codecs"]["ans"]["prior"])
    fast, portable = both(prior)
    for code in codes[3000:3300]:
        payload = portable.encode(code)
        assert payload == fast.encode(code)
        assert np.array_equal(fast.decode(payload, code.shape, code.size), code)


@settings(max_examples=400, deadline=None)
@given(prior=priors(), payload=st.binary(max_size=64), extra=st.integers(0, 3))
def test_hostile_payloads_get_the_same_verdict_from_both(prior, payload, extra):
    shape = (4 + extra, prior.channels)
    outcomes = []
    for codec in both(prior):
        try:
            outcomes.append(codec.decode(payload, shape, shape[0] * shape[1]).tobytes())
        except CorruptPayload:
            outcomes.append("corrupt")
    assert outcomes[0] == outcomes[1]


def test_a_code_of_only_symbol_zero_is_the_empty_payload_as_the_spec_says():
    prior = AnsPrior.fit(np.arange(-3, 3, dtype=np.int8).reshape(2, 3), per_channel=False)
    code = np.full((5, 3), prior.lo, np.int8)
    for codec in both(prior):
        assert codec.encode(code) == b""
        assert np.array_equal(codec.decode(b"", code.shape, code.size), code)


def test_unknown_backend_is_a_usage_error():
    with pytest.raises(UsageError, match="portable"):
        load_backend("rust")


def run_blocked(blocked: list[str], code: str) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter where importing any of ``blocked`` fails, as when not installed."""
    prelude = f"import sys\nfor name in {blocked!r}:\n    sys.modules[name] = None\n"
    return subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=120)


def test_without_constriction_the_portable_backend_is_chosen_and_named_in_errors():
    done = run_blocked(["constriction"], """
        import numpy as np
        from edgekit.wire.codecs.ans import AnsCodec, AnsPrior, load_backend
        from edgekit.errors import UsageError
        prior = AnsPrior.fit(np.arange(-4, 4, dtype=np.int8).reshape(2, 4), per_channel=False)
        codec = AnsCodec(prior)
        code = np.array([-4, 3, 100, 0], np.int8)
        assert np.array_equal(codec.decode(codec.encode(code), (4,), 4), code)
        try:
            load_backend("constriction")
        except UsageError as err:
            print(codec.backend.name, "|", err)
    """)
    assert done.returncode == 0, done.stderr
    name, message = done.stdout.strip().split(" | ")
    assert name == "portable"
    assert "constriction" in message and "pip install constriction" in message and "\n" not in message


def test_a_codec_whose_package_is_missing_is_one_line_and_the_device_picks_another():
    done = run_blocked(["zstandard"], """
        import sys
        from edgekit.wire.codecs.registry import CodecUnavailable, build_codec, pick_codec, runnable
        wire = {"default_codec": "zstd", "codecs": {"raw": {}, "zstd": {"level": 3, "dictionary": None}}}
        assert not runnable("zstd") and runnable("raw") and runnable("ans")
        print(pick_codec(wire), pick_codec({**wire, "codecs": {**wire["codecs"], "ans": {}}}), pick_codec(wire, "zstd"))
        try:
            build_codec("zstd", wire["codecs"]["zstd"], None)
        except CodecUnavailable as err:
            print(err)
    """)
    assert done.returncode == 0, done.stderr
    picks, message = done.stdout.strip().split("\n")
    assert picks.split() == ["raw", "ans", "zstd"]
    assert "'zstd'" in message and "pip install zstandard" in message

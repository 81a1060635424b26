"""Fuzz: 100,000+ mutations of valid frames of every codec; only documented FrameErrors may come out."""

from __future__ import annotations

import time

import numpy as np
import pytest
from wire_helpers import as_v2, fuzz

from edgekit.wire.errors import ERROR_TYPES
from edgekit.wire.decoder import WireDecoder
from edgekit.wire.encoder import WireEncoder
from edgekit.wire.spec import WireSpec

MUTATIONS = 100_000


@pytest.fixture(scope="module")
def bound(spec, spec16) -> list[WireSpec]:
    """The two bundles with a wire quantization each, allowing both frame versions, as a receiver loads them."""
    return [as_v2(sp, quant) for sp, quant in ((spec, (0.02, -128)), (spec16, (0.5, 3)))]


@pytest.fixture(scope="module")
def corpus_ids(bound, codes, codes16) -> tuple[list[bytes], list[bytes | None]]:
    """Valid frames of both bundles, all three codecs and both versions, with varied metadata; and for each
    version-2 frame its full bundle id."""
    frames, ids = [], []
    for sp, data in zip(bound, (codes[5000:5040], codes16[5000:5040])):
        for codec in ("raw", "zstd", "ans"):
            for version in (1, 2):
                enc = WireEncoder(sp.bundle_id, sp.code_shape, sp.wire, sp.base_dir, codec, sp.wire_quant, frame_version=version)
                frames += [enc.encode(c, *sp.wire_quant, seq=i * 997, boot_id=i + 1, timestamp_ns=i)
                           for i, c in enumerate(data)]
                ids += [sp.full_id if version == 2 else None] * len(data)
    return frames, ids


@pytest.fixture(scope="module")
def corpus(corpus_ids) -> list[bytes]:
    return corpus_ids[0]


def test_mutated_frames_raise_only_documented_errors(spec, spec16, bound, corpus_ids):
    decoder = WireDecoder(bound)
    start = time.perf_counter()
    counts = fuzz(decoder, corpus_ids[0], {spec.code_shape, spec16.code_shape}, MUTATIONS, seed=20240611,
                  ids=corpus_ids[1])
    elapsed = time.perf_counter() - start
    print(f"\nfuzz: {MUTATIONS} mutations in {elapsed:.1f} s ({MUTATIONS / elapsed:,.0f}/s): {counts}")
    assert sum(counts.values()) == MUTATIONS
    documented = {e.code for e in ERROR_TYPES} | {"decoded"}
    assert set(counts) <= documented
    # the mutations reach the checks behind the CRC, not only the checksum
    for code in ("crc-mismatch", "truncated", "bad-header", "corrupt-payload", "unknown-codec", "too-large",
                 "quant-mismatch", "unsupported-version", "unknown-flags", "unknown-bundle", "unauthenticated"):
        assert counts.get(code, 0) > 0, code


def test_mutation_engine_is_deterministic(spec, spec16, bound, corpus_ids):
    decoder = WireDecoder(bound)
    shapes = {spec.code_shape, spec16.code_shape}
    assert fuzz(decoder, *corpus_ids[:1], shapes, 500, 3, corpus_ids[1]) == fuzz(
        decoder, *corpus_ids[:1], shapes, 500, 3, corpus_ids[1])


def test_unmutated_corpus_decodes(bound, corpus):
    decoder = WireDecoder(bound)
    assert all(decoder.decode(f).code.dtype == np.int8 for f in corpus)
    assert {f[0] for f in corpus} == {0x45, 0xE2}  # both versions

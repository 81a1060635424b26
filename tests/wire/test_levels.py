"""Rate levels of a nested code (issue 22): a version-2 frame's ``LEVEL`` byte says how many of the code's channels
its payload carries; the bundle lists the levels in ``wire.levels``; any listed level decodes with the codecs
built at load, the left-out channels filled with the zero point; a level the bundle does not list, or any level
for a bundle without levels, is ``level-not-allowed``, and a receiver that predates levels says ``unknown-flags``."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from wire_helpers import EXAMPLE_BUNDLE_ID, EXAMPLE_CODE, EXAMPLE_FIELDS, EXAMPLE_NOW_NS, EXAMPLE_QUANT, hexdump

import edgekit.wire.frame_v2 as frame_v2
from edgekit.errors import BundleError
from edgekit.wire.codecs.ans import AnsPrior
from edgekit.wire.decoder import WireDecoder
from edgekit.wire.encoder import WireEncoder
from edgekit.wire.errors import LevelNotAllowed, UnknownFlags
from edgekit.wire.frame_v2 import LEVEL_FLAG
from edgekit.wire.spec import WireSpec

DOC = Path(__file__).resolve().parents[2] / "docs" / "wire-format.md"
SHAPE = (3, 3, 8)
LEVELS = [2, 4, 8]
QUANT = (0.5, 3)
BUNDLE = "a1" * 32
FIELDS = {k: v for k, v in EXAMPLE_FIELDS.items() if k not in ("scale", "zero_point")}


def codes(n: int, seed: int = 0) -> np.ndarray:
    """Codes whose later channels spread wider, as a nested code's do (and so per-channel tables differ)."""
    rng = np.random.default_rng(seed)
    spread = np.linspace(1, 6, SHAPE[-1])
    return np.clip(np.round(rng.normal(0, spread, (n, *SHAPE))), -128, 127).astype(np.int8)


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory) -> Path:
    """A per-channel ans prior fitted on codes of ``SHAPE``, and a zstd codec without a dictionary."""
    root = tmp_path_factory.mktemp("levels")
    (root / "wire").mkdir()
    AnsPrior.fit(codes(400), per_channel=True).save(root / "wire" / "ans_prior.json")
    return root


def wire(levels: list[int] | None) -> dict:
    section = {"frame_versions": [1, 2], "default_codec": "ans",
               "codecs": {"raw": {}, "zstd": {"level": 3, "dictionary": None},
                          "ans": {"prior": "wire/ans_prior.json", "mode": "per_channel"}},
               "limits": {"max_code_elements": int(np.prod(SHAPE)), "max_payload_bytes": 4 * int(np.prod(SHAPE)) + 64}}
    return section if levels is None else {**section, "levels": levels}


def spec(root: Path, levels: list[int] | None = LEVELS) -> WireSpec:
    return WireSpec(BUNDLE, SHAPE, wire(levels), root, QUANT)


def encoder(root: Path, codec: str, levels: list[int] | None = LEVELS) -> WireEncoder:
    return WireEncoder(BUNDLE, SHAPE, wire(levels), root, codec, QUANT)


@pytest.mark.parametrize("codec", ["raw", "zstd", "ans"])
def test_every_listed_level_decodes_its_channels_and_fills_the_rest_with_the_zero_point(bundle_dir, codec):
    enc, decoder = encoder(bundle_dir, codec), WireDecoder([spec(bundle_dir)])
    for i, code in enumerate(codes(20, seed=1)):
        sizes = []
        for level, channels in enumerate(LEVELS):
            data = enc.encode(code, *QUANT, seq=i, boot_id=7, timestamp_ns=EXAMPLE_NOW_NS, level=level)
            assert data[1] & LEVEL_FLAG
            frame = decoder.decode(data, now_ns=EXAMPLE_NOW_NS)
            assert frame.level == level and frame.code.shape == SHAPE
            assert np.array_equal(frame.code[..., :channels], code[..., :channels])
            assert np.all(frame.code[..., channels:] == QUANT[1])  # dequantizes to 0.0
            sizes.append(len(data))
        whole = decoder.decode(enc.encode(code, *QUANT, seq=i, boot_id=7, timestamp_ns=EXAMPLE_NOW_NS),
                               now_ns=EXAMPLE_NOW_NS)
        assert whole.level is None and np.array_equal(whole.code, code)
        assert sizes == sorted(sizes) and sizes[0] < sizes[-1], sizes


def test_the_top_level_costs_one_byte_more_than_the_whole_code(bundle_dir):
    enc = encoder(bundle_dir, "ans")
    code = codes(1, seed=2)[0]
    whole = enc.encode(code, *QUANT, seq=1, boot_id=7, timestamp_ns=EXAMPLE_NOW_NS)
    top = enc.encode(code, *QUANT, seq=1, boot_id=7, timestamp_ns=EXAMPLE_NOW_NS, level=len(LEVELS) - 1)
    assert len(top) == len(whole) + 1


def test_a_level_the_bundle_does_not_list_is_refused(bundle_dir):
    code = codes(1, seed=3)[0]
    levelled = encoder(bundle_dir, "ans").encode(code, *QUANT, seq=1, boot_id=7, timestamp_ns=EXAMPLE_NOW_NS, level=1)
    without = WireDecoder([spec(bundle_dir, levels=None)])
    with pytest.raises(LevelNotAllowed, match="has no levels") as info:
        without.decode(levelled, now_ns=EXAMPLE_NOW_NS)
    assert info.value.code == "level-not-allowed"
    fewer = WireDecoder([spec(bundle_dir, levels=[2, 4])])
    top = encoder(bundle_dir, "raw").encode(code, *QUANT, seq=1, boot_id=7, timestamp_ns=EXAMPLE_NOW_NS, level=2)
    with pytest.raises(LevelNotAllowed, match=r"lists levels 0\.\.1"):
        fewer.decode(top, now_ns=EXAMPLE_NOW_NS)


def test_a_receiver_that_predates_levels_refuses_the_flag(bundle_dir, monkeypatch):
    """Such a receiver's version-2 flags end at LONG_REF: the LEVEL bit is one it does not define."""
    data = encoder(bundle_dir, "raw").encode(codes(1)[0], *QUANT, seq=1, boot_id=7, timestamp_ns=EXAMPLE_NOW_NS,
                                             level=0)
    monkeypatch.setattr(frame_v2, "KNOWN_FLAGS_V2", frame_v2.KNOWN_FLAGS_V2 & ~LEVEL_FLAG)
    with pytest.raises(UnknownFlags) as info:
        WireDecoder([spec(bundle_dir)]).decode(data, now_ns=EXAMPLE_NOW_NS)
    assert info.value.code == "unknown-flags"


def test_the_encoder_refuses_levels_it_cannot_send(bundle_dir):
    code = codes(1)[0]
    with pytest.raises(ValueError, match="lists 3 levels"):
        encoder(bundle_dir, "raw").encode(code, *QUANT, seq=1, boot_id=7, timestamp_ns=0, level=3)
    with pytest.raises(ValueError, match="lists 0 levels"):
        encoder(bundle_dir, "raw", levels=None).encode(code, *QUANT, seq=1, boot_id=7, timestamp_ns=0, level=0)
    v1 = WireEncoder(BUNDLE, SHAPE, wire(LEVELS), bundle_dir, "raw", QUANT, frame_version=1)
    with pytest.raises(ValueError, match="frame version 2"):
        v1.encode(code, *QUANT, seq=1, boot_id=7, timestamp_ns=0, level=0)


@pytest.mark.parametrize("levels", [[], [4, 2], [2, 2], [0, 8], [2, 9], "2,4", [2.0, 8]])
def test_a_bundle_with_bad_levels_is_rejected_at_load(bundle_dir, levels):
    with pytest.raises(BundleError, match="wire.levels"):
        spec(bundle_dir, levels)


def test_the_documented_level_vector(tmp_path):
    """docs/wire-format.md, Levels: the worked example's bundle with ``wire.levels`` [1, 2], its code at level 0."""
    section = DOC.read_text().split("### Levels")[1].split("\n### ")[0]
    wire_section = {"frame_versions": [1, 2], "default_codec": "raw", "codecs": {"raw": {}}, "levels": [1, 2],
                    "limits": {"max_code_elements": 8, "max_payload_bytes": 96}}
    assert json.dumps(wire_section["levels"]) in section
    enc = WireEncoder(EXAMPLE_BUNDLE_ID, (2, 2, 2), wire_section, tmp_path, "raw", EXAMPLE_QUANT)
    data = enc.encode(EXAMPLE_CODE, *EXAMPLE_QUANT, **{**FIELDS, "timestamp_ns": 1_718_000_000_123_000_000},
                      level=0)
    assert hexdump(data) in section, f"the level vector in {DOC.name} is stale:\n{hexdump(data)}"
    assert re.search(rf"\*\*level 0\*\* \({len(data)} bytes", section)
    frame = WireDecoder([WireSpec(EXAMPLE_BUNDLE_ID, (2, 2, 2), wire_section, tmp_path, EXAMPLE_QUANT)]).decode(
        data, now_ns=EXAMPLE_NOW_NS)
    assert frame.code.ravel().tolist() == [0, -3, -1, -3, 0, -3, -128, -3]

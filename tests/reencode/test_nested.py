"""A nested entropic re-encoder (issue 22): one encoder and decoder whose first channels decode alone at each
level, its record per level, and the bundle convert makes of it (``wire.levels``, bytes and accuracy per level,
frames priced with the version-2 header)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgekit.errors import UsageError
from edgekit.reencode import reencode
from edgekit.wire.frame_v2 import LEVEL_FLAG

LEVELS = [2, 4, 8]


@pytest.fixture(scope="module")
def nested(teacher, tmp_path_factory):
    """The digits teacher re-encoded with a nested code at ``feat`` (seconds), and its bundle."""
    from edgekit.converters import convert

    root = tmp_path_factory.mktemp("nested")
    result = reencode(teacher.path, "feat", "entropic", teacher.train, root / "nested.keras", levels=LEVELS,
                      epochs=6, kd_epochs=2, beta=0.3, seed=0)
    bundle = convert(model=result.output, split="code", calib=teacher.train, eval=teacher.test, targets=["rpi"],
                     runtime="tflite", output=root / "bundle", latency_runs=0, min_agreement=0.0)
    return result, bundle


def test_the_record_gives_each_level_its_bits_and_agreement(nested, teacher):
    result, _ = nested
    settings = result.metadata["settings"]
    assert settings["levels"] == LEVELS and settings["channels"] == LEVELS[-1]
    rows = settings["per_level"]
    assert [r["channels"] for r in rows] == LEVELS
    bits = [r["bits"] for r in rows]
    assert bits == sorted(bits) and bits[0] < bits[-1]
    assert rows[-1]["agreement"] >= rows[0]["agreement"] and rows[-1]["agreement"] > 0.8
    assert rows[0]["agreement"] > 0.3  # two channels of eight still decode: the prefix was trained alone


def test_the_bundle_lists_its_levels_and_reports_each(nested):
    _, bundle = nested
    manifest = json.loads((bundle.bundle_path / "manifest.json").read_text())
    assert manifest["wire"]["levels"] == LEVELS
    rows = bundle.report["wire"]["levels"]
    assert [r["channels"] for r in rows] == LEVELS
    frames = [r["mean_frame_bytes"] for r in rows]
    assert frames == sorted(frames) and frames[0] < frames[-1]
    assert rows[-1]["top1_agreement_with_all_channels"] == 1.0  # the top level is the whole code
    assert rows[-1]["accuracy"] > 0.8 and rows[0]["accuracy"] > 0.3
    summary = (bundle.bundle_path / "report.md").read_text()
    assert f"level 0 ({LEVELS[0]} channels): {frames[0]:.1f} B/frame" in summary


def test_convert_prices_a_reencoded_models_frames_with_the_version_2_header(nested):
    """Issue 22's report item: the mean frame is the payload plus a 17-20 byte header, as the agent sends."""
    _, bundle = nested
    wire = bundle.report["wire"]
    assert wire["frame_version"] == 2 and 17 <= wire["header_bytes"] <= 20
    for row in wire["codecs"].values():
        assert row["mean_frame_bytes"] <= row["mean_payload_bytes"] + 20
    for row in wire["levels"]:  # one more byte: the level
        assert row["mean_frame_bytes"] <= row["mean_payload_bytes"] + 21


def test_the_agent_side_encoder_sends_each_level_the_receiver_decodes(nested, teacher):
    from edgekit.bundle.manifest import Bundle
    from edgekit.wire.decoder import WireDecoder
    from edgekit.wire.encoder import WireEncoder

    _, bundle = nested
    loaded = Bundle.load(bundle.bundle_path)
    encoder, decoder = WireEncoder.from_bundle(loaded), WireDecoder([loaded])
    code = np.asarray(loaded.golden.arrays[next(iter(loaded.golden.device.values()))][0])
    for level, channels in enumerate(LEVELS):
        frame = encoder.encode(code, 1.0, 0, seq=level, boot_id=3, timestamp_ns=0, level=level)
        assert frame[1] & LEVEL_FLAG
        decoded = decoder.decode(frame, now_ns=0).code
        assert np.array_equal(decoded[..., :channels], code.reshape(decoded.shape)[..., :channels])
        assert not decoded[..., channels:].any()


@pytest.mark.parametrize("kwargs, message", [
    (dict(method="pca", levels=[2, 4]), "nests an entropic code"),
    (dict(method="entropic", levels=[4, 2]), "ascending"),
    (dict(method="entropic", levels=[8]), "2 to 256"),
    (dict(method="entropic", levels=[2, 4], channels=8), "ends at 4 channels but --channels is 8"),
])
def test_bad_levels_are_one_line_usage_errors(teacher, tmp_path, kwargs, message):
    method = kwargs.pop("method")
    with pytest.raises(UsageError, match=message):
        reencode(teacher.path, "feat", method, teacher.train, tmp_path / "x.keras", epochs=1, **kwargs)


def test_training_draws_the_top_level_for_half_the_samples():
    from edgekit.reencode.nested import level_odds

    odds = level_odds(4)
    assert odds[-1] == 0.5 and np.allclose(odds[:-1], 0.5 / 3) and np.isclose(odds.sum(), 1.0)

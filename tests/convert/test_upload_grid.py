"""The CIFAR-10 benchmark's upload grid (examples/cifar10/grid.py): every quality swept and cached, the
smallest upload within 1 point picked right, and the paired bootstrap interval on data whose answer is known."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples" / "cifar10"))

from grid import QUALITIES, paired_bootstrap, selection_bootstrap, summarize, sweep  # noqa: E402

from edgekit.converters.image_baseline import encode_image  # noqa: E402


def _brightness_classifier(images: np.ndarray) -> np.ndarray:
    """A real (if crude) classifier of decoded pixels: class 1 when the image is brighter than mid-grey."""
    return (images.reshape(len(images), -1).mean(axis=1) > 110).astype(np.int64)


def test_sweep_covers_every_quality_and_reads_back_its_cache(cifar_folder, tmp_path):
    x = np.stack([np.asarray(Image.open(f).convert("RGB")) for f in sorted(cifar_folder.rglob("*.jpg"))[:3]])
    assert QUALITIES == tuple(range(1, 101))
    lines: list[str] = []
    table = sweep(x, _brightness_classifier, tmp_path, ("jpeg", "webp"), QUALITIES, chunk=2, progress=lines.append)
    assert set(table) == {(f, q) for f in ("jpeg", "webp") for q in range(1, 101)}
    assert len(lines) == 200
    for (fmt, q), measured in table.items():
        assert len(measured["bytes"]) == len(measured["pred"]) == 3
    assert list(table[("webp", 37)]["bytes"]) == [len(encode_image(img, "webp", 37)) for img in x]
    assert table[("jpeg", 100)]["bytes"].mean() > table[("jpeg", 1)]["bytes"].mean()
    assert len(list((tmp_path / "jpeg").glob("q*.npz"))) == 200  # chunks of 2 + 1 images per quality

    again: list[str] = []
    cached = sweep(x, _brightness_classifier, tmp_path, ("jpeg", "webp"), QUALITIES, chunk=2, progress=again.append)
    assert again == []  # nothing re-measured
    assert all(np.array_equal(cached[k]["bytes"], table[k]["bytes"]) for k in table)


def _synthetic(correct_counts: dict[tuple[str, int], tuple[int, float]], teacher_correct: int, n: int = 100):
    """A table whose rows have the given (correct images, mean bytes), the teacher right on ``teacher_correct``."""
    y = np.zeros(n, np.int64)
    teacher = np.where(np.arange(n) < teacher_correct, 0, 1)
    table = {key: {"pred": np.where(np.arange(n) < right, 0, 1), "bytes": np.full(n, size)}
             for key, (right, size) in correct_counts.items()}
    return table, y, teacher


def test_summarize_picks_the_smallest_upload_within_one_point():
    # Teacher 80/100: the bar is 79%. webp q=20 reaches it exactly (79) and is smaller than every other
    # upload within; q=10 is smaller but below; q=30 is not monotonic (78, below the bar) and must not count.
    table, y, teacher = _synthetic({("webp", 10): (70, 100.0), ("webp", 20): (79, 200.0), ("webp", 30): (78, 250.0),
                                    ("webp", 40): (81, 300.0), ("jpeg", 50): (79, 150.0 + 60)}, teacher_correct=80)
    s = summarize(table, y, teacher, count=100)
    assert s["bar_top1"] == pytest.approx(0.79)
    assert (s["smallest"]["any"]["method"], s["smallest"]["any"]["quality"]) == ("webp", 20)
    assert s["smallest"]["jpeg"]["quality"] == 50
    assert s["within_bar"] == 3
    assert s["drops"]["webp"] == {"count": 1, "largest_points": 1.0}
    interval = s["smallest"]["any"]["vs_teacher"]
    assert interval["diff"] == pytest.approx(-0.01)
    assert interval["low"] <= -0.01 <= interval["high"]

    # On the first 50 images every upload is right on all (their wrong images come later): the smallest wins.
    assert summarize(table, y, teacher, count=50)["smallest"]["any"]["quality"] == 10
    # ... and a table where nothing reaches the bar has no pick.
    table, y, teacher = _synthetic({("jpeg", 90): (60, 500.0)}, teacher_correct=80)
    assert summarize(table, y, teacher, count=100)["smallest"]["any"] is None


def test_paired_bootstrap_on_known_data():
    same = np.array([1, 0, 1, 1, 0] * 40, bool)
    assert paired_bootstrap(same, same) == {"diff": 0.0, "low": 0.0, "high": 0.0, "level": 0.95, "draws": 10000}
    # a right on all 400 images, b on every other one: the difference is 0.5 with a binomial standard error of
    # sqrt(0.25 / 400) = 0.025, so the 95% interval is 0.5 ± 0.049.
    a, b = np.ones(400, bool), np.arange(400) % 2 == 0
    interval = paired_bootstrap(a, b)
    assert interval["diff"] == 0.5
    assert interval["low"] == pytest.approx(0.451, abs=0.006)
    assert interval["high"] == pytest.approx(0.549, abs=0.006)
    assert paired_bootstrap(b, a)["high"] == pytest.approx(-interval["low"], abs=0.006)


def test_selection_bootstrap_says_how_stable_the_pick_is():
    teacher = np.arange(1000) < 800
    clear = {"method": "webp", "setting": "q=50", "mean_bytes": 100.0, "correct": np.arange(1000) < 850}
    marginal = {"method": "webp", "setting": "q=40", "mean_bytes": 90.0, "correct": np.arange(1000) < 790}
    picks = selection_bootstrap([clear, marginal], teacher)
    # q=40 sits exactly on the bar (79.0% vs 80.0% − 1): roughly half the resamples keep it within.
    assert 0.2 < picks["picks"]["webp q=40"] / picks["draws"] < 0.8
    assert sum(picks["picks"].values()) == picks["draws"]
    assert (picks["bytes_low"], picks["bytes_high"]) == (90.0, 100.0)
    assert selection_bootstrap([clear], teacher)["picks"] == {"webp q=50": 1000}

"""How long ``fit_codecs`` takes on big codes, and what it chooses under a device encode budget.

    .venv/bin/python benchmarks/bench_codec_fit.py                      # 56×56×24 codes, rpi speed, 2 ms
    .venv/bin/python benchmarks/bench_codec_fit.py --speed 1 --budget-ms 1000   # no practical budget

The codes are 75,264 B each (56×56×24 int8, the size of an early ImageNet-model cut), made of real
Fashion-MNIST pixels (24 images upsampled 2× per code): 500 calibration and 800 held-out codes, as convert
passes them. Prints a line per candidate (bytes, host and estimated device time), the choice, and the total.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from edgekit.wire.codecs import EncodeBudget, fit_codecs
from edgekit.demo.example_model import read_idx

REPO = Path(__file__).resolve().parents[1]


def big_codes(data: Path, count: int) -> np.ndarray:
    """(count, 56, 56, 24) int8 codes of real pixels."""
    images = read_idx(data / "fashion-mnist" / "train-images-idx3-ubyte.gz")[: count * 24]
    x = np.repeat(np.repeat(images.reshape(count, 24, 28, 28), 2, axis=2), 2, axis=3).transpose(0, 2, 3, 1)
    return (x.astype(np.int16) // 2 - 64).astype(np.int8)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path(os.environ.get("EDGEKIT_DATA", REPO.parent / "shared" / "data")))
    parser.add_argument("--speed", type=float, default=0.25, help="device CPU speed vs this host (rpi: 0.25)")
    parser.add_argument("--budget-ms", type=float, default=2.0, help="per-frame encode budget on the device")
    args = parser.parse_args()
    codes = big_codes(args.data, 1300)
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        section, report = fit_codecs(codes[:500], codes[500:], Path(tmp) / "wire",
                                     budget=EncodeBudget(args.speed, args.budget_ms, f"a device at x{args.speed:g}"),
                                     progress=print)
        total = time.perf_counter() - started
    chosen = report["codecs"][section["default_codec"]]
    print(f"chosen: {section['default_codec']} (zstd level {section['codecs']['zstd']['level']}), "
          f"{chosen['mean_frame_bytes']:.0f} B/frame, est. {chosen['device_encode_ms']:.3f} ms on the device; "
          f"{report['default_reason']}")
    print(f"fit_codecs took {total:.1f} s on {report['measured_samples']} measured of {report['heldout_samples']} "
          "held-out codes")


if __name__ == "__main__":
    main()

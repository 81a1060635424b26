"""Cost of the ``ans`` codec per backend: constriction (native) against the portable numpy / pure-Python coder.

    .venv/bin/python benchmarks/bench_ans.py                          # codes made from Fashion-MNIST pixels
    .venv/bin/python benchmarks/bench_ans.py --bundle bundles/fmnist  # the bundle's own codes and prior

The codes are those of ``bench_codecs.py`` (real Fashion-MNIST test images, pooled and quantized to int8, or
with ``--bundle`` the bundle's device half applied to them); the priors are fitted on training images (or
the bundle's own). Both backends code the same frames in the same process; their payloads are checked to be
byte-identical. Figures are µs per 1,000 symbols (main symbols of the code; escapes add a few more) and µs per
frame, encode and decode separately, best of ``--repeat``; "x constriction" is the portable coder's time over
constriction's. A Raspberry Pi without constriction pays the portable column.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
from bench_codecs import REPO, bundle_codes, pixel_codes

from edgekit.wire.codecs.ans import AnsCodec, AnsPrior
from edgekit.demo.example_model import read_idx


def best_time(fn, repeat: int) -> float:
    """Best wall time of ``fn()`` over ``repeat`` runs, in seconds."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def bench_backend(prior: AnsPrior, backend: str, codes: np.ndarray, repeat: int) -> tuple[dict, list[bytes]]:
    """Encode and decode every code with one backend: µs per 1,000 symbols and per frame, and the payloads."""
    codec = AnsCodec(prior, backend)
    payloads = [codec.encode(c) for c in codes]
    shape, size = codes.shape[1:], codes[0].size
    enc = best_time(lambda: [codec.encode(c) for c in codes], repeat)
    dec = best_time(lambda: [codec.decode(p, shape, size) for p in payloads], repeat)
    symbols = codes.size / 1000
    return {"encode_us_per_1k": enc / symbols * 1e6, "decode_us_per_1k": dec / symbols * 1e6,
            "encode_us_per_frame": enc / len(codes) * 1e6, "decode_us_per_frame": dec / len(codes) * 1e6}, payloads


def bench_codes(title: str, priors: dict[str, AnsPrior], codes: np.ndarray, repeat: int) -> None:
    """Print one row per (prior, backend); stop if the backends' payloads differ."""
    for mode, prior in priors.items():
        fast, fast_payloads = bench_backend(prior, "constriction", codes, repeat)
        portable, portable_payloads = bench_backend(prior, "portable", codes, repeat)
        if fast_payloads != portable_payloads:
            raise SystemExit(f"{title} {mode}: the backends' payloads differ")
        mean_bytes = np.mean([len(p) for p in fast_payloads])
        print(f"\n{title}, {mode} prior: {len(codes)} frames of {codes[0].size} symbols, payload {mean_bytes:.1f} B "
              "(byte-identical in both backends)")
        print(f"  {'backend':<13}{'enc µs/1k sym':>15}{'dec µs/1k sym':>15}{'enc µs/frame':>14}{'dec µs/frame':>14}"
              f"{'x constriction (enc, dec)':>28}")
        for name, res in (("constriction", fast), ("portable", portable)):
            ratio = (f"{res['encode_us_per_1k'] / fast['encode_us_per_1k']:.0f} x, "
                     f"{res['decode_us_per_1k'] / fast['decode_us_per_1k']:.0f} x")
            print(f"  {name:<13}{res['encode_us_per_1k']:>15.0f}{res['decode_us_per_1k']:>15.0f}"
                  f"{res['encode_us_per_frame']:>14.1f}{res['decode_us_per_frame']:>14.1f}{ratio:>28}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", type=Path, help="a converted bundle: its own codes and prior")
    default_data = Path(os.environ.get("EDGEKIT_DATA", REPO.parent / "shared" / "data"))
    parser.add_argument("--data", type=Path, default=default_data, help="the shared data folder")
    parser.add_argument("--samples", type=int, default=1000, help="held-out codes to bench on")
    parser.add_argument("--repeat", type=int, default=3, help="timing repetitions (best is kept)")
    args = parser.parse_args(argv)
    fm = args.data / "fashion-mnist"
    test = read_idx(fm / "t10k-images-idx3-ubyte.gz")[: args.samples]
    print(f"edgekit ans backend bench: {len(test)} held-out codes, {os.cpu_count()} cores, numpy {np.__version__}")
    if args.bundle:
        codes, bundle, _ = bundle_codes(args.bundle, test)
        prior = AnsPrior.load(bundle.path / bundle.wire["codecs"]["ans"]["prior"])
        bench_codes(f"bundle {args.bundle}", {"bundle's": prior}, codes, args.repeat)
        return 0
    train = pixel_codes(read_idx(fm / "train-images-idx3-ubyte.gz")[:5000])
    for (title, calib), codes in zip(train.items(), pixel_codes(test).values(), strict=True):
        priors = {mode: AnsPrior.fit(calib, per_channel=mode == "per-channel") for mode in ("per-tensor", "per-channel")}
        bench_codes(title, priors, codes, args.repeat)
    return 0


if __name__ == "__main__":
    sys.exit(main())

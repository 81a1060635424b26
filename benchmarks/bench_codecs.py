"""Benchmark the wire codecs on real codes: sizes against the entropy bound, raw int8 and float32; speed
against zlib measured in the same process.

    .venv/bin/python benchmarks/bench_codecs.py                    # codes made from Fashion-MNIST pixels
    .venv/bin/python benchmarks/bench_codecs.py --bundle bundles/fmnist   # the bundle's own codes and codecs

Without ``--bundle`` the codes are real Fashion-MNIST images pooled and quantized to int8 (shapes (7, 7, 4)
and (16,), like the codes edgekit models emit): codecs are fitted on training images and judged on test
images. With ``--bundle`` the device half of the bundle turns Fashion-MNIST test images into codes, the
bundle's fitted codecs are used as shipped, and the device half's own inference time is printed next to the
per-frame codec cost.

Every figure is per frame (one code). "frame" sizes include the 64-byte header; "x raw" and "x f32" are frame
bytes over the raw int8 code and over the float32 features at the same cut; "MB/s" is encode + decode of
whole frames, in MB of code; "vs zlib" is that throughput over zlib's (level 6, compress + decompress).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np

from edgekit.wire.codecs import AnsPrior, fit_codecs, order0_entropy_bits
from edgekit.demo.example_model import read_idx
from edgekit.wire.crc import CRC32C_IMPLEMENTATION
from edgekit.wire.frame_v1 import HEADER_SIZE
from edgekit.wire.decoder import WireDecoder
from edgekit.wire.encoder import WireEncoder
from edgekit.wire.spec import WireSpec

REPO = Path(__file__).resolve().parents[1]
BOUND_FACTOR, BOUND_SLACK = 1.03, 8.0




def pixel_codes(images: np.ndarray) -> dict[str, np.ndarray]:
    """Real codes without a model: pooled pixels, quantized to int8, in two code shapes."""
    x = images.astype(np.float32) / 255
    c774 = x.reshape(-1, 14, 2, 14, 2).mean((2, 4)).reshape(-1, 7, 2, 7, 2).transpose(0, 1, 3, 2, 4)
    c16 = x.reshape(-1, 4, 7, 4, 7).mean((2, 4)).reshape(-1, 16)
    return {"fmnist-pixels (7,7,4)": np.round(c774.reshape(-1, 7, 7, 4) * 127).astype(np.int8),
            "fmnist-pixels (16,)": (np.round(c16 * 255) - 128).astype(np.int8)}


def bundle_codes(bundle_dir: Path, images: np.ndarray) -> tuple[np.ndarray, object, float]:
    """The bundle's device half applied to ``images``: (codes, bundle, inference ms per sample)."""
    from edgekit.bundle.manifest import Bundle
    from edgekit.runtime import open_device_runner

    bundle = Bundle.load(bundle_dir)
    model = bundle.device_model()
    runner = open_device_runner(model.path, code_quant=model.code_quant)
    pre = bundle.input.preprocessing
    if pre is not None:
        x = np.stack([pre.apply_array(img) for img in images])
    else:
        x = (images.astype(np.float32) / 255).reshape(len(images), *runner.input_shape[1:])
    codes = np.concatenate([runner.run(x[i:i + 64]) for i in range(0, len(x), 64)])
    runner.run(x[:1])
    start = time.perf_counter()
    for i in range(50):
        runner.run(x[i:i + 1])
    infer_ms = (time.perf_counter() - start) / 50 * 1e3
    return codes.reshape(len(images), *bundle.code.shape).astype(np.int8), bundle, infer_ms


def throughput(encode, decode, codes: np.ndarray, repeat: int) -> tuple[float, float]:
    """Best-of-``repeat`` (frames/s, MB/s of code) for encode + decode of every code."""
    best = math.inf
    for _ in range(repeat):
        start = time.perf_counter()
        frames = [encode(c) for c in codes]
        for f in frames:
            decode(f)
        best = min(best, time.perf_counter() - start)
    return len(codes) / best, codes[0].size * len(codes) / best / 1e6


def bench_spec(spec: WireSpec, codes: np.ndarray, repeat: int) -> dict:
    """Sizes and speeds of every codec of ``spec`` and of zlib, on ``codes``."""
    elements = math.prod(spec.code_shape)
    decoder = WireDecoder([spec])
    rows = {}
    for name in spec.wire["codecs"]:
        enc = WireEncoder(spec.bundle_id, spec.code_shape, spec.wire, spec.base_dir, name)
        frames = [enc.encode(c, 0.05, 0, seq=i, boot_id=1, timestamp_ns=i) for i, c in enumerate(codes)]
        assert all(np.array_equal(decoder.decode(f).code, c) for f, c in zip(frames, codes, strict=True)), name
        sizes = np.array([len(f) for f in frames], dtype=np.float64)
        fps, mbs = throughput(lambda c, enc=enc: enc.encode(c, 0.05, 0, seq=0, boot_id=1, timestamp_ns=0),
                              decoder.decode, codes, repeat)
        rows[name] = {"frame": sizes.mean(), "p95": float(np.percentile(sizes, 95)),
                      "payload": sizes.mean() - HEADER_SIZE, "fps": fps, "mbs": mbs}
    zsizes = np.array([len(zlib.compress(c.tobytes(), 6)) + HEADER_SIZE for c in codes], dtype=np.float64)
    fps, mbs = throughput(lambda c: zlib.compress(c.tobytes(), 6), zlib.decompress, codes, repeat)
    rows["zlib-6 (ref)"] = {"frame": zsizes.mean(), "p95": float(np.percentile(zsizes, 95)),
                            "payload": zsizes.mean() - HEADER_SIZE, "fps": fps, "mbs": mbs}
    result = {"elements": elements, "rows": rows, "order0_bytes": order0_entropy_bits(codes) * elements / 8}
    prior_rel = spec.wire["codecs"].get("ans", {}).get("prior")
    if prior_rel:
        prior = AnsPrior.load(Path(spec.base_dir) / prior_rel)
        result["bound_bytes"] = prior.cross_entropy_bits(codes) / 8 / len(codes)
        result["ans_mode"] = "per channel" if prior.per_channel else "per tensor"
    return result


def print_result(title: str, res: dict, infer_ms: float | None) -> bool:
    """One table; returns whether ans met its bound."""
    n = res["elements"]
    zlib_mbs = res["rows"]["zlib-6 (ref)"]["mbs"]
    print(f"\n== {title}: code {n} B int8, float32 features {4 * n} B, header {HEADER_SIZE} B")
    print(f"   order-0 entropy of the codes {res['order0_bytes']:.1f} B/sample", end="")
    ok = True
    if "bound_bytes" in res:
        bound = res["bound_bytes"]
        ans = res["rows"]["ans"]["payload"]
        ok = ans <= BOUND_FACTOR * bound + BOUND_SLACK
        print(f"; cross-entropy under the stored {res['ans_mode']} prior {bound:.1f} B/sample\n"
              f"   ans payload {ans:.1f} B = {ans / bound:.4f} x bound (limit {BOUND_FACTOR} x + {BOUND_SLACK:.0f} B:"
              f" {'PASS' if ok else 'FAIL'})")
    else:
        print()
    print(f"   {'codec':<13}{'frame B':>9}{'p95 B':>8}{'payload':>9}{'x raw':>7}{'x f32':>7}"
          f"{'frames/s':>10}{'MB/s':>8}{'vs zlib':>8}{'us/frame':>10}")
    for name, r in res["rows"].items():
        us = 1e6 / r["fps"]
        print(f"   {name:<13}{r['frame']:>9.1f}{r['p95']:>8.0f}{r['payload']:>9.1f}{r['frame'] / n:>7.3f}"
              f"{r['frame'] / (4 * n):>7.3f}{r['fps']:>10,.0f}{r['mbs']:>8.1f}{r['mbs'] / zlib_mbs:>8.2f}{us:>10.1f}")
    if infer_ms is not None:
        worst = max(1e3 / r["fps"] for k, r in res["rows"].items() if "zlib" not in k)
        print(f"   device half inference {infer_ms:.3f} ms/sample here; slowest codec encode+decode "
              f"{worst:.3f} ms/frame = {worst / infer_ms:.1%} of it")
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", type=Path, help="a converted bundle: bench its own codes and codecs")
    default_data = Path(os.environ.get("EDGEKIT_DATA", REPO.parent / "shared" / "data"))
    parser.add_argument("--data", type=Path, default=default_data, help="the shared data folder")
    parser.add_argument("--samples", type=int, default=2000, help="held-out codes to bench on")
    parser.add_argument("--repeat", type=int, default=3, help="timing repetitions (best is kept)")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON here")
    args = parser.parse_args(argv)
    fm = args.data / "fashion-mnist"
    test = read_idx(fm / "t10k-images-idx3-ubyte.gz")[: args.samples]
    print(f"edgekit codec bench: {len(test)} held-out codes, crc32c={CRC32C_IMPLEMENTATION}, "
          f"{os.cpu_count()} cores, numpy {np.__version__}")
    results, ok = {}, True
    if args.bundle:
        codes, bundle, infer_ms = bundle_codes(args.bundle, test)
        spec = WireSpec.from_bundle(bundle)
        results[f"bundle {args.bundle}"] = res = bench_spec(spec, codes, args.repeat)
        ok &= print_result(f"bundle {args.bundle} ({bundle.bundle_id[:12]})", res, infer_ms)
    else:
        train = pixel_codes(read_idx(fm / "train-images-idx3-ubyte.gz")[:5000])
        for (title, calib), heldout in zip(train.items(), pixel_codes(test).values(), strict=True):
            with tempfile.TemporaryDirectory() as tmp:
                section, _ = fit_codecs(calib, heldout[:500], Path(tmp) / "wire")
                spec = WireSpec("ab" * 32, heldout.shape[1:], section, Path(tmp))
                results[title] = res = bench_spec(spec, heldout, args.repeat)
                ok &= print_result(title, res, None)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=float))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

"""Fuzz the frame decoder: mutate valid frames of every codec and check only documented errors come out.

    .venv/bin/python benchmarks/fuzz_frames.py --mutations 1000000 --seed 7

The test suite runs 100,000 mutations (tests/wire/test_frame_fuzz.py, ~2 s); this target runs as many as
asked, with any seed, on the same engine (tests/wire/wire_helpers.py: bit flips, byte edits, truncation,
extension, insertion/deletion, header fields set to edge values, payload replacement, splicing; half of them
with a recomputed CRC so the checks behind the CRC are reached). Exit status 1 on any undocumented exception.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "tests" / "wire"), str(REPO / "tests")]  # wire_helpers, and the support it imports

from wire_helpers import as_v2, codes_16, codes_774, fuzz, make_spec  # noqa: E402

from edgekit.demo.example_model import read_idx  # noqa: E402
from edgekit.wire.decoder import WireDecoder  # noqa: E402
from edgekit.wire.encoder import WireEncoder  # noqa: E402


def corpus(specs, code_sets) -> tuple[list[bytes], list[bytes | None]]:
    """Valid frames of every bundle, codec and frame version; the full bundle id of each version-2 frame."""
    frames, ids = [], []
    for sp, data in zip(specs, code_sets, strict=True):
        for codec in sp.wire["codecs"]:
            for version in sp.frame_versions:
                enc = WireEncoder(sp.bundle_id, sp.code_shape, sp.wire, sp.base_dir, codec, frame_version=version)
                frames += [enc.encode(c, 0.02, -128 + i, seq=i * 997, boot_id=i + 1, timestamp_ns=i)
                           for i, c in enumerate(data)]
                ids += [sp.full_id if version == 2 else None] * len(data)
    return frames, ids


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mutations", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=0)
    default_data = Path(os.environ.get("EDGEKIT_DATA", REPO.parent / "shared" / "data"))
    parser.add_argument("--data", type=Path, default=default_data, help="the shared data folder")
    args = parser.parse_args(argv)
    images = read_idx(args.data / "fashion-mnist" / "t10k-images-idx3-ubyte.gz")
    code_sets = [codes_774(images), codes_16(images)]
    with tempfile.TemporaryDirectory() as tmp:
        specs = [as_v2(make_spec(Path(tmp) / str(i), c[:3000], c[3000:4000])) for i, c in enumerate(code_sets)]
        frames, ids = corpus(specs, [c[5000:5040] for c in code_sets])
        decoder = WireDecoder(specs)
        start = time.perf_counter()
        try:
            counts = fuzz(decoder, frames, {s.code_shape for s in specs}, args.mutations, args.seed, ids)
        except AssertionError as err:
            print(f"FAIL: {err}")
            return 1
        elapsed = time.perf_counter() - start
    print(f"{args.mutations:,} mutations of {len(frames)} frames in {elapsed:.1f} s "
          f"({args.mutations / elapsed:,.0f}/s), seed {args.seed}: only documented errors")
    for code, n in sorted(counts.items(), key=lambda kv: -kv[1]):
        print(f"  {code:<20}{n:>10,}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

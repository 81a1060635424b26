"""The device spool's own speed: ``put`` + ``confirm`` per second with a receiver confirming 64 frames behind.

    python benchmarks/bench_spool.py [--frames 20000] [--bytes 2048] [--dir /path/on/the/device/disk] [--runs 5]

Prints the median of ``--runs`` runs (a spool file each, under ``--dir``: measure on the disk the device uses).
A camera needs tens of frames per second; this says how far above that the spool stays.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from edgekit.device.spool import Spool

TOPIC = "edgekit/v1/bench/features"


def one_run(folder: Path, frames: int, size: int) -> float:
    spool = Spool(folder / "spool.sqlite")
    payload = os.urandom(size)
    started = time.perf_counter()
    for seq in range(frames):
        spool.put(TOPIC, payload, boot_id=1, seq=seq)
        if seq >= 64:
            spool.confirm(1, seq - 64, seq - 64)
    rate = frames / (time.perf_counter() - started)
    spool.close()
    return rate


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=20000)
    parser.add_argument("--bytes", type=int, default=2048, help="payload bytes per frame")
    parser.add_argument("--dir", type=Path, default=None, help="where the spool files go (default: a temp dir)")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    rates = []
    for _ in range(args.runs):
        with tempfile.TemporaryDirectory(dir=args.dir) as folder:
            rates.append(one_run(Path(folder), args.frames, args.bytes))
    print(f"spool put + confirm of {args.bytes} B frames: median {statistics.median(rates):,.0f}/s "
          f"(runs: {', '.join(f'{r:,.0f}' for r in rates)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Rate–accuracy on CIFAR-10: bytes per image vs top-1 for image uploads (JPEG, WebP, PNG), the plain split
and the re-encoders (PCA, distill, entropic), printed as a table.

    .venv/bin/python benchmarks/bench_rate_accuracy.py            # the whole benchmark (see docs/results.md)
    .venv/bin/python benchmarks/bench_rate_accuracy.py --quick    # a smoke run of the whole chain
    .venv/bin/python benchmarks/bench_rate_accuracy.py --show     # print the table of the last full run

It runs ``examples/cifar10/run.py`` with the same options (that script holds the benchmark); ``--show``
only reprints ``build/cifar10/full/results.md``.
"""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

RUN = Path(__file__).resolve().parents[1] / "examples" / "cifar10" / "run.py"


def main() -> int:
    if "--show" in sys.argv:
        results = Path("build/cifar10/full/results.md")
        if not results.is_file():
            print(f"error: {results} not found; run this script without --show first", file=sys.stderr)
            return 1
        print(results.read_text())
        return 0
    sys.argv[0] = str(RUN)
    runpy.run_path(str(RUN), run_name="__main__")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The two CIFAR-10 server halves benchmarks/bench_receiver.py measures, built once under ``--work``.

- ``entropic``: the ResNet20 teacher (../shared/data/pretrained/resnet-cifar10) with an entropic re-encoder cut
  in after ``stage2_block1_out`` (examples/cifar10's recipe: 8 channels, stride-2 encoder, ``ans`` frames),
  trained briefly on a small subset: the receiver's throughput depends on the model's shape, not on how well
  it was trained.
- ``plain``: the same teacher split at ``stage2_block1_out`` with no re-encoder (a 16×16×32 int8 code).

    python benchmarks/receiver_bundles.py --work build/bench_receiver   # a few CPU-minutes, then reused
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "cifar10"
SPLIT = "stage2_block1_out"  # examples/cifar10/run.py's cut (docs/results.md, "The split")
ENTROPIC = dict(method="entropic", beta=0.2, channels=8, downsample=True, epochs=1, kd_epochs=1, train_tail=True,
                max_samples=1000)


def build_bundles(work: Path, data: str | None = None) -> dict[str, Path]:
    """``{"entropic": bundle, "plain": bundle}``, converted for ``rpi`` (only the server half matters here);
    a bundle already under ``work`` is reused."""
    sys.path.insert(0, str(EXAMPLE))
    from data import teacher_path  # examples/cifar10
    from sets import write_sets

    from edgekit.converters import convert
    from edgekit.reencode import reencode

    sets = write_sets(work / "sets", data, test=500, train=ENTROPIC["max_samples"])
    teacher = teacher_path(data)
    model = work / "models" / "entropic.keras"
    if not model.is_file():
        model.parent.mkdir(parents=True, exist_ok=True)
        reencode(model=teacher, split=SPLIT, data=sets["train"], output=model, seed=0, force=True,
                 echo=lambda line: print(f"  reencode: {line}", flush=True), **ENTROPIC)
    bundles = {}
    for name, source, split, codec in (("entropic", model, "code", "ans"), ("plain", teacher, SPLIT, None)):
        bundles[name] = out = work / "bundles" / name
        if not (out / "manifest.json").is_file():
            print(f"converting the {name} bundle", flush=True)
            convert(model=source, split=split, calib=sets["calib"], eval=sets["test"], targets=["rpi"],
                    runtime="tflite", output=out, force=True, latency_runs=3, codec=codec)
    return bundles


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=Path("build/bench_receiver"))
    parser.add_argument("--data", help="shared data folder (default $EDGEKIT_DATA or ../shared/data)")
    args = parser.parse_args()
    for name, path in build_bundles(args.work, args.data).items():
        print(f"{name}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

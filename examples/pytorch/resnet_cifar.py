"""Export a pretrained PyTorch CIFAR-10 ResNet to ONNX, check it against the Keras port, ready for convert.

The network is the classic CIFAR ResNet of He et al. (3 stages of 16/32/64 channels, option-A shortcuts:
stride-2 subsampling plus zero-padded channels), as in the pretrained ``resnet20-12fca82f.th``. It is written
here as its authors wrote it, ``x.view(x.size(0), -1)`` included, because that is what users export.

    .th state dict ──► ResNet (PyTorch) ──torch.onnx.export──► resnet20-{torchscript,dynamo}-{dynamic,static}.onnx
                                        ──logits on real JPEGs──► max |PyTorch - Keras port|, same top-1

Run (a minute on 2 cores; needs ``pip install torch==2.13.0 onnxscript``)::

    python examples/pytorch/resnet_cifar.py --out build/resnet20
    edgekit convert --list-splits build/resnet20/resnet20-dynamo-dynamic.onnx
"""

from __future__ import annotations

import argparse
import io
import os
import tarfile
from pathlib import Path

import numpy as np

DATA = Path(os.environ.get("EDGEKIT_DATA", Path(__file__).resolve().parents[2].parent / "shared" / "data"))
WEIGHTS = {"resnet20": "resnet20-12fca82f.th", "resnet56": "resnet56-4bfd9763.th"}
BLOCKS = {"resnet20": 3, "resnet56": 9}
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
EXPORTS = [(exporter, batch) for exporter in ("torchscript", "dynamo") for batch in ("dynamic", "static")]


def build_resnet(blocks: int):
    """ResNet-(6·blocks+2) for CIFAR-10, module names matching the pretrained state dicts."""
    import torch.nn.functional as F
    from torch import nn

    class Shortcut(nn.Module):
        """Option A: stride-2 subsampling, the new channels zero-padded (no weights)."""

        def __init__(self, planes: int):
            super().__init__()
            self.pad = planes // 4

        def forward(self, x):
            return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad), "constant", 0)

    class BasicBlock(nn.Module):
        def __init__(self, in_planes: int, planes: int, stride: int):
            super().__init__()
            self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(planes)
            self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(planes)
            self.shortcut = Shortcut(planes) if stride != 1 or in_planes != planes else nn.Sequential()

        def forward(self, x):
            out = F.relu(self.bn1(self.conv1(x)))
            out = self.bn2(self.conv2(out))
            return F.relu(out + self.shortcut(x))

    class ResNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(16)
            self.layer1 = self._stage(16, 16, 1)
            self.layer2 = self._stage(16, 32, 2)
            self.layer3 = self._stage(32, 64, 2)
            self.linear = nn.Linear(64, 10)

        @staticmethod
        def _stage(in_planes: int, planes: int, stride: int):
            strides = [stride] + [1] * (blocks - 1)
            return nn.Sequential(*[BasicBlock(in_planes if i == 0 else planes, planes, s) for i, s in enumerate(strides)])

        def forward(self, x):
            out = F.relu(self.bn1(self.conv1(x)))
            out = self.layer3(self.layer2(self.layer1(out)))
            out = F.avg_pool2d(out, out.size()[3])
            return self.linear(out.view(out.size(0), -1))

    return ResNet()


def load_pretrained(name: str = "resnet20", data: Path = DATA):
    """The pretrained network in eval mode (the checkpoint's keys carry DataParallel's ``module.`` prefix)."""
    import torch

    state = torch.load(data / "pretrained" / "resnet-cifar10" / WEIGHTS[name], map_location="cpu")["state_dict"]
    model = build_resnet(BLOCKS[name])
    model.load_state_dict({key.removeprefix("module."): value for key, value in state.items()})
    return model.eval()


def export_onnx(model, path: Path, exporter: str, batch: str) -> Path:
    """Export with ``torch.onnx.export``: ``exporter`` torchscript (dynamo=False) or dynamo; batch dynamic or static 1."""
    import torch

    example = torch.zeros(1 if batch == "static" else 2, 3, 32, 32)
    options = dict(input_names=["image"], output_names=["logits"])
    if exporter == "torchscript":
        if batch == "dynamic":
            options["dynamic_axes"] = {"image": {0: "batch"}, "logits": {0: "batch"}}
        torch.onnx.export(model, (example,), str(path), dynamo=False, opset_version=17, **options)
    else:
        if batch == "dynamic":
            options["dynamic_shapes"] = {"x": {0: torch.export.Dim("batch", min=1, max=1024)}}
        torch.onnx.export(model, (example,), str(path), dynamo=True, opset_version=18, external_data=False,
                          verbose=False, **options)
    return path


def cifar_test_images(count: int, data: Path = DATA) -> tuple[np.ndarray, np.ndarray]:
    """The first ``count`` test JPEGs of each class in turn, as uint8 NHWC pixels and labels (class index)."""
    from PIL import Image

    classes: dict[str, list[np.ndarray]] = {}
    with tarfile.open(data / "cifar10" / "cifar10-test-jpeg.tar.gz") as tar:
        for member in tar:
            if not member.name.endswith(".jpg"):
                continue
            label = member.name.split("/")[-2]
            images = classes.setdefault(label, [])
            if len(images) < -(-count // 10):
                images.append(np.asarray(Image.open(io.BytesIO(tar.extractfile(member).read())).convert("RGB")))
    per_class = [classes[name] for name in sorted(classes)]
    pairs = [(images[k], label) for k in range(max(map(len, per_class))) for label, images in enumerate(per_class)
             if k < len(images)][:count]
    pixels = np.stack([img for img, _ in pairs])
    labels = np.array([label for _, label in pairs])
    return pixels, labels


def normalize(pixels: np.ndarray) -> np.ndarray:
    """uint8 NHWC → float32 NHWC, ``x/255`` then the training mean/std (as ``--mean/--std`` in convert)."""
    return ((pixels.astype(np.float32) / 255.0 - np.float32(MEAN)) / np.float32(STD)).astype(np.float32)


def onnx_logits(path: Path, x_nchw: np.ndarray) -> np.ndarray:
    """Logits of an exported model, one sample at a time (static batch-1 exports accept nothing else)."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return np.concatenate([session.run(None, {"image": x_nchw[i : i + 1]})[0] for i in range(len(x_nchw))])


def keras_logits(name: str, x_nhwc: np.ndarray, data: Path = DATA) -> np.ndarray:
    """Logits of the Keras port (NHWC), the reference the exports must reproduce."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras

    model = keras.models.load_model(data / "pretrained" / "resnet-cifar10" / f"{name}.keras", compile=False)
    return np.asarray(model(x_nhwc, training=False))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=sorted(WEIGHTS), default="resnet20")
    parser.add_argument("--out", type=Path, default=Path("build/resnet20"))
    parser.add_argument("--samples", type=int, default=50, help="real CIFAR-10 test JPEGs for the Keras check")
    parser.add_argument("--data", type=Path, default=DATA)
    args = parser.parse_args()

    import torch

    args.out.mkdir(parents=True, exist_ok=True)
    model = load_pretrained(args.model, args.data)
    pixels, labels = cifar_test_images(args.samples, args.data)
    x = normalize(pixels)
    reference = keras_logits(args.model, x, args.data)
    with torch.no_grad():
        torch_out = model(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).numpy()
    print(f"PyTorch vs Keras port on {len(x)} test JPEGs: max |logit diff| {np.abs(torch_out - reference).max():.2e}, "
          f"same top-1 {np.mean(torch_out.argmax(1) == reference.argmax(1)):.0%}, "
          f"accuracy {np.mean(torch_out.argmax(1) == labels):.0%}")
    for exporter, batch in EXPORTS:
        path = export_onnx(model, args.out / f"{args.model}-{exporter}-{batch}.onnx", exporter, batch)
        logits = onnx_logits(path, x.transpose(0, 3, 1, 2).copy())
        print(f"{path}: max |logit diff| vs Keras {np.abs(logits - reference).max():.2e}, "
              f"same top-1 {np.mean(logits.argmax(1) == reference.argmax(1)):.0%}")


if __name__ == "__main__":
    main()

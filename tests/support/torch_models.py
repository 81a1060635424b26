"""Small PyTorch models trained on the digits in a second, saved as ``torch.export`` programs (``.pt2``)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import SimpleNamespace

import numpy as np

REPO = Path(__file__).resolve().parents[2]


def resnet_cifar_example():
    """``examples/pytorch/resnet_cifar.py`` as a module: the pretrained CIFAR ResNets (builder, ``load_pretrained``),
    ``cifar_test_images`` and ``normalize``, as the example runs them."""
    spec = importlib.util.spec_from_file_location("resnet_cifar", REPO / "examples" / "pytorch" / "resnet_cifar.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def digits_net(torch, residual: bool = False):
    """conv → relu → conv (the 4-channel code) → relu → linear; ``residual`` adds the stem's output to the
    code's (a tensor that crosses a cut after the code)."""
    nn = torch.nn

    class DigitsNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Conv2d(1, 4 if residual else 16, 3, padding=1)
            self.encoder = nn.Conv2d(4 if residual else 16, 4, 3, padding=1)
            self.classifier = nn.Linear(4 * 8 * 8, 10)

        def forward(self, x):
            stem = torch.relu(self.stem(x))
            code = torch.relu(self.encoder(stem))
            return self.classifier((code + stem if residual else code).flatten(1))

    return DigitsNet()


def residual_bn_net(torch):
    """conv → batch norm → relu, then a conv → batch norm block added to it (8 channels of 8×8 for 3×8×8 inputs):
    the ONNX export decomposes the batch norms into adds, so the residual add is ``add_N`` there but ``add`` in
    the program (EfficientNet's blocks, small)."""
    nn = torch.nn

    class Residual(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU())
            self.block = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8))
            self.head = nn.Sequential(nn.ReLU(), nn.Flatten(), nn.Linear(8 * 8 * 8, 10))

        def forward(self, x):
            stem = self.stem(x)
            return self.head(self.block(stem) + stem)

    return Residual()


def nchw(images: np.ndarray) -> np.ndarray:
    """(N, H, W, C) → (N, C, H, W), as PyTorch models take images."""
    return np.ascontiguousarray(images.transpose(0, 3, 1, 2))


def train(torch, net, digits, epochs: int = 30):
    """Adam on the 1,300 training digits; returns the net in eval mode."""
    torch.manual_seed(0)
    x, y = torch.from_numpy(nchw(digits.x_train)), torch.from_numpy(digits.y_train)
    optimizer = torch.optim.Adam(net.parameters(), 3e-3)
    for _ in range(epochs):
        for i in range(0, len(x), 64):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(net(x[i:i + 64]), y[i:i + 64]).backward()
            optimizer.step()
    return net.eval()


def save_program(torch, module, example, path: Path) -> Path:
    """``torch.export`` with a dynamic batch, then ``torch.export.save``: what docs/convert.md tells users."""
    program = torch.export.export(module, (example,), dynamic_shapes=({0: torch.export.Dim("batch")},))
    torch.export.save(program, str(path))
    return path


def save_digits_programs(torch, net, digits, root: Path) -> SimpleNamespace:
    """A trained ``digits_net`` as model.pt2 and as device.pt2 / server.pt2 halves (cut after the encoder's
    ReLU), with NCHW calib.npz (200 training digits) and test.npz (300 labelled test digits); its accuracy."""
    x = torch.from_numpy(nchw(digits.x_train[:2]))
    save_program(torch, net, x, root / "model.pt2")
    device = torch.nn.Sequential(net.stem, torch.nn.ReLU(), net.encoder, torch.nn.ReLU()).eval()
    server = torch.nn.Sequential(torch.nn.Flatten(), net.classifier).eval()
    save_program(torch, device, x, root / "device.pt2")
    save_program(torch, server, device(x).detach(), root / "server.pt2")
    np.savez(root / "calib.npz", x=nchw(digits.x_train[:200]))
    np.savez(root / "test.npz", x=nchw(digits.x_test[:300]), y=digits.y_test[:300])
    with torch.no_grad():
        predicted = net(torch.from_numpy(nchw(digits.x_test[:300]))).argmax(1).numpy()
    return SimpleNamespace(root=root, model=root / "model.pt2", calib=root / "calib.npz", test=root / "test.npz",
                           accuracy=float((predicted == digits.y_test[:300]).mean()))

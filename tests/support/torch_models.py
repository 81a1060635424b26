"""Small PyTorch models trained on the digits in a second, saved as ``torch.export`` programs (``.pt2``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


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

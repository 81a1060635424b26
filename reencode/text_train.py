"""The trained text re-encoders (PyTorch, CPU, the workstation only): a bottleneck MLP whose code is quantized in
training (straight-through), distilled from the teacher's similarities and, with gold pairs, aligned to the task.

    x ─► encoder MLP ─► z [k] ─► quantize (STE) ─► ẑ ─► [nested: zero the values past a random prefix] ─► decoder MLP ─► x̂

The loss, per step (weights in :class:`TrainSettings`):
    similarity  mean squared difference between the in-batch cosine matrices of x̂ and of the teacher's x
    pair        the same, for the cosine of each STS-B train pair alone (the pairs the metric is made of; no gold)
    cross       the same between x̂ and the teacher's x: a decoded query against documents the float model embedded
    recon       1 - cos(x̂, x): keeps x̂ in the teacher's space, so the server can compare it with documents the
                float model embedded
    task        CoSENT (Su 2022) on STS-B train pairs: every pair with a higher gold score should have a higher
                cos(x̂_a, x̂_b); only gold *order* is used, no test data
Quantizers as in text_codes.py: ``binary`` (sign, tanh gradient) or ``scalar`` b-bit levels of step 1 centred
on 0 (the encoder learns the scale). Every epoch the exact codec (numpy, the deployed rounding) is scored on the
dev pairs (``score``; nested codes: the mean over their prefixes), and the best epoch is kept: that is the only
use of dev.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import numpy as np

from edgekit.errors import UsageError

from .text_codes import Dense, Quantizer, TextCodec

__all__ = ["TrainSettings", "PairData", "train_codec", "settings_record"]


@dataclass
class TrainSettings:
    """Everything that decides a trained re-encoder (recorded in reencoder.json)."""

    code: str = "binary"  # binary | scalar
    bits: int = 1  # scalar: bits per value
    hidden: int = 512  # MLP width (0: a linear encoder and decoder)
    epochs: int = 30
    batch_size: int = 128
    learning_rate: float = 2e-3
    similarity_weight: float = 1.0
    recon_weight: float = 0.1
    pair_weight: float = 0.0
    cross_weight: float = 0.0
    task_weight: float = 1.0
    cosent_scale: float = 20.0
    prefixes: list[int] = field(default_factory=list)  # nested: payload prefixes (bytes) that must decode
    init: str = "pca"  # linear re-encoders: start from PCA, or from the first k dimensions as they are ("first")
    seed: int = 0


@dataclass
class PairData:
    """Embeddings and the gold-scored pairs between them (indices into ``x``), and each pair's source (file-year)."""

    x: np.ndarray
    first: np.ndarray
    second: np.ndarray
    scores: np.ndarray
    groups: np.ndarray | None = None


def train_codec(train: PairData, dev: PairData, payload_bytes: int, settings: TrainSettings,
                score: Callable[[TextCodec, PairData], float],
                echo: Callable[[str], None] | None = None) -> tuple[TextCodec, list[dict[str, Any]]]:
    """Train a re-encoder of ``payload_bytes`` on ``train``; return the codec of the best dev epoch and the history."""
    import torch

    torch.manual_seed(settings.seed)
    dims = _code_dims(payload_bytes, settings)
    model = _bottleneck_class()(train.x.shape[1], dims, settings)
    if not settings.hidden:
        model.first_init() if settings.init == "first" else model.pca_init(train.x)
    if settings.code == "scalar":
        model.scale_init(torch.from_numpy(train.x[:2048]))
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.learning_rate)
    steps = max(1, len(train.first) // settings.batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, settings.learning_rate, total_steps=settings.epochs * steps)
    generator = np.random.default_rng(settings.seed)
    best: tuple[float, TextCodec] | None = None
    history = []
    for epoch in range(settings.epochs):
        start = time.time()
        model.train()
        losses = [_step(model, optimizer, schedule, train, generator, settings) for _ in range(steps)]
        codec = model.codec()
        dev_score = score(codec, dev)
        history.append({"epoch": epoch + 1, "loss": float(np.mean(losses)), "dev_score": dev_score,
                        "seconds": round(time.time() - start, 2)})
        if echo:
            echo(f"epoch {epoch + 1}/{settings.epochs}  loss {history[-1]['loss']:.4f}  dev score {dev_score:.4f}")
        if best is None or dev_score > best[0]:
            best = (dev_score, codec)
    return best[1], history


def _code_dims(payload_bytes: int, settings: TrainSettings) -> int:
    if settings.code not in ("binary", "scalar"):
        raise UsageError(f"unknown code {settings.code!r} for a trained re-encoder", "choose binary or scalar")
    bits = 1 if settings.code == "binary" else settings.bits
    if bits not in (1, 2, 4, 8):
        raise UsageError(f"{bits}-bit values cannot be packed into bytes", "choose --bits 1, 2, 4 or 8")
    bad = [p for p in settings.prefixes if not 0 < p <= payload_bytes]
    if bad:
        raise UsageError(f"nested prefixes {bad} are not within 1..{payload_bytes} bytes", "list prefixes up to --bytes")
    return payload_bytes * 8 // bits


def _step(model: Any, optimizer: Any, schedule: Any, train: PairData, rng: np.random.Generator,
          settings: TrainSettings) -> float:
    import torch
    import torch.nn.functional as F

    pairs = rng.choice(len(train.first), settings.batch_size, replace=False)
    x = torch.from_numpy(train.x)
    a, b = x[train.first[pairs]], x[train.second[pairs]]
    gold = torch.from_numpy(train.scores[pairs]).float()
    batch = torch.cat([a, b])
    decoded = F.normalize(model(batch, nested=bool(settings.prefixes)), dim=1)
    teacher = F.normalize(batch, dim=1)
    similarity = ((decoded @ decoded.T - teacher @ teacher.T) ** 2).mean()
    recon = (1 - (decoded * teacher).sum(1)).mean()
    cross = ((decoded @ teacher.T - teacher @ teacher.T) ** 2).mean()
    half = len(a)
    pair = (((decoded[:half] * decoded[half:]).sum(1) - (teacher[:half] * teacher[half:]).sum(1)) ** 2).mean()
    cos = (decoded[:half] * decoded[half:]).sum(1) * settings.cosent_scale
    order = (gold[:, None] > gold[None, :]).float()  # [i, j] = 1 where pair i should score above pair j
    differences = (cos[None, :] - cos[:, None]) - (1 - order) * 1e12
    task = torch.logsumexp(torch.cat([torch.zeros(1), differences.flatten()]), 0)
    loss = settings.similarity_weight * similarity + settings.recon_weight * recon + settings.task_weight * task \
        + settings.pair_weight * pair + settings.cross_weight * cross
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    schedule.step()
    return float(loss.detach())


def _bottleneck_class() -> type:
    import torch
    from torch import nn

    class Bottleneck(nn.Module):
        """Encoder MLP → quantized code (straight-through) → decoder MLP."""

        def __init__(self, dims_in: int, code_dims: int, settings: TrainSettings) -> None:
            super().__init__()
            self.settings, self.code_dims = settings, code_dims
            hidden = settings.hidden
            self.encoder = nn.Sequential(nn.Linear(dims_in, hidden), nn.ReLU(), nn.Linear(hidden, code_dims)) \
                if hidden else nn.Sequential(nn.Linear(dims_in, code_dims))
            self.decoder = nn.Sequential(nn.Linear(code_dims, hidden), nn.ReLU(), nn.Linear(hidden, dims_in)) \
                if hidden else nn.Sequential(nn.Linear(code_dims, dims_in))
            self.half_range = ((1 << settings.bits) - 1) / 2 if settings.code == "scalar" else 1.0
            self.values_per_byte = 8 // (1 if settings.code == "binary" else settings.bits)

        @torch.no_grad()
        def pca_init(self, x: np.ndarray) -> None:
            """A linear re-encoder starts as PCA (encoder the projection, decoder the back-projection): training
            then only improves on the method that needs none."""
            from .text_methods import pca_basis

            mean, basis = pca_basis(x, self.code_dims)
            self.encoder[0].weight.copy_(torch.from_numpy(basis.T))
            self.encoder[0].bias.copy_(torch.from_numpy(-mean @ basis))
            self.decoder[0].weight.copy_(torch.from_numpy(basis))
            self.decoder[0].bias.copy_(torch.from_numpy(mean))

        @torch.no_grad()
        def first_init(self) -> None:
            """A linear re-encoder starts as the first k dimensions, uncentred (sign bits of them are the strongest
            simple baseline on STS-B test, and need nothing fitted to the training sentences)."""
            eye = torch.eye(self.decoder[0].weight.shape[0])[: self.code_dims]
            self.encoder[0].weight.copy_(eye)
            self.encoder[0].bias.zero_()
            self.decoder[0].weight.copy_(eye.T)
            self.decoder[0].bias.zero_()

        @torch.no_grad()
        def scale_init(self, x: torch.Tensor) -> None:
            """Scale the last encoder layer so z starts spread over the quantizer's range (std = half of it), and
            the first decoder layer inversely, so the decoder still reads the same function of z."""
            last = self.encoder[-1]
            z = self.encoder(x)
            factor = 0.5 * self.half_range / z.std(0).clamp_min(1e-6)
            last.weight.mul_(factor[:, None])
            last.bias.copy_((last.bias - z.mean(0)) * factor)
            self.decoder[0].bias.add_(self.decoder[0].weight @ z.mean(0))
            self.decoder[0].weight.div_(factor[None, :])

        def quantize(self, z: torch.Tensor) -> torch.Tensor:
            if self.settings.code == "binary":
                soft = torch.tanh(z)
                return soft + (torch.where(z > 0, 1.0, -1.0) - soft).detach()
            h = self.half_range
            clipped = z.clamp(-h - 0.5, h + 0.5)
            hard = torch.clamp(torch.floor(z + h + 0.5), 0, 2 * h) - h
            return clipped + (hard - clipped).detach()

        def forward(self, x: torch.Tensor, nested: bool = False) -> torch.Tensor:
            code = self.quantize(self.encoder(x))
            if nested:
                prefixes = torch.tensor(self.settings.prefixes)
                sent = prefixes[torch.randint(len(prefixes), (len(x),))] * self.values_per_byte
                code = code * (torch.arange(self.code_dims)[None, :] < sent[:, None]).float()
            return self.decoder(code)

        def codec(self) -> TextCodec:
            """The trained weights as the numpy reference codec (what the ONNX halves are built from)."""
            s = self.settings
            quantizer = Quantizer("binary", self.code_dims) if s.code == "binary" else Quantizer(
                "scalar", self.code_dims, s.bits, np.ones(self.code_dims, np.float32),
                np.full(self.code_dims, self.half_range, np.float32))
            return TextCodec(_dense(self.encoder), quantizer, _dense(self.decoder), sorted(s.prefixes))

    return Bottleneck


def _dense(sequential: Any) -> list[Dense]:
    """nn.Linear (+ ReLU) layers as :class:`Dense` (weights transposed to [in, out])."""
    from torch import nn

    layers: list[Dense] = []
    for module in sequential:
        if isinstance(module, nn.Linear):
            layers.append(Dense(module.weight.detach().numpy().T.copy(), module.bias.detach().numpy().copy()))
        elif isinstance(module, nn.ReLU):
            layers[-1].relu = True
    return layers


def settings_record(settings: TrainSettings) -> dict[str, Any]:
    """The settings as reencoder.json stores them."""
    return asdict(settings)

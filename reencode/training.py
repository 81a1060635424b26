"""The training loop shared by the trained re-encoders (Keras and PyTorch): seeded, resumable, one line per epoch.

    stages [(name, epochs, loss_fn)] ──► per epoch: shuffle (seeded by seed, stage, epoch) ──► trainer.step
        ──► a line "stage epoch i/n loss .. rate .. elapsed .." ──► checkpoint (weights, optimizer, history)

Only the optimizer step is the framework's (a :class:`Trainer`: keras_training.py, torch_training.py); the
epochs, shuffles, history, progress and checkpoints are this module's, once. The checkpoint is an ``.npz``
beside the output (the trainer's arrays: every variable it trains, its optimizers' state and noise
generator; the stage/epoch reached, the history, and the settings it was made with). ``resume`` continues
from it only when the settings are the same, so a resumed run ends with the same weights as an
uninterrupted one: the shuffles depend only on (seed, stage, epoch), the noise on the saved generator state.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol, Sequence

import numpy as np

from edgekit.errors import UsageError

__all__ = ["Stage", "Trainer", "train", "checkpoint_path", "LR_SCALES"]

LossFn = Callable[..., tuple[Any, dict[str, Any]]]
#: Learning-rate scale of the normal, fast and slow variables: a prior's few parameters must keep up with the
#: encoder (10×), a pretrained tail being fine-tuned must not forget what it knows (0.1×).
LR_SCALES = (1.0, 10.0, 0.1)


@dataclass
class Stage:
    """``loss_fn(*batch_tensors)`` returns (scalar loss tensor, {metric: scalar tensor}); each stage trains
    with a fresh optimizer at ``learning_rate``."""

    name: str
    epochs: int
    loss_fn: LossFn
    learning_rate: float = 1e-3


class Trainer(Protocol):
    """A framework's optimizer steps over the stages, and its state as arrays for the checkpoint."""

    def step(self, stage: int, batch: Sequence[np.ndarray]) -> dict[str, float]:
        """One optimizer step of stage ``stage`` on a mini-batch; returns the loss and metrics."""

    def state(self) -> dict[str, np.ndarray]:
        """Every array a resumed run needs (variables, optimizer slots, generator state)."""

    def restore(self, arrays: Mapping[str, np.ndarray]) -> None:
        """Set the state from arrays :meth:`state` returned."""


def checkpoint_path(output: str | Path) -> Path:
    """Where training of ``output`` keeps its checkpoint."""
    output = Path(output)
    return output.with_name(output.name + ".ckpt.npz")


def train(stages: Sequence[Stage], arrays: Sequence[np.ndarray], trainer: Trainer, batch_size: int, seed: int,
          checkpoint: Path, settings: dict[str, Any], resume: bool = False, progress: bool = False,
          echo: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """Run ``stages`` over mini-batches of ``arrays`` (same length N) with ``trainer``'s steps; returns the
    per-epoch history."""
    from tqdm import tqdm

    history: list[dict[str, Any]] = []
    done = (0, 0)  # (stage index, epochs finished in it)
    if resume:
        history, done = _restore(checkpoint, settings, trainer)
    n = len(arrays[0])
    for index, stage in enumerate(stages):
        if index < done[0]:
            continue
        for epoch in range(done[1] if index == done[0] else 0, stage.epochs):
            started = time.perf_counter()
            order = np.random.default_rng([seed, index, epoch]).permutation(n)
            sums: dict[str, float] = {}
            batches = range(0, n, batch_size)
            for start in tqdm(batches, desc=f"{stage.name} {epoch + 1}/{stage.epochs}", unit="batch",
                              disable=not progress, leave=False):
                idx = order[start:start + batch_size]
                for key, value in trainer.step(index, [a[idx] for a in arrays]).items():
                    sums[key] = sums.get(key, 0.0) + value * len(idx)
            row = {"stage": stage.name, "epoch": epoch + 1, "epochs": stage.epochs,
                   **{k: v / n for k, v in sums.items()}, "seconds": time.perf_counter() - started}
            history.append(row)
            _save(checkpoint, settings, trainer.state(), history, (index, epoch + 1))
            if echo:
                echo(_line(row))
    return history


def _line(row: dict[str, Any]) -> str:
    metrics = " ".join(f"{k} {v:.5g}" for k, v in row.items() if k not in ("stage", "epoch", "epochs", "seconds"))
    return f"{row['stage']} epoch {row['epoch']}/{row['epochs']}  {metrics}  elapsed {row['seconds']:.1f} s"


def _save(path: Path, settings: dict[str, Any], arrays: dict[str, np.ndarray], history: list[dict[str, Any]],
          done: tuple[int, int]) -> None:
    meta = {"settings": settings, "history": history, "done": list(done)}
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, meta=np.array(json.dumps(meta)), **arrays)
    tmp.replace(path)


def _restore(path: Path, settings: dict[str, Any], trainer: Trainer) -> tuple[list[dict[str, Any]], tuple[int, int]]:
    if not path.is_file():
        raise UsageError(f"--resume given but there is no checkpoint {path}", "run once without --resume")
    with np.load(path, allow_pickle=False) as data:
        meta = json.loads(str(data["meta"]))
        if meta["settings"] != json.loads(json.dumps(settings)):
            raise UsageError(f"checkpoint {path} was made with other settings",
                             "resume with the same options, or delete the checkpoint to start over")
        trainer.restore({key: data[key] for key in data.files if key != "meta"})
    return meta["history"], (int(meta["done"][0]), int(meta["done"][1]))

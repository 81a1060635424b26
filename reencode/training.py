"""The training loop shared by the trained re-encoders: seeded, resumable, one line per epoch.

    stages [(name, epochs, loss_fn)] ──► per epoch: shuffle (seeded by seed, stage, epoch) ──► Adam steps
        ──► a line "stage epoch i/n loss .. rate .. elapsed .." ──► checkpoint (weights, optimizer, history)

The checkpoint is an ``.npz`` beside the output (every variable of the trainable layers, the optimizer's
variables, the stage/epoch reached, the history, and the settings it was made with). ``resume`` continues
from it only when the settings are the same, so a resumed run ends with the same weights as an
uninterrupted one: the shuffles depend only on (seed, stage, epoch), the noise on the saved generator state.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from edgekit.errors import UsageError

__all__ = ["Stage", "train", "checkpoint_path"]

LossFn = Callable[..., tuple[Any, dict[str, Any]]]
_SCALES = (1.0, 10.0, 0.1)  # learning-rate scale of the normal, fast and slow variables


@dataclass
class Stage:
    """``loss_fn(*batch_arrays)`` returns (scalar loss tensor, {metric: scalar tensor}); gradients flow to
    ``variables`` (the trainable ones) only."""

    name: str
    epochs: int
    loss_fn: LossFn
    learning_rate: float = 1e-3


def checkpoint_path(output: str | Path) -> Path:
    """Where training of ``output`` keeps its checkpoint."""
    output = Path(output)
    return output.with_name(output.name + ".ckpt.npz")


def train(stages: Sequence[Stage], arrays: Sequence[np.ndarray], state: Sequence[Any], batch_size: int, seed: int,
          checkpoint: Path, settings: dict[str, Any], resume: bool = False, progress: bool = False,
          echo: Callable[[str], None] | None = None, fast: Sequence[Any] = (),
          slow: Sequence[Any] = ()) -> list[dict[str, Any]]:
    """Run ``stages`` over mini-batches of ``arrays`` (same length N); ``state`` are every variable to
    checkpoint (trainable ones and e.g. noise generator states). ``fast`` variables (a prior's few
    parameters, which must keep up with the encoder) learn at 10× the rate, ``slow`` ones (a pretrained
    tail being fine-tuned, which must not forget what it knows) at 0.1×. Returns the per-epoch history."""
    import keras
    import tensorflow as tf
    from tqdm import tqdm

    special = {id(v) for v in (*fast, *slow)}
    groups = [[v for v in state if v.trainable and id(v) not in special], list(fast), list(slow)]
    optimizers = [[keras.optimizers.Adam(s.learning_rate * scale) for scale in _SCALES] for s in stages]
    for pair in optimizers:
        for optimizer, group in zip(pair, groups):
            optimizer.build(group)
    history: list[dict[str, Any]] = []
    done = (0, 0)  # (stage index, epochs finished in it)
    if resume:
        history, done = _restore(checkpoint, settings, state, [o for pair in optimizers for o in pair])
    n = len(arrays[0])
    for index, stage in enumerate(stages):
        if index < done[0]:
            continue
        step = _step_function(stage.loss_fn, groups, optimizers[index], tf)
        for epoch in range(done[1] if index == done[0] else 0, stage.epochs):
            started = time.perf_counter()
            order = np.random.default_rng([seed, index, epoch]).permutation(n)
            sums: dict[str, float] = {}
            batches = range(0, n, batch_size)
            for start in tqdm(batches, desc=f"{stage.name} {epoch + 1}/{stage.epochs}", unit="batch",
                              disable=not progress, leave=False):
                idx = order[start:start + batch_size]
                metrics = step(*[tf.constant(a[idx]) for a in arrays])
                for key, value in metrics.items():
                    sums[key] = sums.get(key, 0.0) + float(value) * len(idx)
            row = {"stage": stage.name, "epoch": epoch + 1, "epochs": stage.epochs,
                   **{k: v / n for k, v in sums.items()}, "seconds": time.perf_counter() - started}
            history.append(row)
            _save(checkpoint, settings, state, [o for pair in optimizers for o in pair], history, (index, epoch + 1))
            if echo:
                echo(_line(row))
    return history


def _step_function(loss_fn: LossFn, groups: list[list[Any]], optimizers: list[Any], tf: Any) -> Callable[..., dict]:
    bounds = np.cumsum([0] + [len(g) for g in groups])

    @tf.function(reduce_retracing=True)
    def step(*batch):
        with tf.GradientTape() as tape:
            loss, metrics = loss_fn(*batch)
        grads = tape.gradient(loss, [v for group in groups for v in group])
        for i, (group, optimizer) in enumerate(zip(groups, optimizers)):
            pairs = [(g, v) for g, v in zip(grads[bounds[i]:bounds[i + 1]], group) if g is not None]
            if pairs:
                optimizer.apply_gradients(pairs)
        return {"loss": loss, **metrics}

    return step


def _line(row: dict[str, Any]) -> str:
    metrics = " ".join(f"{k} {v:.5g}" for k, v in row.items() if k not in ("stage", "epoch", "epochs", "seconds"))
    return f"{row['stage']} epoch {row['epoch']}/{row['epochs']}  {metrics}  elapsed {row['seconds']:.1f} s"


def _save(path: Path, settings: dict[str, Any], state: Sequence[Any], optimizers: Sequence[Any],
          history: list[dict[str, Any]], done: tuple[int, int]) -> None:
    arrays = {f"v{i}": np.asarray(v.numpy()) for i, v in enumerate(state)}
    for j, optimizer in enumerate(optimizers):
        arrays.update({f"o{j}_{i}": np.asarray(v.numpy()) for i, v in enumerate(optimizer.variables)})
    meta = {"settings": settings, "history": history, "done": list(done)}
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, meta=np.array(json.dumps(meta)), **arrays)
    tmp.replace(path)


def _restore(path: Path, settings: dict[str, Any], state: Sequence[Any],
             optimizers: Sequence[Any]) -> tuple[list[dict[str, Any]], tuple[int, int]]:
    if not path.is_file():
        raise UsageError(f"--resume given but there is no checkpoint {path}", "run once without --resume")
    with np.load(path, allow_pickle=False) as data:
        meta = json.loads(str(data["meta"]))
        if meta["settings"] != json.loads(json.dumps(settings)):
            raise UsageError(f"checkpoint {path} was made with other settings",
                             "resume with the same options, or delete the checkpoint to start over")
        for i, v in enumerate(state):
            v.assign(data[f"v{i}"])
        for j, optimizer in enumerate(optimizers):
            for i, v in enumerate(optimizer.variables):
                v.assign(data[f"o{j}_{i}"])
    return meta["history"], (int(meta["done"][0]), int(meta["done"][1]))

"""The Keras optimizer step of the shared training loop (training.py): Adam per stage, a ``tf.function`` step.

Imports TensorFlow: import this module only inside functions.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import keras
import numpy as np
import tensorflow as tf

from .training import LR_SCALES, Stage

__all__ = ["KerasTrainer"]


class KerasTrainer:
    """``state`` are every variable to checkpoint (trainable ones and e.g. the noise generator's state);
    ``fast`` and ``slow`` ones learn at the scaled rates of :data:`~edgekit.reencode.training.LR_SCALES`."""

    def __init__(self, stages: Sequence[Stage], state: Sequence[Any], fast: Sequence[Any] = (),
                 slow: Sequence[Any] = ()):
        special = {id(v) for v in (*fast, *slow)}
        self.variables = list(state)
        self.groups = [[v for v in state if v.trainable and id(v) not in special], list(fast), list(slow)]
        self.optimizers = [[keras.optimizers.Adam(s.learning_rate * scale) for scale in LR_SCALES] for s in stages]
        for per_stage in self.optimizers:
            for optimizer, group in zip(per_stage, self.groups):
                optimizer.build(group)
        self.losses = [s.loss_fn for s in stages]
        self._steps: dict[int, Callable[..., dict]] = {}

    def step(self, stage: int, batch: Sequence[np.ndarray]) -> dict[str, float]:
        if stage not in self._steps:
            self._steps[stage] = _step_function(self.losses[stage], self.groups, self.optimizers[stage])
        return {k: float(v) for k, v in self._steps[stage](*[tf.constant(a) for a in batch]).items()}

    def _optimizers(self) -> list[Any]:
        return [o for per_stage in self.optimizers for o in per_stage]

    def state(self) -> dict[str, np.ndarray]:
        arrays = {f"v{i}": np.asarray(v.numpy()) for i, v in enumerate(self.variables)}
        for j, optimizer in enumerate(self._optimizers()):
            arrays.update({f"o{j}_{i}": np.asarray(v.numpy()) for i, v in enumerate(optimizer.variables)})
        return arrays

    def restore(self, arrays: Mapping[str, np.ndarray]) -> None:
        for i, v in enumerate(self.variables):
            v.assign(arrays[f"v{i}"])
        for j, optimizer in enumerate(self._optimizers()):
            for i, v in enumerate(optimizer.variables):
                v.assign(arrays[f"o{j}_{i}"])


def _step_function(loss_fn: Callable, groups: list[list[Any]], optimizers: list[Any]) -> Callable[..., dict]:
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

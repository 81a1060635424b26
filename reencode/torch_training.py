"""The PyTorch optimizer step of the shared training loop (training.py): Adam per stage, autograd.

The counterpart of keras_training.py: a fresh Adam per stage (Keras's epsilon, 1e-7), the normal, fast
(the prior) and slow (a fine-tuned tail) parameters as its groups at :data:`LR_SCALES` of the stage's rate.
The checkpoint holds the parameters, every optimizer's moments and step, and the noise generator's state.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import torch

from .training import LR_SCALES, Stage

__all__ = ["TorchTrainer"]

_ADAM_EPSILON = 1e-7  # Keras's default, so both frameworks take the same steps


class TorchTrainer:
    """Steps over ``params`` (``fast`` and ``slow`` ones among them at scaled rates); ``generator`` is the
    code's noise generator (None for distill)."""

    def __init__(self, stages: Sequence[Stage], params: Sequence[Any], fast: Sequence[Any] = (),
                 slow: Sequence[Any] = (), generator: torch.Generator | None = None):
        special = {id(p) for p in (*fast, *slow)}
        groups = [[p for p in params if id(p) not in special], list(fast), list(slow)]
        self.params = [p for group in groups for p in group]
        self.optimizers = [torch.optim.Adam([{"params": group, "lr": stage.learning_rate * scale}
                                             for group, scale in zip(groups, LR_SCALES) if group],
                                            eps=_ADAM_EPSILON) for stage in stages]
        self.losses = [stage.loss_fn for stage in stages]
        self.generator = generator

    def step(self, stage: int, batch: Sequence[np.ndarray]) -> dict[str, float]:
        optimizer = self.optimizers[stage]
        optimizer.zero_grad(set_to_none=True)
        loss, metrics = self.losses[stage](*[torch.from_numpy(np.ascontiguousarray(a)) for a in batch])
        loss.backward()
        optimizer.step()
        return {"loss": float(loss.detach()), **{k: float(v.detach()) for k, v in metrics.items()}}

    def state(self) -> dict[str, np.ndarray]:
        arrays = {f"v{i}": p.detach().numpy().copy() for i, p in enumerate(self.params)}
        if self.generator is not None:
            arrays["generator"] = self.generator.get_state().numpy()
        for j, optimizer in enumerate(self.optimizers):
            for i, p in enumerate(self.params):
                arrays.update({f"o{j}_{i}_{key}": value.detach().numpy().copy()
                               for key, value in optimizer.state.get(p, {}).items()})
        return arrays

    def restore(self, arrays: Mapping[str, np.ndarray]) -> None:
        with torch.no_grad():
            for i, p in enumerate(self.params):
                p.copy_(torch.from_numpy(arrays[f"v{i}"]))
        if self.generator is not None:
            self.generator.set_state(torch.from_numpy(arrays["generator"]))
        for j, optimizer in enumerate(self.optimizers):
            for i, p in enumerate(self.params):
                prefix = f"o{j}_{i}_"
                slots = {key[len(prefix):]: torch.from_numpy(arrays[key].copy()) for key in arrays
                         if key.startswith(prefix)}
                if slots:
                    optimizer.state[p] = slots

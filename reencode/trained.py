"""The trained re-encoders' recipe, written once for Keras and PyTorch (numpy only at import).

    options ─► checks, settings (recorded) ─┐
    features at the cut, teacher outputs ───┼─► Objective (losses on the framework's ops) ─► stages ─► train()
    the framework's Student ────────────────┘        head: normalised MSE (+ beta · rate)
                                                     kd:   cross-entropy to the teacher (+ labels) (+ beta · rate)

A framework contributes only its layers (keras_graph.py / torch_layers.py) and its optimizer step
(keras_training.py / torch_training.py), packed as a :class:`Student`; the losses, the rate (the learned
prior's bits per input pixel, prior.py), beta, the two stages and the loop's bookkeeping (training.py) are
the same code for both, so a Keras and a PyTorch re-encoder of a teacher train the same objective.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from edgekit.errors import UsageError

from .qat import MARGIN, MARGIN_WEIGHT, boundary_margin, straight_through_round
from .training import Stage, Trainer, checkpoint_path, train

__all__ = ["TrainOptions", "Trained", "Student", "check_features", "input_pixels", "is_probability", "fit",
           "record_settings"]


@dataclass
class TrainOptions:
    """Settings of the trained re-encoders (recorded in the model's metadata)."""

    channels: int
    epochs: int = 10
    kd_epochs: int = 0
    beta: float = 0.0
    downsample: bool = False
    hidden: int | None = None
    batch_size: int = 64
    learning_rate: float = 1e-3
    seed: int = 0
    train_tail: bool = False
    qat_epochs: int = 0
    levels: list[int] = field(default_factory=list)  # a nested code: channel counts that decode alone (nested.py)


@dataclass
class Trained:
    """The assembled model, the settings to record, per-epoch history, and the learned prior (entropic)."""

    model: Any
    settings: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)
    prior: dict[str, Any] | None = None


@dataclass
class Student:
    """What a framework gives the recipe. ``ops`` is its tensor namespace (``keras.ops``, or torch_layers'
    ``TORCH_OPS``); ``encode``/``decode`` run the re-encoder in training mode (code noisy for entropic),
    ``tail`` the teacher's tail (its batch norm frozen), ``bits`` the prior's bits per sample (None: distill),
    ``trainer`` makes the optimizer steps for the stages."""

    ops: Any
    encode: Callable[[Any], Any]
    decode: Callable[[Any], Any]
    tail: Callable[[Any], Any]
    bits: Callable[[Any], Any] | None
    trainer: Callable[[Sequence[Stage]], Trainer]
    latent: Callable[[Any], Any] | None = None  # the encoder before the code's rounding (entropic; qat.py)
    nest: Callable[[Any], tuple[Any, Any]] | None = None  # code -> (code cut to a random level, kept mask)


def check_features(shape: tuple[int, ...], split: str, downsample: bool, channels_first: bool) -> tuple[int, int, int]:
    """(height, width, channels) of image-like features at the cut; a usage error for any other shape."""
    layout = "channels × height × width" if channels_first else "height × width × channels"
    if len(shape) != 3:
        raise UsageError(f"the features at {split!r} have shape {shape}, not {layout}",
                         "the trained re-encoders are convolutional: cut at an image-like layer, or use --method pca")
    height, width, channels = (shape[1], shape[2], shape[0]) if channels_first else shape
    if downsample and (height % 2 or width % 2):
        raise UsageError(f"--downsample needs an even feature size, {split!r} is {height}×{width}",
                         "drop --downsample or cut at another layer")
    return height, width, channels


def input_pixels(input_shape: tuple[int, ...], channels_first: bool) -> int:
    """Pixels of an image input (H × W, the channel axis left out), else its element count: the rate's unit."""
    if len(input_shape) != 3:
        return int(np.prod(input_shape))
    return int(np.prod(input_shape[1:] if channels_first else input_shape[:2]))


def is_probability(outputs: np.ndarray) -> bool:
    """Whether the teacher ends in a softmax (rows in [0, 1] summing to 1) rather than logits."""
    rows = outputs.reshape(len(outputs), -1)
    return bool(rows.min() >= 0 and rows.max() <= 1 and np.allclose(rows.sum(axis=1), 1, atol=1e-3))


def fit(student: Student, features: np.ndarray, teacher_out: np.ndarray, labels: np.ndarray | None,
        options: TrainOptions, settings: dict[str, Any], pixels: int, output: Path, resume: bool, progress: bool,
        echo: Callable[[str], None] | None) -> list[dict[str, Any]]:
    """Train ``student`` in the two stages on the teacher's ``features`` at the cut and its outputs (and
    ``labels``); ``settings`` are recorded and guard ``resume``. Returns the per-epoch history."""
    objective = Objective(student, options.beta, float(features.var()) or 1.0, pixels, is_probability(teacher_out))
    stages = [Stage("distill", options.epochs, objective.head, options.learning_rate)]
    if options.kd_epochs:
        stages.append(Stage("kd", options.kd_epochs, objective.kd, options.learning_rate))
    if options.qat_epochs:
        stages.append(Stage("qat", options.qat_epochs, objective.qat(kd=bool(options.kd_epochs)),
                            options.learning_rate))
    arrays = [features, teacher_out] + ([labels.astype(np.int64)] if labels is not None else [])
    return train(stages, arrays, student.trainer(stages), options.batch_size, options.seed, checkpoint_path(output),
                 settings, resume, progress, echo)


def record_settings(options: TrainOptions, hidden: int, feature_channels: int, labels: bool, samples: int
                    ) -> dict[str, Any]:
    """The settings a trained re-encoder records (the same keys for Keras and PyTorch)."""
    qat = {"qat_margin": MARGIN, "qat_margin_weight": MARGIN_WEIGHT} if options.qat_epochs else {}
    return {**vars(options), "hidden": hidden, "feature_channels": feature_channels, "labels": labels,
            "samples": samples, **qat}


class Objective:
    """Loss functions of the training stages (batch tensors in, (loss, metrics) out), on ``student.ops``."""

    def __init__(self, student: Student, beta: float, feature_var: float, input_pixels: int, probabilities: bool):
        self.student, self.ops = student, student.ops
        self.beta, self.feature_var, self.pixels = beta, feature_var, input_pixels
        self.probabilities = probabilities

    def _rate(self, code, metrics, keep=None):
        """beta * bits per input pixel (0 without a prior); records bits per sample (a nested code's: of the
        channels each sample ``keep``s, the ones its level sends)."""
        if self.student.bits is None:
            return 0.0
        metrics["bits"] = self.ops.mean(self.student.bits(code) if keep is None else self.student.bits(code, keep))
        return self.beta * metrics["bits"] / self.pixels

    def head(self, features, teacher_out, labels=None, code=None):
        """Head distillation: the rebuilt features' squared error, divided by the features' variance."""
        code, keep = self._nested(self.student.encode(features) if code is None else code)
        rebuilt = self.student.decode(code)
        metrics = {"mse": self.ops.mean(self.ops.square(rebuilt - features)) / self.feature_var}
        return metrics["mse"] + self._rate(code, metrics, keep), metrics

    def kd(self, features, teacher_out, labels=None, code=None):
        """Knowledge distillation: cross-entropy to the teacher's output distribution, plus to the labels."""
        ops = self.ops
        code, keep = self._nested(self.student.encode(features) if code is None else code)
        student = self.student.tail(self.student.decode(code))
        if self.probabilities:
            target, log_p = teacher_out, ops.log(ops.clip(student, 1e-7, 1.0))
        else:
            target, log_p = ops.softmax(teacher_out), ops.log_softmax(student)
        metrics = {"kd": -ops.mean(ops.sum(target * log_p, axis=-1))}
        loss = metrics["kd"]
        if labels is not None:
            metrics["ce"] = -ops.mean(ops.take_along_axis(log_p, labels[:, None], axis=-1))
            loss = loss + metrics["ce"]
        return loss + self._rate(code, metrics, keep), metrics

    def _nested(self, code):
        """A nested code (Matryoshka-style): every sample keeps the first channels of a level drawn at random,
        the rest zeroed as the wire fills them, so each level's prefix learns to decode alone; else as is."""
        return (code, None) if self.student.nest is None else self.student.nest(code)

    def qat(self, kd: bool) -> Callable[..., tuple[Any, dict[str, Any]]]:
        """Quantization-aware fine-tuning (qat.py): the kd (or head) loss on the code rounded as deployed, plus
        the margin that keeps latents away from rounding boundaries (an entropic code: ``student.latent``)."""
        distortion = self.kd if kd else self.head

        def loss(features, teacher_out, labels=None):
            latent = self.student.latent(features)
            code = straight_through_round(self.ops, latent)
            total, metrics = distortion(features, teacher_out, labels, code=code)
            metrics["margin"] = boundary_margin(self.ops, latent)
            return total + MARGIN_WEIGHT * metrics["margin"], metrics

        return loss

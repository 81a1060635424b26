"""The three re-encoders for Keras teachers: each returns the assembled model and its settings.

All three train (or fit) on the teacher's features at the cut, computed once: the teacher is frozen, so
its head never changes and each epoch only runs the re-encoder (and the tail for the distillation stage).

    pca       fit_pca(features) ─► Conv 1×1 ``code`` (K components) ─► Conv 1×1 back-projection + mean
    distill   conv encoder ─► ``code`` ─► conv decoder; stage 1: normalised MSE to the teacher's features
              (head distillation, no labels); stage 2 (``kd_epochs``): cross-entropy to the teacher's
              output distribution, plus to the labels when given; ``train_tail`` fine-tunes the teacher's
              tail too in stage 2 (at 0.1× the learning rate)
    entropic  as distill, the code an ``IntegerCode`` (noise / rounding) with a learned ``LogisticPrior``;
              loss = distortion + beta * rate, rate in bits per input pixel (as learned image codecs count)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from edgekit.converters.halves import batched
from edgekit.errors import UsageError

from .keras_graph import Cut, assemble, conv_decoder, conv_encoder, pca_layers
from .metadata import CODE_NAME
from .pca import choose_channels, fit_pca
from .training import Stage, checkpoint_path, train

__all__ = ["Trained", "TrainOptions", "pca_keras", "trained_keras"]


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


@dataclass
class Trained:
    """The assembled model, the settings to record, per-epoch history, and the learned prior (entropic)."""

    model: Any
    settings: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)
    prior: dict[str, Any] | None = None


def features_of(cut: Cut, x: np.ndarray) -> np.ndarray:
    """The teacher's features at the cut (float32)."""
    return batched(lambda b: np.asarray(cut.head(b, training=False)))(x).astype(np.float32)


def pca_keras(cut: Cut, x: np.ndarray, channels: int | None, target_agreement: float | None) -> Trained:
    """PCA at the cut; K given, or the smallest K keeping ``target_agreement`` top-1 with the teacher on ``x``."""
    features = features_of(cut, x)
    pca = fit_pca(features)
    tail = batched(lambda b: np.asarray(cut.tail(b, training=False)))
    settings = choose_channels(pca, features, tail, channels, target_agreement)
    channels = settings["channels"]
    encoder, decoder = pca_layers(pca, channels, len(cut.feature_shape))
    return Trained(assemble(cut, encoder, decoder, f"{cut.teacher.name}_pca{channels}"), settings)


def trained_keras(cut: Cut, x: np.ndarray, labels: np.ndarray | None, method: str, options: TrainOptions,
                  output: Path, resume: bool, progress: bool, echo: Callable[[str], None] | None) -> Trained:
    """Distill (``method='distill'``) or rate-train (``'entropic'``) an encoder/decoder at the cut."""
    import keras

    from .layers import IntegerCode, LogisticPrior

    shape = cut.feature_shape
    if len(shape) != 3:
        raise UsageError(f"the features at {cut.split!r} have shape {shape}, not height × width × channels",
                         "the trained re-encoders are convolutional: cut at an image-like layer, or use --method pca")
    if options.downsample and (shape[0] % 2 or shape[1] % 2):
        raise UsageError(f"--downsample needs an even feature size, {cut.split!r} is {shape[0]}×{shape[1]}",
                         "drop --downsample or cut at another layer")
    keras.utils.set_random_seed(options.seed)
    hidden = options.hidden or shape[-1]
    entropic = method == "entropic"
    code_layer = IntegerCode(seed=options.seed, name=CODE_NAME) if entropic else None
    encoder = conv_encoder(options.channels, hidden, options.downsample, code_layer)
    decoder = conv_decoder(shape[-1], hidden, options.downsample)
    prior = LogisticPrior(name="prior") if entropic else None
    model = assemble(cut, encoder, decoder, f"{cut.teacher.name}_{method}{options.channels}")
    if prior is not None:
        prior.build((None, *model.get_layer(CODE_NAME).output.shape[1:]))

    features = features_of(cut, x)
    teacher_out = batched(lambda b: np.asarray(cut.tail(b, training=False)))(features)
    arrays = [features, teacher_out] + ([labels.astype(np.int32)] if labels is not None else [])
    losses = _Losses(encoder, decoder, cut.tail, prior, options.beta, float(features.var()) or 1.0,
                     _pixels(tuple(cut.teacher.inputs[0].shape[1:])), _is_probability(teacher_out))
    stages = [Stage("distill", options.epochs, losses.head, options.learning_rate)]
    if options.kd_epochs:
        stages.append(Stage("kd", options.kd_epochs, losses.kd, options.learning_rate))
    settings = {**vars(options), "hidden": hidden, "feature_channels": shape[-1], "labels": labels is not None,
                "samples": len(x)}
    state = [v for layer in (*encoder, *decoder, *([prior] if prior else [])) for v in layer.variables]
    tail = _unfreeze(cut.tail) if options.train_tail else []
    history = train(stages, arrays, state + tail, options.batch_size, options.seed, checkpoint_path(output),
                    settings, resume, progress, echo, fast=prior.trainable_variables if prior else (), slow=tail)
    return Trained(model, settings, history, prior.to_metadata() if prior else None)


def _unfreeze(tail) -> list:
    """The tail's weights made trainable (its batch-norm statistics stay the teacher's: the losses call it with
    ``training=False``). Fine-tuning the tail on the task's own images, with labels and the teacher's logits,
    lets the student beat a teacher trained on other pixels (Entropic Student's recipe), which buys rate."""
    tail.trainable = True
    return list(tail.trainable_variables)


def _pixels(input_shape: tuple[int, ...]) -> int:
    """Pixels of an image input (H × W of a channel-last H×W×C), else its element count."""
    return int(np.prod(input_shape[:2] if len(input_shape) == 3 else input_shape))


def _is_probability(outputs: np.ndarray) -> bool:
    """Whether the teacher ends in a softmax (rows in [0, 1] summing to 1) rather than logits."""
    rows = outputs.reshape(len(outputs), -1)
    return bool(rows.min() >= 0 and rows.max() <= 1 and np.allclose(rows.sum(axis=1), 1, atol=1e-3))


class _Losses:
    """Loss functions of the training stages (batch tensors in, (loss, metrics) out)."""

    def __init__(self, encoder, decoder, tail, prior, beta, feature_var, input_pixels, probabilities):
        self.encoder, self.decoder, self.tail, self.prior = encoder, decoder, tail, prior
        self.beta, self.feature_var, self.pixels = beta, feature_var, input_pixels
        self.probabilities = probabilities

    def _forward(self, features):
        code = features
        for layer in self.encoder:
            code = layer(code, training=True)
        rebuilt = code
        for layer in self.decoder:
            rebuilt = layer(rebuilt, training=True)
        return code, rebuilt

    def _rate(self, code, metrics):
        """beta * bits per input pixel (0 without a prior); records bits per sample."""
        import keras

        if self.prior is None:
            return 0.0
        bits = keras.ops.mean(self.prior(code))
        metrics["bits"] = bits
        return self.beta * bits / self.pixels

    def head(self, features, teacher_out, labels=None):
        import keras

        code, rebuilt = self._forward(features)
        metrics = {"mse": keras.ops.mean(keras.ops.square(rebuilt - features)) / self.feature_var}
        return metrics["mse"] + self._rate(code, metrics), metrics

    def kd(self, features, teacher_out, labels=None):
        import keras

        code, rebuilt = self._forward(features)
        student = self.tail(rebuilt, training=False)
        if self.probabilities:
            target, log_p = teacher_out, keras.ops.log(keras.ops.clip(student, 1e-7, 1.0))
        else:
            target, log_p = keras.ops.softmax(teacher_out), keras.ops.log_softmax(student)
        metrics = {"kd": -keras.ops.mean(keras.ops.sum(target * log_p, axis=-1))}
        loss = metrics["kd"]
        if labels is not None:
            metrics["ce"] = -keras.ops.mean(keras.ops.take_along_axis(log_p, labels[:, None], axis=-1))
            loss = loss + metrics["ce"]
        return loss + self._rate(code, metrics), metrics

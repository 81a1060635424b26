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

from pathlib import Path
from typing import Callable

import numpy as np

from edgekit.converters.halves import batched

from .keras_graph import Cut, assemble, conv_decoder, conv_encoder, pca_layers
from .metadata import CODE_NAME
from .nested import SUMMARY_SAMPLES, keras_nest, level_summary
from .pca import choose_channels, fit_pca
from .trained import (Student, Trained, TrainOptions, check_features, fit, input_pixels, record_settings)

__all__ = ["Trained", "TrainOptions", "pca_keras", "trained_keras"]


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
    """Distill (``method='distill'``) or rate-train (``'entropic'``) an encoder/decoder at the cut (trained.py's
    recipe on Keras layers)."""
    import keras

    from .keras_training import KerasTrainer
    from .layers import IntegerCode, LogisticPrior

    feature_channels = check_features(cut.feature_shape, cut.split, options.downsample, channels_first=False)[2]
    keras.utils.set_random_seed(options.seed)
    hidden = options.hidden or feature_channels
    entropic = method == "entropic"
    code_layer = IntegerCode(seed=options.seed, name=CODE_NAME) if entropic else None
    encoder = conv_encoder(options.channels, hidden, options.downsample, code_layer)
    decoder = conv_decoder(feature_channels, hidden, options.downsample)
    prior = LogisticPrior(name="prior") if entropic else None
    model = assemble(cut, encoder, decoder, f"{cut.teacher.name}_{method}{options.channels}")
    if prior is not None:
        prior.build((None, *model.get_layer(CODE_NAME).output.shape[1:]))

    features = features_of(cut, x)
    teacher_out = batched(lambda b: np.asarray(cut.tail(b, training=False)))(features)
    settings = record_settings(options, hidden, feature_channels, labels is not None, len(x))
    state = [v for layer in (*encoder, *decoder, *([prior] if prior else [])) for v in layer.variables]
    nest, nest_state = keras_nest(options.levels, options.seed) if options.levels else (None, [])
    state += nest_state
    tail = _unfreeze(cut.tail) if options.train_tail else []
    student = Student(keras.ops, lambda f: _run(encoder, f), lambda c: _run(decoder, c),
                      lambda f: cut.tail(f, training=False), prior,
                      lambda stages: KerasTrainer(stages, state + tail, prior.trainable_variables if prior else (),
                                                  tail),
                      latent=(lambda f: _run(encoder[:-1], f)) if entropic else None, nest=nest)
    history = fit(student, features, teacher_out, labels, options, settings,
                  input_pixels(tuple(cut.teacher.inputs[0].shape[1:]), channels_first=False), output, resume,
                  progress, echo)
    if options.levels:
        settings["per_level"] = _level_summary(encoder, decoder, cut, prior, features, teacher_out, options.levels)
    return Trained(model, settings, history, prior.to_metadata() if prior else None)


def _level_summary(encoder, decoder, cut: Cut, prior, features: np.ndarray, teacher_out: np.ndarray,
                   levels: list[int]) -> list[dict]:
    """The nested code's bits and top-1 agreement per level on the first training samples (nested.py)."""
    sample = slice(0, SUMMARY_SAMPLES)
    code = batched(lambda b: np.asarray(_run(encoder, b, training=False)))(features[sample])
    rebuild = batched(lambda c: np.asarray(cut.tail(_run(decoder, c, training=False), training=False)))
    bits = lambda c, keep: np.asarray(prior(c, keep))  # noqa: E731
    return level_summary(code, levels, rebuild, bits, teacher_out[sample])


def _run(layers, x, training: bool = True):
    """``layers`` in training mode (the entropic code adds its noise), or at inference (it rounds)."""
    for layer in layers:
        x = layer(x, training=training)
    return x


def _unfreeze(tail) -> list:
    """The tail's weights made trainable (its batch-norm statistics stay the teacher's: the losses call it with
    ``training=False``). Fine-tuning the tail on the task's own images, with labels and the teacher's logits,
    lets the student beat a teacher trained on other pixels (Entropic Student's recipe), which buys rate."""
    tail.trainable = True
    return list(tail.trainable_variables)

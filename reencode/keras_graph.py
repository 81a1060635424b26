"""Cut a Keras teacher at a layer and put a re-encoder in the cut (imports Keras: call inside functions).

    teacher:  input ─► ... ─► split layer ─► ... ─► output
    result:   input ─► teacher_head ─► encoder ─► code ─► decoder ─► teacher_tail ─► output

``teacher_head`` and ``teacher_tail`` are the teacher's own layers (shared weights, frozen) wrapped as two
nested models, so the teacher's layer names stay as they were inside them; the top-level layer ``code`` is
what ``edgekit convert --split code`` cuts at.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from edgekit.converters.split_keras import cut_layer
from edgekit.errors import UsageError

from .metadata import CODE_NAME
from .pca import Pca

__all__ = ["Cut", "cut_teacher", "assemble", "pca_layers", "conv_encoder", "conv_decoder"]



@dataclass
class Cut:
    """The teacher split at ``split``: frozen head (input → features) and tail (features → output)."""

    teacher: Any
    split: str
    head: Any
    tail: Any

    @property
    def feature_shape(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.head.output.shape[1:])

    @property
    def input_name(self) -> str:
        return self.teacher.inputs[0].name


def cut_teacher(teacher: Any, split: str) -> Cut:
    """Split the teacher at layer ``split`` (one input, one output, no branch around the cut)."""
    import keras

    if CODE_NAME in [layer.name for layer in teacher.layers]:
        raise UsageError(f"model {teacher.name} already has a layer named {CODE_NAME!r}",
                         f"it already carries a re-encoder: convert it with --split {CODE_NAME}")
    layer = cut_layer(teacher, split)
    head = keras.Model(teacher.inputs[0], layer.output, name="teacher_head")
    tail = keras.Model(layer.output, teacher.outputs[0], name="teacher_tail")
    head.trainable = tail.trainable = False
    return Cut(teacher, split, head, tail)


def assemble(cut: Cut, encoder: Sequence[Any], decoder: Sequence[Any], name: str) -> Any:
    """input → head → encoder layers (the last named ``code``) → decoder layers → tail."""
    import keras

    inp = keras.Input(tuple(cut.teacher.inputs[0].shape[1:]), name=cut.input_name)
    x = cut.head(inp)
    for layer in (*encoder, *decoder):
        x = layer(x)
    return keras.Model(inp, cut.tail(x), name=name)


def _channel_map(name: str, weights: np.ndarray, bias: np.ndarray, rank: int) -> Any:
    """A fixed linear map of the channel axis: Conv2D 1×1 for images (NPU friendly), Dense otherwise."""
    import keras

    units = weights.shape[1]
    if rank == 3:
        layer = keras.layers.Conv2D(units, 1, name=name)
        layer.build((None, None, None, weights.shape[0]))
        layer.set_weights([weights[None, None], bias])
    else:
        layer = keras.layers.Dense(units, name=name)
        layer.build((None, weights.shape[0]))
        layer.set_weights([weights, bias])
    return layer


def pca_layers(pca: Pca, k: int, rank: int) -> tuple[list[Any], list[Any]]:
    """([code projection], [back-projection + mean]) for features of ``rank`` (without the batch axis)."""
    return ([_channel_map(CODE_NAME, *pca.encoder(k), rank)],
            [_channel_map("pca_decode", *pca.decoder(k), rank)])


def conv_encoder(channels: int, hidden: int, downsample: bool, code_layer: Any | None = None) -> list[Any]:
    """Conv 3×3 (stride 2 when downsampling) + ReLU, then the K-channel 1×1 code (or ``code_layer`` after it)."""
    from keras import layers

    stride = 2 if downsample else 1
    encoder = [layers.Conv2D(hidden, 3, strides=stride, padding="same", activation="relu", name="reencode_enc1")]
    if code_layer is None:
        return encoder + [layers.Conv2D(channels, 1, name=CODE_NAME)]
    return encoder + [layers.Conv2D(channels, 1, name="reencode_enc2"), code_layer]


def conv_decoder(feature_channels: int, hidden: int, upsample: bool) -> list[Any]:
    """Conv 3×3 + ReLU (transposed, stride 2, when the encoder downsampled), then a linear 3×3 to the features."""
    from keras import layers

    first = (layers.Conv2DTranspose(hidden, 3, strides=2, padding="same", activation="relu", name="reencode_dec1")
             if upsample else layers.Conv2D(hidden, 3, padding="same", activation="relu", name="reencode_dec1"))
    return [first, layers.Conv2D(feature_channels, 3, padding="same", name="reencode_dec2")]

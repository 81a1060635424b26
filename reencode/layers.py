"""Keras layers of the re-encoders (imports TensorFlow: import this module only inside functions).

``IntegerCode`` is the entropic code layer: uniform noise in training (a differentiable stand-in for
rounding whose density is the prior convolved with a unit box), rounding to the integers -128..127 at
inference. The rounding is a FakeQuant op with range [-128, 127], so the TFLite converter gives the code
tensor exactly scale 1 and zero point 0: the int8 wire levels are the trained integers, bit for bit.

``LogisticPrior`` is the learned factorized prior: per channel a logistic density (location, scale); the
probability of integer ``v`` is ``CDF(v + 0.5) - CDF(v - 0.5)``. Its cross-entropy is the rate
(:func:`edgekit.reencode.prior.logistic_bits`, shared with the PyTorch prior).
"""

from __future__ import annotations

import keras
import tensorflow as tf

from .prior import CODE_MAX, CODE_MIN, logistic_bits, prior_record

__all__ = ["IntegerCode", "LogisticPrior", "CODE_MIN", "CODE_MAX"]


@keras.saving.register_keras_serializable(package="edgekit")
class IntegerCode(keras.layers.Layer):
    """Noise in training, integers in -128..127 at inference."""

    def __init__(self, seed: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.seed = seed
        self.noise_seed = keras.random.SeedGenerator(seed)

    def call(self, x, training=False):
        if training:
            return x + keras.random.uniform(keras.ops.shape(x), -0.5, 0.5, seed=self.noise_seed)
        return tf.quantization.fake_quant_with_min_max_args(x, min=CODE_MIN, max=CODE_MAX, num_bits=8)

    def get_config(self):
        return {**super().get_config(), "seed": self.seed}

    def compute_output_shape(self, input_shape):
        return input_shape


class LogisticPrior(keras.layers.Layer):
    """Per-channel logistic prior over integer codes; ``call`` returns bits per sample (batch,)."""

    def build(self, input_shape):
        channels = int(input_shape[-1])
        self.loc = self.add_weight(shape=(channels,), initializer="zeros", name="loc")
        self.log_scale = self.add_weight(shape=(channels,), initializer="zeros", name="log_scale")

    def call(self, code, keep=None):
        return logistic_bits(keras.ops, code, self.loc, self.log_scale, keep)

    def to_metadata(self) -> dict:
        """The prior as stored in the model's record (read by :mod:`edgekit.reencode.prior`)."""
        return prior_record(keras.ops.convert_to_numpy(self.loc), keras.ops.convert_to_numpy(self.log_scale))

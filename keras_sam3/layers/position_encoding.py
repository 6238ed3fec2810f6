"""Sine position encodings (DETR style) with interleaved sin / cos."""

import math

import keras
import numpy as np
from keras import ops


def _frequencies(num_features, temperature):
    # dim_t[k] = temperature ** (2 * floor(k / 2) / num_features), float32 as
    # in the reference.
    k = np.arange(num_features, dtype=np.float32)
    return np.float32(temperature) ** (2 * np.floor(k / 2) / np.float32(num_features))


def _interleave(angles):
    # (..., F) -> (..., F): sin on even channels, cos on odd ones.
    sin = np.sin(angles[..., 0::2])
    cos = np.cos(angles[..., 1::2])
    return np.stack([sin, cos], axis=-1).reshape(angles.shape)


def sine_position_encoding_2d(height, width, num_features, temperature=10000):
    """Normalized 2-D sine encoding of a feature map, channels-last.

    Row `i` maps to `(i + 1) / (height + 1e-6) * 2 * pi` (column `j` alike);
    each coordinate gets `num_features` channels of interleaved sin / cos and
    the output is `[enc(y), enc(x)]`.

    Returns:
        numpy float32 array `(height, width, 2 * num_features)`.
    """
    scale = np.float32(2 * math.pi)
    y = np.arange(1, height + 1, dtype=np.float32) / np.float32(height + 1e-6) * scale
    x = np.arange(1, width + 1, dtype=np.float32) / np.float32(width + 1e-6) * scale
    dim_t = _frequencies(num_features, temperature)
    enc_y = _interleave(y[:, None] / dim_t)  # (H, F)
    enc_x = _interleave(x[:, None] / dim_t)  # (W, F)
    enc_y = np.broadcast_to(enc_y[:, None, :], (height, width, num_features))
    enc_x = np.broadcast_to(enc_x[None, :, :], (height, width, num_features))
    return np.concatenate([enc_y, enc_x], axis=-1).astype(np.float32)


def sine_encode(values, num_features, temperature=10000):
    """Unnormalized sine encoding of coordinates in [0, 1].

    `values` `(..., )` is multiplied by `2 * pi`, divided by the frequency
    table and encoded as interleaved sin / cos, giving `(..., num_features)`.
    Used for boxes and query reference points.
    """
    dim_t = ops.convert_to_tensor(_frequencies(num_features, temperature))
    angles = ops.expand_dims(values * (2 * math.pi), -1) / ops.cast(dim_t, values.dtype)
    # (..., F) -> (..., F/2, 2) -> (..., F)
    pairs = ops.reshape(angles, ops.shape(angles)[:-1] + (num_features // 2, 2))
    encoded = ops.stack([ops.sin(pairs[..., 0]), ops.cos(pairs[..., 1])], axis=-1)
    return ops.reshape(encoded, ops.shape(angles))


@keras.saving.register_keras_serializable(package="keras_sam3")
class SinePositionEncoding2D(keras.layers.Layer):
    """The normalized sine encoding of a `(B, H, W, C)` map's grid, as a
    `(1, H, W, C)` constant (it depends only on the static shape).

    Args:
        temperature: int. Defaults to `10000`.
    """

    def __init__(self, temperature=10000, **kwargs):
        super().__init__(**kwargs)
        self.temperature = temperature
        # No weights. Built from the start: its parent's `call` is never
        # traced to build it (the neck states its output shapes), and an
        # unbuilt layer makes Keras' JAX `predict_on_batch` run the whole
        # model eagerly once before compiling it (+0.86 GB resident at 336 px).
        self.built = True

    def call(self, features):
        _, height, width, channels = features.shape
        table = sine_position_encoding_2d(height, width, channels // 2, self.temperature)
        return ops.cast(ops.convert_to_tensor(table[None]), features.dtype)

    def compute_output_shape(self, input_shape):
        return (1,) + tuple(input_shape)[1:]

    def get_config(self):
        config = super().get_config()
        config["temperature"] = self.temperature
        return config

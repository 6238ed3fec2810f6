"""The simple FPN neck of SAM 3 (ViTDet style): one branch per scale."""

import keras
from keras import ops

from keras_sam3.layers.conv import Conv2D
from keras_sam3.layers.conv import Conv2DTranspose
from keras_sam3.layers.position_encoding import SinePositionEncoding2D


@keras.saving.register_keras_serializable(package="keras_sam3")
class FPNLevel(keras.layers.Layer):
    """One neck branch: rescale, then a 1x1 and a 3x3 projection.

    Scale 4 is two stride-2 transposed convolutions with an exact GELU
    between them, scale 2 one transposed convolution, scale 1 nothing and
    scale 0.5 a 2x2 max pool. The weighted sublayers keep the reference's
    indices (`scale_layers_0`, `scale_layers_2`).

    Args:
        hidden_dim: int. Output width of the level.
        input_dim: int. Width of the trunk features.
        scale_factor: float. One of 4.0, 2.0, 1.0, 0.5.
    """

    def __init__(self, hidden_dim, input_dim, scale_factor, **kwargs):
        super().__init__(**kwargs)
        self.hidden_dim = hidden_dim
        self.input_dim = input_dim
        self.scale_factor = float(scale_factor)

        def deconv(width, name):
            return Conv2DTranspose(
                width, 2, strides=2, dtype=self.dtype_policy, name=name
            )

        # Scale 4 puts an exact GELU between its two transposed convolutions
        # (the reference's `scale_layers.1`).
        if self.scale_factor == 4.0:
            self.scale_layers = [
                deconv(input_dim // 2, "scale_layers_0"),
                deconv(input_dim // 4, "scale_layers_2"),
            ]
        elif self.scale_factor == 2.0:
            self.scale_layers = [deconv(input_dim // 2, "scale_layers_0")]
        elif self.scale_factor == 1.0:
            self.scale_layers = []
        elif self.scale_factor == 0.5:
            self.scale_layers = [
                keras.layers.MaxPooling2D(2, 2, dtype=self.dtype_policy, name="max_pool")
            ]
        else:
            raise ValueError(
                f"scale_factor must be one of 4.0, 2.0, 1.0, 0.5; got {scale_factor}."
            )
        self.proj1 = Conv2D(
            hidden_dim, 1, dtype=self.dtype_policy, name="proj1"
        )
        self.proj2 = Conv2D(
            hidden_dim, 3, padding="same", dtype=self.dtype_policy, name="proj2"
        )

    def build(self, input_shape):
        shape = tuple(input_shape)
        for layer in self.scale_layers:
            layer.build(shape)
            shape = layer.compute_output_shape(shape)
        self.proj1.build(shape)
        shape = self.proj1.compute_output_shape(shape)
        self.proj2.build(shape)
        self.built = True

    def call(self, x):
        for i, layer in enumerate(self.scale_layers):
            if i > 0:
                x = ops.gelu(x, approximate=False)
            x = layer(x)
        return self.proj2(self.proj1(x))

    def compute_output_shape(self, input_shape):
        b, h, w, _ = tuple(input_shape)
        f = self.scale_factor
        h = None if h is None else int(h * f)
        w = None if w is None else int(w * f)
        return (b, h, w, self.hidden_dim)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "hidden_dim": self.hidden_dim,
                "input_dim": self.input_dim,
                "scale_factor": self.scale_factor,
            }
        )
        return config


@keras.saving.register_keras_serializable(package="keras_sam3")
class SAM3FPNNeck(keras.layers.Layer):
    """The multi-scale neck over the ViT output, with sine position encodings.

    The detector and the tracker each own one of these (same structure,
    different weights).

    Args:
        hidden_dim: int. FPN width. Defaults to `256`.
        input_dim: int. ViT width. Defaults to `1024`.
        scale_factors: tuple of float. Defaults to `(4.0, 2.0, 1.0, 0.5)`.

    Call arguments:
        x: `(B, H, W, input_dim)` trunk features.

    Returns:
        A dict with, for each level `i`, `fpn_hidden_states_{i}`
        `(B, H_i, W_i, hidden_dim)` and `fpn_position_encoding_{i}`
        `(1, H_i, W_i, hidden_dim)` (input-independent, broadcast over the
        batch).
    """

    def __init__(
        self,
        hidden_dim=256,
        input_dim=1024,
        scale_factors=(4.0, 2.0, 1.0, 0.5),
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.hidden_dim = hidden_dim
        self.input_dim = input_dim
        self.scale_factors = tuple(float(s) for s in scale_factors)
        self.fpn_layers = [
            FPNLevel(
                hidden_dim, input_dim, s, dtype=self.dtype_policy, name=f"fpn_layers_{i}"
            )
            for i, s in enumerate(self.scale_factors)
        ]
        self.position_encoding = SinePositionEncoding2D(dtype=self.dtype_policy, name="position_encoding")

    def build(self, input_shape):
        for level in self.fpn_layers:
            level.build(tuple(input_shape))
        self.built = True

    def call(self, x):
        outputs = {}
        for i, level in enumerate(self.fpn_layers):
            features = level(x)
            outputs[f"fpn_hidden_states_{i}"] = features
            outputs[f"fpn_position_encoding_{i}"] = self.position_encoding(features)
        return outputs

    def compute_output_shape(self, input_shape):
        shapes = {}
        for i, level in enumerate(self.fpn_layers):
            shape = level.compute_output_shape(tuple(input_shape))
            shapes[f"fpn_hidden_states_{i}"] = shape
            shapes[f"fpn_position_encoding_{i}"] = (1,) + shape[1:]
        return shapes

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "hidden_dim": self.hidden_dim,
                "input_dim": self.input_dim,
                "scale_factors": list(self.scale_factors),
            }
        )
        return config

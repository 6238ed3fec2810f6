import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_sam3")
class GroupNormalization(keras.layers.Layer):
    """Group normalization over channels-last maps with accurate statistics.

    Means are taken one axis at a time (width, then height, then the
    channels of a group), in float32. A single reduction over a whole
    288 x 288 x 32 group accumulates enough rounding in some backends
    (TensorFlow's CPU `reduce_mean`) to move SAM 3's masks by 1e-3; nested
    reductions keep every sum short.

    Args:
        groups: int. Number of channel groups.
        epsilon: float. Defaults to `1e-5`.

    Call arguments:
        x: `(B, H, W, C)`, `C` divisible by `groups`.
    """

    def __init__(self, groups, epsilon=1e-5, **kwargs):
        super().__init__(**kwargs)
        self.groups = groups
        self.epsilon = epsilon

    def build(self, input_shape):
        channels = input_shape[-1]
        if channels % self.groups:
            raise ValueError(f"{channels} channels do not split into {self.groups} groups.")
        self.gamma = self.add_weight(name="gamma", shape=(channels,), initializer="ones")
        self.beta = self.add_weight(name="beta", shape=(channels,), initializer="zeros")
        self.built = True

    def _mean(self, x):
        # (B, H, W, G, C/G) -> (B, 1, 1, G, 1), one axis at a time.
        for axis in (2, 1, 4):
            x = ops.mean(x, axis=axis, keepdims=True)
        return x

    def call(self, x):
        dtype = x.dtype
        _, height, width, channels = x.shape
        # (B, H, W, C) -> (B, H, W, G, C/G)
        grouped = ops.reshape(ops.cast(x, "float32"), (-1, height, width, self.groups, channels // self.groups))
        centered = grouped - self._mean(grouped)
        variance = self._mean(ops.square(centered))
        normed = ops.reshape(centered * ops.rsqrt(variance + self.epsilon), (-1, height, width, channels))
        normed = ops.cast(normed, dtype)
        return normed * ops.cast(self.gamma, dtype) + ops.cast(self.beta, dtype)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update({"groups": self.groups, "epsilon": self.epsilon})
        return config

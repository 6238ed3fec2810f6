import keras

from keras_sam3.ops.normalization import group_norm


@keras.saving.register_keras_serializable(package="keras_sam3")
class GroupNormalization(keras.layers.Layer):
    """Group normalization over channels-last maps with accurate statistics.

    Statistics in float32, by `keras_sam3.ops.group_norm` (PyTorch's own
    kernel there; elsewhere nested means, which keep TensorFlow's CPU
    reductions accurate enough for SAM 3's masks).

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

    def call(self, x):
        return group_norm(x, self.groups, self.gamma, self.beta, self.epsilon)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update({"groups": self.groups, "epsilon": self.epsilon})
        return config

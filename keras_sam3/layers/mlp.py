import keras


@keras.saving.register_keras_serializable(package="keras_sam3")
class MLP(keras.layers.Layer):
    """Two-layer feed-forward block: `fc2(activation(fc1(x)))`.

    Args:
        hidden_dim: int. Input and output width.
        intermediate_dim: int. Width of the hidden layer.
        activation: str. `"gelu"` is the exact (erf) GELU; `"quick_gelu"`
            is CLIP's sigmoid approximation. Defaults to `"gelu"`.
        output_dim: int, optional. Output width. Defaults to `hidden_dim`.

    Example:
    >>> MLP(hidden_dim=8, intermediate_dim=32)(keras.ops.ones((2, 3, 8))).shape
    (2, 3, 8)
    """

    def __init__(
        self,
        hidden_dim,
        intermediate_dim,
        activation="gelu",
        output_dim=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.hidden_dim = hidden_dim
        self.intermediate_dim = intermediate_dim
        self.activation = activation
        self.output_dim = output_dim or hidden_dim
        self._activation_fn = get_activation(activation)
        self.fc1 = keras.layers.Dense(
            intermediate_dim, dtype=self.dtype_policy, name="fc1"
        )
        self.fc2 = keras.layers.Dense(
            self.output_dim, dtype=self.dtype_policy, name="fc2"
        )

    def build(self, input_shape):
        input_shape = tuple(input_shape)
        self.fc1.build(input_shape)
        self.fc2.build(input_shape[:-1] + (self.intermediate_dim,))
        self.built = True

    def call(self, x):
        return self.fc2(self._activation_fn(self.fc1(x)))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)[:-1] + (self.output_dim,)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "hidden_dim": self.hidden_dim,
                "intermediate_dim": self.intermediate_dim,
                "activation": self.activation,
                "output_dim": self.output_dim,
            }
        )
        return config


def quick_gelu(x):
    return x * keras.ops.sigmoid(1.702 * x)


def get_activation(name):
    """Activation by its reference name; `"gelu"` is exact, never tanh."""
    if name == "gelu":
        return lambda x: keras.ops.gelu(x, approximate=False)
    if name == "quick_gelu":
        return quick_gelu
    if name == "relu":
        return keras.ops.relu
    raise ValueError(
        f"Unknown activation {name!r}; expected 'gelu', 'quick_gelu' or 'relu'."
    )

import keras

from keras_sam3.layers.dense import Dense
from keras_sam3.ops.linear import FUSED_ACTIVATIONS
from keras_sam3.ops.linear import activation_function


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
    >>> tuple(MLP(hidden_dim=8, intermediate_dim=32)(keras.ops.ones((2, 3, 8))).shape)
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
        self.fc1 = Dense(
            intermediate_dim, dtype=self.dtype_policy, name="fc1"
        )
        self.fc2 = Dense(
            self.output_dim, dtype=self.dtype_policy, name="fc2"
        )

    def build(self, input_shape):
        input_shape = tuple(input_shape)
        self.fc1.build(input_shape)
        self.fc2.build(input_shape[:-1] + (self.intermediate_dim,))
        self.built = True

    def call(self, x):
        if self.activation in FUSED_ACTIVATIONS:
            return self.fc2(self.fc1.activated(x, self.activation))
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
    if name == "quick_gelu":
        return quick_gelu
    if name in FUSED_ACTIVATIONS:  # "relu", "gelu": what `Dense.activated` fuses
        return activation_function(name)
    raise ValueError(
        f"Unknown activation {name!r}; expected 'gelu', 'quick_gelu' or 'relu'."
    )


@keras.saving.register_keras_serializable(package="keras_sam3")
class StackedMLP(keras.layers.Layer):
    """`num_layers` Dense layers with an activation between them (none after
    the last): SAM 3's box, presence, reference-point, RPB, scoring and mask
    embedding heads.

    Args:
        hidden_dim: int. Width of the hidden layers.
        output_dim: int. Width of the last layer.
        num_layers: int. Number of Dense layers. Defaults to `2`.
        activation: str. Defaults to `"relu"`.
        layer_names: list of str, optional. Sublayer names (the reference's
            module names). Defaults to `layer1`, `layer2`, ...

    Example:
    >>> tuple(StackedMLP(16, 4, num_layers=3)(keras.ops.ones((2, 8))).shape)
    (2, 4)
    """

    def __init__(
        self,
        hidden_dim,
        output_dim,
        num_layers=2,
        activation="relu",
        layer_names=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.hidden_dim = hidden_dim
        self.output_dim = output_dim
        self.num_layers = num_layers
        self.activation = activation
        self.layer_names = list(layer_names or [f"layer{i + 1}" for i in range(num_layers)])
        if len(self.layer_names) != num_layers:
            raise ValueError(f"layer_names needs {num_layers} names, got {self.layer_names}.")
        self._activation_fn = get_activation(activation)
        widths = [hidden_dim] * (num_layers - 1) + [output_dim]
        self.dense_layers = [
            Dense(width, dtype=self.dtype_policy, name=name)
            for width, name in zip(widths, self.layer_names)
        ]

    def build(self, input_shape):
        shape = tuple(input_shape)
        for layer in self.dense_layers:
            layer.build(shape)
            shape = shape[:-1] + (layer.units,)
        self.built = True

    def call(self, x):
        last = len(self.dense_layers) - 1
        for i, layer in enumerate(self.dense_layers):
            if i == last:
                x = layer(x)
            elif self.activation in FUSED_ACTIVATIONS:
                x = layer.activated(x, self.activation)
            else:
                x = self._activation_fn(layer(x))
        return x

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)[:-1] + (self.output_dim,)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "hidden_dim": self.hidden_dim,
                "output_dim": self.output_dim,
                "num_layers": self.num_layers,
                "activation": self.activation,
                "layer_names": self.layer_names,
            }
        )
        return config

import keras


def layer_norm(name, epsilon, dtype):
    """A channels-last `LayerNormalization` named after the reference module."""
    return keras.layers.LayerNormalization(epsilon=epsilon, dtype=dtype, name=name)

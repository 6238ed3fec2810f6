import keras

from keras_sam3.layers.direct import can_call_directly


@keras.saving.register_keras_serializable(package="keras_sam3")
class LayerNormalization(keras.layers.LayerNormalization):
    """`keras.layers.LayerNormalization` that, on PyTorch, runs its `call`
    without `Layer.__call__` where that changes nothing (`layers.direct`).

    Same variables, configuration and arithmetic (its own `call`). It keeps
    the name `LayerNormalization`: Keras names layers held in lists by their
    class in weight files.
    """

    def __call__(self, inputs, *args, **kwargs):
        if not args and not kwargs and can_call_directly(self, inputs):
            return self.call(inputs)
        return super().__call__(inputs, *args, **kwargs)


def layer_norm(name, epsilon, dtype):
    """A channels-last `LayerNormalization` named after the reference module."""
    return LayerNormalization(epsilon=epsilon, dtype=dtype, name=name)

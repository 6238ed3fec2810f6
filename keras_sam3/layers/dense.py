import keras

from keras_sam3.layers.initializers import InPlaceInitializers
from keras_sam3.ops.linear import linear


@keras.saving.register_keras_serializable(package="keras_sam3")
class Dense(InPlaceInitializers, keras.layers.Dense):
    """`keras.layers.Dense` whose matmul and bias add run as one op.

    Same variables, configuration, LoRA (`enable_lora`) and quantization as
    `keras.layers.Dense`; only the forward pass goes through
    `keras_sam3.ops.linear`, one fused kernel on PyTorch, and the kernel is
    drawn without temporaries there (`layers.initializers`). It keeps the name
    `Dense` because Keras names layers held in lists by their class in
    weight files: another name would break every saved preset.

    Example:
    >>> Dense(4)(keras.ops.ones((2, 3, 8))).shape
    (2, 3, 4)
    """

    def call(self, inputs, training=None):
        x = linear(inputs, self.kernel, self.bias)
        if self.activation is not None:
            x = self.activation(x)
        return x

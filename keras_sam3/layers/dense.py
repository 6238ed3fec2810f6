import keras

from keras_sam3.layers.direct import can_call_directly
from keras_sam3.layers.initializers import InPlaceInitializers
from keras_sam3.ops.linear import activation_function
from keras_sam3.ops.linear import linear
from keras_sam3.ops.linear import torch_linear


@keras.saving.register_keras_serializable(package="keras_sam3")
class Dense(InPlaceInitializers, keras.layers.Dense):
    """`keras.layers.Dense` whose matmul and bias add run as one op.

    Same variables, configuration and LoRA (`enable_lora`) as
    `keras.layers.Dense` (not its quantization: the forward pass reads the
    float kernel); only the forward pass goes through
    `keras_sam3.ops.linear`, one fused kernel on PyTorch, and the kernel is
    drawn without temporaries there (`layers.initializers`). It keeps the name
    `Dense` because Keras names layers held in lists by their class in
    weight files: another name would break every saved preset.

    Example:
    >>> tuple(Dense(4)(keras.ops.ones((2, 3, 8))).shape)
    (2, 3, 4)
    """

    def load_own_variables(self, store):
        super().load_own_variables(store)
        if self.lora_enabled:
            # Keras saves LoRA merged into the kernel and zeroes both adapters
            # when loading, which leaves them no gradient: draw A again as
            # `enable_lora` does (B stays zero, so outputs do not change).
            self.lora_kernel_a.assign(keras.initializers.HeUniform()(self.lora_kernel_a.shape))

    def __call__(self, inputs, *args, **kwargs):
        # On PyTorch, eager: Keras' `Layer.__call__` costs about 0.1 ms a
        # call on CPU, several times the product itself for the small
        # projections of the text encoder and the DETR (`layers.direct`).
        if not args and set(kwargs) <= {"training"} and can_call_directly(self, inputs):
            y = torch_linear(inputs, self.kernel.value, None if self.bias is None else self.bias.value)
            return y if self.activation is None else self.activation(y)
        return super().__call__(inputs, *args, **kwargs)

    def activated(self, inputs, activation):
        """`activation(self(inputs))` for `"relu"` or the exact `"gelu"`:
        on PyTorch's direct path (`layers.direct`) one fused kernel
        (`ops.linear`), so the activation costs no pass of its own over a
        large output (the ViT's and DETR's feed-forward layers)."""
        own = self.activation  # Keras stores "no activation" as `linear`
        if own in (None, keras.activations.linear) and can_call_directly(self, inputs):
            return torch_linear(
                inputs,
                self.kernel.value,
                None if self.bias is None else self.bias.value,
                activation,
            )
        return activation_function(activation)(self(inputs))

    def call(self, inputs, training=None):
        x = linear(inputs, self.kernel, self.bias)
        if self.activation is not None:
            x = self.activation(x)
        return x

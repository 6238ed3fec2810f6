import keras

from keras_sam3.layers.initializers import InPlaceInitializers
from keras_sam3.ops.linear import linear
from keras_sam3.ops.linear import torch_linear


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

    def __call__(self, inputs, *args, **kwargs):
        # On PyTorch, eager: Keras' `Layer.__call__` (argument binding, input
        # casting, masks, name and autocast scopes) cost about 0.1 ms per
        # call on CPU, several times the product itself for the small
        # projections of the text encoder and the DETR. Where none of that
        # can change the result, go straight to the product.
        y = self._direct_call(inputs) if not args and set(kwargs) <= {"training"} else None
        return super().__call__(inputs, *args, **kwargs) if y is None else y

    def _direct_call(self, inputs):
        """`call(inputs)` without `Layer.__call__`, or None where that could
        differ: other backends, symbolic or masked inputs, the first call,
        LoRA, quantization, an activity regularizer, a dtype policy that
        casts (mixed precision) or inputs of another dtype."""
        if keras.backend.backend() != "torch" or not getattr(self, "_called", False):
            return None
        import torch

        if (
            not isinstance(inputs, torch.Tensor)
            or getattr(inputs, "_keras_mask", None) is not None
            or self.lora_enabled
            or self.quantization_mode is not None
            or self.activity_regularizer is not None
            or self.compute_dtype != self.variable_dtype
        ):
            return None
        kernel = self.kernel.value
        bias = None if self.bias is None else self.bias.value
        if inputs.dtype != kernel.dtype or not inputs.dtype.is_floating_point:
            return None
        y = torch_linear(inputs, kernel, bias)
        return y if self.activation is None else self.activation(y)

    def call(self, inputs, training=None):
        x = linear(inputs, self.kernel, self.bias)
        if self.activation is not None:
            x = self.activation(x)
        return x

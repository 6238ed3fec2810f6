"""When a layer may skip Keras' `Layer.__call__`.

On PyTorch the model runs eagerly, and `Layer.__call__` (argument binding,
input casting, masks, name and autocast scopes, the call context) costs
about 0.1 ms a call on CPU: for the small projections and norms of the text
encoder and the DETR, several times the arithmetic. Layers used hundreds of
times per prompt (`Dense`, `LayerNormalization`) go straight to their
arithmetic where that machinery cannot change the result. JAX and
TensorFlow trace the model once, so they keep the plain call.
"""

import keras


def can_call_directly(layer, inputs):
    """Whether `layer(inputs)` may run its arithmetic without `Layer.__call__`.

    True only on PyTorch, after the layer's first call (which builds it and
    goes through Keras), for a concrete tensor without a Keras mask, no LoRA,
    no quantization, no activity regularizer, a dtype policy that casts
    nothing (compute dtype = variable dtype; mixed precision keeps Keras'
    call) and `inputs` of that dtype (others Keras would cast).
    """
    if keras.backend.backend() != "torch" or not getattr(layer, "_called", False):
        return False
    import torch

    return (
        isinstance(inputs, torch.Tensor)
        and getattr(inputs, "_keras_mask", None) is None
        and not getattr(layer, "lora_enabled", False)
        and getattr(layer, "quantization_mode", None) is None
        and layer.activity_regularizer is None
        and layer.compute_dtype == layer.variable_dtype
        and keras.backend.standardize_dtype(inputs.dtype) == layer.compute_dtype
    )


def dropout(layer, x, training):
    """`layer(x, training=training)` for a `keras.layers.Dropout`, skipping
    the call where dropout is the identity (not training). `training` is
    the calling layer's own, already resolved by Keras from its call
    context, so this is what the inner call would have resolved too."""
    return layer(x, training=training) if training else x

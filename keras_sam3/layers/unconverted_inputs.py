"""Layers that keep their inputs' dtypes (Keras casts float inputs to the
compute dtype by default: in bfloat16 that moves pixel coordinates)."""

import keras
from keras import ops


class UnconvertedInputs:
    """Mixin for a `keras.layers.Layer`: `__call__` leaves float inputs in
    their dtype (`call` casts what it must). Keras then takes only tensors
    positionally, so positional arrays become tensors of their own dtype."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._convert_input_args = False

    def __call__(self, *args, **kwargs):
        args = [
            a if a is None or isinstance(a, (bool, keras.KerasTensor)) or ops.is_tensor(a) else ops.convert_to_tensor(a)
            for a in args
        ]
        return super().__call__(*args, **kwargs)

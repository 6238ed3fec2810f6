"""Variable creation without temporaries on PyTorch.

Keras' PyTorch backend draws `uniform(a, b)` as `(b - a) * rand(shape) + a`:
two full-size temporaries per variable. Building the 840M-parameter model
leaves them behind as heap fragmentation that glibc does not return: after
building, the process held 0.12-1.0 GB more than the weights themselves, a
different amount on every run (docs/benchmarks.md, "Memory"). Drawing into
the variable's own buffer (`empty().uniform_(0, 1).mul_(b - a).add_(a)`)
gives the same numbers, from the same seed stream, with no temporaries.
"""

import math

import keras
from keras.src.initializers.random_initializers import compute_fans


def _uniform_bounds(initializer, shape):
    """`(low, high)` of a Keras uniform initializer, or None for others."""
    if type(initializer) is keras.initializers.RandomUniform:
        return initializer.minval, initializer.maxval
    if isinstance(initializer, keras.initializers.VarianceScaling) and initializer.distribution == "uniform":
        # VarianceScaling.__call__'s arithmetic, step for step.
        scale = initializer.scale
        fan_in, fan_out = compute_fans(shape, input_axes=initializer.input_axes, output_axes=initializer.output_axes)
        if initializer.mode == "fan_in":
            scale /= max(1.0, fan_in)
        elif initializer.mode == "fan_out":
            scale /= max(1.0, fan_out)
        else:
            scale /= max(1.0, (fan_in + fan_out) / 2.0)
        limit = math.sqrt(3.0 * scale)
        return -limit, limit
    return None


def in_place(initializer):
    """`initializer`, drawn into the variable's own buffer on PyTorch.

    Returns a callable `(shape, dtype) -> tensor` giving exactly the values
    of `initializer(shape, dtype)` (Keras' uniform initializers: the same
    seed draw, the same float32 arithmetic) with no full-size temporaries;
    other initializers, other backends and scalars are returned unchanged.

    Args:
        initializer: a Keras initializer, its name, or a callable.

    Example:
    >>> keras.utils.set_random_seed(0)
    >>> a = in_place("glorot_uniform")((3, 4), "float32")
    >>> keras.utils.set_random_seed(0)
    >>> b = keras.initializers.get("glorot_uniform")((3, 4), "float32")
    >>> bool(keras.ops.all(a == b))
    True
    """
    initializer = keras.initializers.get(initializer)
    if keras.backend.backend() != "torch":
        return initializer

    def draw(shape, dtype=None):
        bounds = _uniform_bounds(initializer, shape)
        if bounds is None or len(shape) == 0:
            return initializer(shape, dtype=dtype)
        import torch
        from keras.src.backend.torch.core import get_device
        from keras.src.backend.torch.core import to_torch_dtype
        from keras.src.backend.torch.random import torch_seed_generator

        low, high = bounds
        device = get_device()
        if device == "meta":
            return initializer(shape, dtype=dtype)
        values = torch.empty(tuple(shape), dtype=to_torch_dtype(dtype or keras.config.floatx()), device=device)
        # `torch.rand` is `empty().uniform_(0, 1)`; then Keras' `* (b - a) + a`.
        values.uniform_(0.0, 1.0, generator=torch_seed_generator(initializer.seed))
        return values.mul_(high - low).add_(low)

    return draw


class InPlaceInitializers:
    """Layer mixin: every `add_weight` draws through `in_place`.

    The layer's configuration (its `kernel_initializer` and so on) is
    untouched; only how the first values are written changes.
    """

    def add_weight(self, *args, **kwargs):
        if kwargs.get("initializer") is not None:
            kwargs["initializer"] = in_place(kwargs["initializer"])
        return super().add_weight(*args, **kwargs)

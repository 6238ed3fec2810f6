"""Group normalization of channels-last maps."""

from keras import ops


def _nested_mean(x):
    # (B, H, W, G, C/G) -> (B, 1, 1, G, 1), one axis at a time.
    for axis in (2, 1, 4):
        x = ops.mean(x, axis=axis, keepdims=True)
    return x


def group_norm(x, groups, gamma, beta, epsilon=1e-5):
    """Normalizes each group of channels of `(B, H, W, C)` maps, then
    scales by `gamma` and shifts by `beta` (`(C,)` each).

    Statistics in float32, the means taken one axis at a time (width, then
    height, then the channels of a group): a single reduction over a whole
    288 x 288 x 32 group accumulates enough rounding in TensorFlow's CPU
    `reduce_mean` to move SAM 3's masks by 1e-3, and nested reductions keep
    every sum short. PyTorch's own `group_norm` is no way out: on a
    channels-last map its CPU kernel is off by 4e-5 on unit-variance data
    and by 1.0 on data with mean 30 and deviation 0.1 (it subtracts squared
    means); NCHW would need a layout copy that costs more than this.
    The scale and shift are applied in one multiply-add (`gamma` folded
    into the inverse deviation), the square is a multiply (PyTorch's `pow`
    is slower): five passes over the map.

    Args:
        x: tensor `(B, H, W, C)`, `C` divisible by `groups`.
        groups: int.
        gamma, beta: tensors `(C,)`.
        epsilon: float. Defaults to `1e-5`.

    Returns:
        Tensor like `x`.

    Example:
    >>> tuple(group_norm(keras.ops.ones((1, 2, 2, 4)), 2, keras.ops.ones((4,)), keras.ops.zeros((4,))).shape)
    (1, 2, 2, 4)
    """
    dtype = x.dtype
    _, height, width, channels = x.shape
    per_group = (groups, channels // groups)
    # (B, H, W, C) -> (B, H, W, G, C/G)
    grouped = ops.reshape(ops.cast(x, "float32"), (-1, height, width) + per_group)
    centered = grouped - _nested_mean(grouped)
    variance = _nested_mean(centered * centered)
    # (B, 1, 1, G, 1) * (G, C/G) -> (B, 1, 1, G, C/G)
    scale = ops.rsqrt(variance + epsilon) * ops.reshape(ops.cast(gamma, "float32"), per_group)
    normed = centered * scale + ops.reshape(ops.cast(beta, "float32"), per_group)
    return ops.cast(ops.reshape(normed, (-1, height, width, channels)), dtype)

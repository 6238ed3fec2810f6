"""Non-overlapping window partition for windowed attention (ViTDet style)."""

from keras import ops


def window_partition(x, window_size):
    """Splits `(B, H, W, C)` into windows `(B * nH * nW, ws * ws, C)`.

    H and W are zero-padded at the bottom and right up to a multiple of
    `window_size`; padded tokens are not masked, as in the reference.

    Returns:
        The windows and the padded `(Hp, Wp)`.
    """
    _, height, width, channels = x.shape
    pad_h = (window_size - height % window_size) % window_size
    pad_w = (window_size - width % window_size) % window_size
    if pad_h or pad_w:
        x = ops.pad(x, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)))
    hp, wp = height + pad_h, width + pad_w
    nh, nw = hp // window_size, wp // window_size
    # (B, Hp, Wp, C) -> (B, nH, ws, nW, ws, C) -> (B, nH, nW, ws, ws, C)
    x = ops.reshape(x, (-1, nh, window_size, nw, window_size, channels))
    x = ops.transpose(x, (0, 1, 3, 2, 4, 5))
    # -> (B * nH * nW, ws * ws, C)
    return ops.reshape(x, (-1, window_size * window_size, channels)), (hp, wp)


def window_unpartition(windows, window_size, padded_size, size):
    """Inverse of `window_partition`: `(B * nH * nW, ws * ws, C)` to
    `(B, H, W, C)`, cropping the padding."""
    hp, wp = padded_size
    height, width = size
    channels = windows.shape[-1]
    nh, nw = hp // window_size, wp // window_size
    # (B * nH * nW, ws * ws, C) -> (B, nH, nW, ws, ws, C) -> (B, nH, ws, nW, ws, C)
    x = ops.reshape(windows, (-1, nh, nw, window_size, window_size, channels))
    x = ops.transpose(x, (0, 1, 3, 2, 4, 5))
    x = ops.reshape(x, (-1, hp, wp, channels))
    if hp != height or wp != width:
        x = x[:, :height, :width, :]
    return x

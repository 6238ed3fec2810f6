"""2-D axial rotary position embedding (RoPE) with interleaved pairs."""

import numpy as np
from keras import ops


def axial_rope_tables(height, width, head_dim, theta=10000.0, scale=1.0):
    """Cosine and sine tables of 2-D axial RoPE for an `height x width` grid.

    The first half of the head dimension rotates with the column (x)
    coordinate, the second half with the row (y) coordinate; each angle
    covers one interleaved pair `(2i, 2i + 1)`. Positions are multiplied by
    `scale` (SAM 3's global layers use `window_size / grid_width`).

    Args:
        height: int. Grid rows.
        width: int. Grid columns.
        head_dim: int. Attention head width, divisible by 4.
        theta: float. RoPE base. Defaults to `10000.0`.
        scale: float. Position multiplier. Defaults to `1.0`.

    Returns:
        `(cos, sin)`, numpy float32 arrays of shape `(height * width,
        head_dim)` in row-major token order.
    """
    if head_dim % 4:
        raise ValueError(f"2-D RoPE needs head_dim divisible by 4, got {head_dim}.")
    quarter = head_dim // 4
    # Same float32 arithmetic as the reference so tables agree bit for bit.
    inv_freq = np.float32(1.0) / (
        np.float32(theta)
        ** (np.arange(0, 2 * quarter, 2, dtype=np.float32) / np.float32(2 * quarter))
    )
    rows, cols = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    x = (cols.reshape(-1) * scale).astype(np.float32)
    y = (rows.reshape(-1) * scale).astype(np.float32)
    # (N, d/4) each -> (N, d/2) -> (N, d) with every angle repeated for its pair.
    angles = np.concatenate([x[:, None] * inv_freq, y[:, None] * inv_freq], axis=-1)
    angles = np.repeat(angles, 2, axis=-1)
    return np.cos(angles).astype(np.float32), np.sin(angles).astype(np.float32)


def apply_rope(x, cos, sin, heads_first=False):
    """Rotates interleaved pairs of `x` (`(B, N, h, d)`) by the RoPE angles.

    `cos` and `sin` are `(N, d)`. The rotation runs in float32 and the result
    is cast back to the input dtype. With `heads_first=True`, `x` is
    `(B, h, N, d)`, and so is the (contiguous) result.
    """
    dtype = x.dtype
    x = ops.cast(x, "float32")
    cos = ops.cast(cos, "float32")
    sin = ops.cast(sin, "float32")
    if not heads_first:
        # (N, d) -> (N, 1, d) to broadcast over heads.
        cos = ops.expand_dims(cos, 1)
        sin = ops.expand_dims(sin, 1)
    # (..., d) -> (..., d/2, 2): pair (a, b) becomes (-b, a).
    pairs = ops.reshape(x, ops.shape(x)[:-1] + (-1, 2))
    rotated = ops.stack([-pairs[..., 1], pairs[..., 0]], axis=-1)
    rotated = ops.reshape(rotated, ops.shape(x))
    return ops.cast(x * cos + rotated * sin, dtype)

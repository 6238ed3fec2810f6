"""ROI Align (torchvision's `aligned=False`, adaptive sampling) in `keras.ops`.

torchvision averages, for each of the `P x P` output bins, a `gh x gw` grid
of bilinear samples with `gh = ceil(roi_h / P)`: a data-dependent grid. Here
the bilinear weights are separable, so each box's result is
`Ay @ F @ Ax^T`, where `Ay` (`P x H`) sums the row weights of the bin's
samples and `Ax` (`P x W`) the column weights.

Shapes stay static and the result is exact for every box, inside the map or
not: a box's grid can be any size, but only samples within `[-1, H]` have
weight, and at most `H + 2` of one bin's samples fall there (their spacing
`bin / ceil(bin)` exceeds `(H + 1) / (H + 2)` once a bin is longer than the
map). So each bin evaluates a window of `H + 4` consecutive samples that
starts at its first sample at or beyond `-1` (two slots of slack for the
rounding of that start); the rest weigh nothing and only count in the
average, as in torchvision.

Sample rules (torchvision, CPU and CUDA alike): a sample outside
`[-1, H] x [-1, W]` counts as zero but still in the average; coordinates are
clamped to >= 0; at or beyond the last row / column the sample takes that
row / column; pixel `i` has its center at coordinate `i`.
"""

from keras import ops


def _axis_weights(start, length, size, output_size):
    """`(..., P, size)` averaged bilinear weights along one axis.

    `start`, `length`: `(...)` box start and extent in feature pixels.
    """
    length = ops.maximum(length, 1.0)
    bin_size = length / output_size  # (...)
    grid = ops.ceil(bin_size)  # samples per bin, torchvision's ceil(roi_h / P)
    step = bin_size / grid
    p = ops.arange(output_size, dtype=start.dtype)  # (P,)
    bin_start = start[..., None] + p * bin_size[..., None]  # (..., P)
    # The first sample at or beyond -1, less two for rounding: (..., P).
    first = ops.ceil((-1.0 - bin_start) / step[..., None] - 0.5) - 2.0
    first = ops.maximum(first, 0.0)
    window = ops.arange(size + 4, dtype=start.dtype)  # (G,)
    i = first[..., None] + window  # (..., P, G) sample indices within the bin
    # torchvision's order of operations: start + p * bin + (i + .5) * bin / grid.
    coords = bin_start[..., None] + (i + 0.5) * bin_size[..., None, None] / grid[..., None, None]
    used = ops.cast(i < grid[..., None, None], coords.dtype)
    inside = ops.cast((coords >= -1.0) & (coords <= float(size)), coords.dtype)
    coords = ops.maximum(coords, 0.0)
    low = ops.floor(coords)
    at_end = low >= size - 1
    low = ops.where(at_end, float(size - 1), low)
    high = ops.where(at_end, float(size - 1), low + 1.0)
    frac = ops.where(at_end, 0.0, coords - low)
    # (..., P, G, size): one-hot rows of the two neighbours.
    positions = ops.arange(size, dtype=coords.dtype)
    weights = (1.0 - frac)[..., None] * ops.cast(low[..., None] == positions, coords.dtype)
    weights = weights + frac[..., None] * ops.cast(high[..., None] == positions, coords.dtype)
    weights = weights * (used * inside)[..., None]
    # Average over the box's own grid: (..., P, size).
    return ops.sum(weights, axis=-2) / grid[..., None, None]


def roi_align(features, boxes, output_size=7):
    """ROI-aligns `boxes` on `features`.

    Args:
        features: `(B, H, W, C)` feature map.
        boxes: `(B, N, 4)` boxes as `(x1, y1, x2, y2)` in feature pixels.
        output_size: int. Bins per side `P`. Defaults to `7`.

    Returns:
        `(B, N, P, P, C)`.
    """
    _, height, width, _ = features.shape
    boxes = ops.cast(boxes, "float32")
    x1, y1, x2, y2 = ops.unstack(boxes, 4, axis=-1)
    ay = _axis_weights(y1, y2 - y1, height, output_size)
    ax = _axis_weights(x1, x2 - x1, width, output_size)
    ay = ops.cast(ay, features.dtype)  # (B, N, P, H)
    ax = ops.cast(ax, features.dtype)  # (B, N, P, W)
    # (B, N, P, H) x (B, H, W, C) -> (B, N, P, W, C)
    rows = ops.einsum("bnph,bhwc->bnpwc", ay, features)
    # (B, N, P, W, C) x (B, N, Q, W) -> (B, N, P, Q, C)
    return ops.einsum("bnpwc,bnqw->bnpqc", rows, ax)

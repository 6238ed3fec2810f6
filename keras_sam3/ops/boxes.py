"""Box format conversions and the clamped inverse sigmoid of DETR refinement."""

from keras import ops


def box_cxcywh_to_xyxy(boxes):
    """`(..., 4)` center-size boxes to corner boxes."""
    cx, cy, w, h = ops.unstack(boxes, 4, axis=-1)
    return ops.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], axis=-1)


def box_xyxy_to_cxcywh(boxes):
    """`(..., 4)` corner boxes to center-size boxes."""
    x1, y1, x2, y2 = ops.unstack(boxes, 4, axis=-1)
    return ops.stack([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1], axis=-1)


def inverse_sigmoid(x, eps=1e-3):
    """`log(x / (1 - x))` with `x` clamped to [0, 1] and both terms to >= eps."""
    x = ops.clip(x, 0.0, 1.0)
    return ops.log(ops.maximum(x, eps) / ops.maximum(1.0 - x, eps))

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


def _area(boxes):
    return ops.maximum(boxes[..., 2] - boxes[..., 0], 0.0) * ops.maximum(boxes[..., 3] - boxes[..., 1], 0.0)


def box_iou_and_giou(a, b, eps=1e-7):
    """IoU and generalized IoU of xyxy boxes `a` and `b` (broadcast `(..., 4)`).

    Returns:
        `(iou, giou)`, each of the broadcast shape without the last axis.
    """
    lo = ops.maximum(a[..., :2], b[..., :2])
    hi = ops.minimum(a[..., 2:], b[..., 2:])
    wh = ops.maximum(hi - lo, 0.0)
    inter = wh[..., 0] * wh[..., 1]
    union = _area(a) + _area(b) - inter
    iou = inter / (union + eps)
    hull_wh = ops.maximum(ops.maximum(a[..., 2:], b[..., 2:]) - ops.minimum(a[..., :2], b[..., :2]), 0.0)
    hull = hull_wh[..., 0] * hull_wh[..., 1]
    return iou, iou - (hull - union) / (hull + eps)

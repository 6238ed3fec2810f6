"""Host-side (numpy) mask resizing and SAM 3 post-processing."""

import numpy as np


def _bilinear_matrix(in_size, out_size):
    """`(out, in)` interpolation weights, half-pixel centers (align_corners=False),
    no antialias: PyTorch's `interpolate(mode="bilinear")` along one axis."""
    scale = in_size / out_size
    src = np.maximum((np.arange(out_size) + 0.5) * scale - 0.5, 0.0)
    low = np.minimum(np.floor(src).astype(int), in_size - 1)
    high = np.minimum(low + 1, in_size - 1)
    frac = src - low
    weights = np.zeros((out_size, in_size))
    np.add.at(weights, (np.arange(out_size), low), 1.0 - frac)
    np.add.at(weights, (np.arange(out_size), high), frac)
    return weights


def resize_bilinear(maps, size):
    """`(..., h, w)` -> `(..., H, W)`, bilinear with half-pixel centers."""
    maps = np.asarray(maps)
    wy = _bilinear_matrix(maps.shape[-2], size[0]).astype(maps.dtype)
    wx = _bilinear_matrix(maps.shape[-1], size[1]).astype(maps.dtype)
    return np.einsum("yh,...hw,xw->...yx", wy, maps, wx, optimize=True)


def _sigmoid(x):
    # exp of a non-positive number only: no overflow warning for large logits.
    x = np.asarray(x, "float32")
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e)).astype("float32")


def mask_iou(a, b):
    """`(n, H, W)` and `(m, H, W)` bool -> `(n, m)` IoU; two empty masks have IoU 0."""
    a = np.asarray(a, bool).reshape(len(a), -1).astype("float64")  # (n, H * W)
    b = np.asarray(b, bool).reshape(len(b), -1).astype("float64")  # (m, H * W)
    inter = a @ b.T
    union = a.sum(1)[:, None] + b.sum(1)[None] - inter
    return np.where(union > 0, inter / np.maximum(union, 1), 0.0)


def check_nms_threshold(nms_threshold):
    """`None` (no suppression) or a number in [0, 1]; anything else is an error."""
    if nms_threshold is None:
        return
    if isinstance(nms_threshold, bool) or not isinstance(nms_threshold, (int, float, np.number)):
        raise ValueError(f"nms_threshold must be a number in [0, 1] or None, got {nms_threshold!r}.")
    if not 0.0 <= float(nms_threshold) <= 1.0:
        raise ValueError(f"nms_threshold must be in [0, 1] (a mask IoU), got {nms_threshold}.")


def mask_nms(scores, masks, iou_threshold):
    """Greedy non-maximum suppression on binary masks.

    Meta's optional `nms_masks` (facebookresearch/sam3 `perflib/nms.py`):
    visit instances from the highest score down; keep one unless its mask
    IoU with an instance already kept is above `iou_threshold`. Equal scores
    are visited from the last index down: the stable form of Meta's
    `argsort()[::-1]`, whose order for ties depends on numpy's sort
    algorithm (scores tie where logits reach the decoder's clamp).

    Args:
        scores: `(K,)` floats.
        masks: `(K, h, w)` bool.
        iou_threshold: float in [0, 1].

    Returns:
        `(K,)` bool: which instances are kept.
    """
    check_nms_threshold(iou_threshold)
    scores = np.asarray(scores, "float32")
    keep = np.zeros(len(scores), bool)
    if len(scores) == 0:
        return keep
    iou = mask_iou(masks, masks)
    for i in np.argsort(scores, kind="stable")[::-1]:
        if not np.any(iou[i, keep] > iou_threshold):
            keep[i] = True
    return keep


def post_process_instances(
    outputs, original_sizes, threshold=0.3, mask_threshold=0.5, nms_threshold=None
):
    """Per image, the instances scoring above `threshold`, at the original size.

    As the reference processor: `score = sigmoid(logit) * sigmoid(presence)`;
    masks are `sigmoid`-ed, bilinearly resized to the image, then compared
    with `mask_threshold`; boxes are scaled to pixels (not clipped). No NMS
    unless `nms_threshold` is given: then, as Meta's optional mask NMS, an
    instance whose mask (at the model's mask resolution, binarized with
    `mask_threshold`) overlaps a higher-scoring one's with IoU above
    `nms_threshold` is dropped (`mask_nms`).

    Args:
        outputs: dict with `pred_logits` `(B, Q)`, `presence_logits` `(B, 1)`,
            `pred_boxes` `(B, Q, 4)` normalized xyxy, `pred_masks`
            `(B, Q, h, w)` logits and optionally `semantic_seg` `(B, h, w, 1)`.
        original_sizes: list of `(height, width)`.
        threshold: float. Minimum score.
        mask_threshold: float. Mask probability threshold.
        nms_threshold: `None` (the reference's behaviour) or a mask IoU in [0, 1].

    Returns:
        A list of dicts: `scores` `(K,)`, `boxes` `(K, 4)` pixel xyxy,
        `masks` bool `(K, H, W)`, `indices` `(K,)` the query of each
        instance, and `semantic_mask` bool `(H, W)` when available.
    """
    check_nms_threshold(nms_threshold)
    logits = np.asarray(outputs["pred_logits"], "float32")
    if len(original_sizes) != logits.shape[0]:
        raise ValueError(f"{logits.shape[0]} predictions but {len(original_sizes)} sizes.")
    scores = _sigmoid(logits) * _sigmoid(outputs["presence_logits"])
    results = []
    for i, (height, width) in enumerate(original_sizes):
        keep = np.flatnonzero(scores[i] > threshold)
        masks = _sigmoid(np.asarray(outputs["pred_masks"][i])[keep])
        if nms_threshold is not None:
            kept = mask_nms(scores[i, keep], masks > mask_threshold, nms_threshold)
            keep, masks = keep[kept], masks[kept]
        result = {
            "scores": scores[i, keep],
            "boxes": np.asarray(outputs["pred_boxes"][i], "float32")[keep]
            * np.array([width, height, width, height], "float32"),
            "masks": resize_bilinear(masks, (height, width)) > mask_threshold,
            "indices": keep,
        }
        if "semantic_seg" in outputs:
            semantic = _sigmoid(np.asarray(outputs["semantic_seg"][i])[..., 0])
            result["semantic_mask"] = resize_bilinear(semantic, (height, width)) > 0.5
        results.append(result)
    return results

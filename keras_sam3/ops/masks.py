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


def post_process_instances(outputs, original_sizes, threshold=0.3, mask_threshold=0.5):
    """Per image, the instances scoring above `threshold`, at the original size.

    As the reference processor: `score = sigmoid(logit) * sigmoid(presence)`;
    masks are `sigmoid`-ed, bilinearly resized to the image, then compared
    with `mask_threshold`; boxes are scaled to pixels (not clipped). No NMS.

    Args:
        outputs: dict with `pred_logits` `(B, Q)`, `presence_logits` `(B, 1)`,
            `pred_boxes` `(B, Q, 4)` normalized xyxy, `pred_masks`
            `(B, Q, h, w)` logits and optionally `semantic_seg` `(B, h, w, 1)`.
        original_sizes: list of `(height, width)`.

    Returns:
        A list of dicts: `scores` `(K,)`, `boxes` `(K, 4)` pixel xyxy,
        `masks` bool `(K, H, W)`, `indices` `(K,)` the query of each
        instance, and `semantic_mask` bool `(H, W)` when available.
    """
    logits = np.asarray(outputs["pred_logits"], "float32")
    if len(original_sizes) != logits.shape[0]:
        raise ValueError(f"{logits.shape[0]} predictions but {len(original_sizes)} sizes.")
    scores = _sigmoid(logits) * _sigmoid(outputs["presence_logits"])
    results = []
    for i, (height, width) in enumerate(original_sizes):
        keep = np.flatnonzero(scores[i] > threshold)
        masks = _sigmoid(np.asarray(outputs["pred_masks"][i])[keep])
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

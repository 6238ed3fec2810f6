"""What `SAM3Loss` targets must be: their keys and shapes (checked when the
step is traced) and the value problems the matching's host call counts
(`keras_sam3.ops.matching.hungarian_match` raises with these messages)."""

from keras import ops

TARGET_KEYS = ("boxes", "valid", "masks", "mask_valid")
# How far outside [0, 1] a normalized box coordinate may lie (rounding).
BOX_TOLERANCE = 1e-3
TARGET_PROBLEMS = (
    "{} valid ground-truth boxes are not finite (mark padding with valid = 0, not NaN).",
    "{} valid ground-truth boxes have x2 <= x1 or y2 <= y1: boxes are normalized (x1, y1, x2, y2) "
    "(are these (cx, cy, w, h)?); mark an empty instance valid = 0.",
    "{} valid ground-truth boxes lie outside [0, 1]: boxes are normalized to the model input "
    "(divide pixel boxes by the image's width and height).",
    "{} mask values of valid instances lie outside [0, 1]: masks are 0 / 1 (not 0 / 255).",
)


def check_target_structure(y_true):
    """Keys and shapes of `SAM3Loss` targets: a clear error at trace time."""
    if not isinstance(y_true, dict):
        raise TypeError(
            "SAM3Loss targets are a dict with 'boxes' (B, G, 4), 'valid' (B, G) and, for the "
            f"mask losses, 'masks' (B, G, Hm, Wm); got {type(y_true).__name__}."
        )
    missing = [k for k in ("boxes", "valid") if k not in y_true]
    if missing:
        raise ValueError(f"SAM3Loss targets lack {missing}; they need 'boxes' and 'valid'.")
    unknown = sorted(set(y_true) - set(TARGET_KEYS))
    if unknown:
        raise ValueError(f"Unknown SAM3Loss target keys {unknown}; the keys are {list(TARGET_KEYS)}.")
    boxes = y_true["boxes"].shape
    if len(boxes) != 3 or boxes[-1] != 4:
        raise ValueError(f"Target 'boxes' must be (B, G, 4) normalized xyxy; got shape {tuple(boxes)}.")
    expected = {"valid": 2, "mask_valid": 2, "masks": 4}
    for key, rank in expected.items():
        if key not in y_true:
            continue
        shape = tuple(y_true[key].shape)
        same = all(a is None or b is None or a == b for a, b in zip(shape[:2], boxes[:2]))
        if len(shape) != rank or not same:
            layout = "(B, G, Hm, Wm)" if key == "masks" else "(B, G)"
            raise ValueError(
                f"Target '{key}' must be {layout} with (B, G) as in 'boxes' {tuple(boxes)}; got shape {shape}."
            )


def target_problems(y_true, gt_xyxy, valid):
    """Counts of the `TARGET_PROBLEMS` among valid instances, `(4,)` int32."""
    is_valid = valid > 0
    finite = ops.all(ops.isfinite(gt_xyxy), axis=-1)
    boxes = ops.where(finite[..., None], gt_xyxy, 0.0)
    inverted = (boxes[..., 2] <= boxes[..., 0]) | (boxes[..., 3] <= boxes[..., 1])
    outside = ops.any((boxes < -BOX_TOLERANCE) | (boxes > 1.0 + BOX_TOLERANCE), axis=-1)
    counts = [
        is_valid & ~finite,
        is_valid & finite & inverted,
        is_valid & finite & outside,
    ]
    counts = [ops.sum(ops.cast(c, "int32")) for c in counts]
    if "masks" in y_true:
        masks = ops.cast(y_true["masks"], "float32")
        bad = ~((masks >= 0.0) & (masks <= 1.0))  # NaN included
        counts.append(ops.sum(ops.cast(bad & is_valid[:, :, None, None], "int32")))
    else:
        counts.append(ops.zeros((), "int32"))
    return ops.stack(counts)

"""SAM3Loss on hand-computed cases, on every backend."""

import numpy as np
import pytest
from keras import ops

from keras_sam3.losses import SAM3Loss


def softplus(x):
    return np.log1p(np.exp(x))


def bce(x, t):
    return softplus(x) - x * t


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


def focal(x, t, alpha):
    p = sigmoid(x)
    p_t = p * t + (1 - p) * (1 - t)
    a_t = alpha * t + (1 - alpha) * (1 - t)
    return a_t * (1 - p_t) ** 2 * bce(x, t)


def dice(x, t):
    p = sigmoid(x)
    return 1 - (2 * (p * t).sum() + 1) / (p.sum() + t.sum() + 1)


def one_prompt():
    y_pred = {
        "all_pred_logits": np.array([[[2.0, -1.0]]], "float32"),
        "all_pred_boxes": np.array([[[[0.1, 0.1, 0.5, 0.5], [0.6, 0.6, 0.9, 0.9]]]], "float32"),
        "all_presence_logits": np.array([[[0.5]]], "float32"),
        "pred_masks": np.array([[[[1.0, -2.0], [0.5, -1.0]], [[3.0, 3.0], [3.0, 3.0]]]], "float32"),
        "semantic_seg": np.array([[[[0.2], [-0.3]], [[1.5], [-2.0]]]], "float32"),
    }
    y_true = {
        "boxes": np.array([[[0.1, 0.1, 0.5, 0.6], [0.0, 0.0, 0.0, 0.0]]], "float32"),
        "masks": np.array([[[[1, 0], [1, 0]], [[0, 0], [0, 0]]]], "float32"),
        "valid": np.array([[1.0, 0.0]], "float32"),
    }
    return y_true, y_pred


def numpy_terms(y_true, y_pred):
    """Query 0 matches the one ground truth: box IoU 0.16 / 0.2 = 0.8, the
    hull is the ground truth box (GIoU 0.8), cxcywh L1 = 0.05 + 0.1."""
    s = y_pred["all_pred_logits"][0, 0].astype("float64")
    p = sigmoid(s)
    target = max(p[0] ** 0.25 * 0.8**0.75, 0.01)
    class_loss = (10 * bce(s[0], target) + p[1] ** 2 * bce(s[1], 0.0)) / 2
    mask_logits = y_pred["pred_masks"][0, 0].astype("float64")
    gt = y_true["masks"][0, 0]
    semantic = y_pred["semantic_seg"][0, ..., 0].astype("float64")
    return {
        "class": 20 * class_loss,
        "presence": 20 * 0.5 * bce(0.5, 1.0),
        "bbox": 5 * 0.15,
        "giou": 2 * (1 - 0.8),
        "mask": 200 * focal(mask_logits, gt, 0.25).mean(),
        "dice": 10 * dice(mask_logits, gt),
        "semantic": 20 * focal(semantic, gt, 0.6).mean(),
        "semantic_dice": 30 * dice(semantic, gt),
    }


def to_tensors(tree):
    return {k: ops.convert_to_tensor(v) for k, v in tree.items()}


def test_hand_computed_terms():
    y_true, y_pred = one_prompt()
    terms = SAM3Loss(pad_num_queries=2).compute(to_tensors(y_true), to_tensors(y_pred))
    expected = numpy_terms(y_true, y_pred)
    for name, value in expected.items():
        assert float(terms[name]) == pytest.approx(value, rel=1e-4, abs=1e-6), name
    assert float(terms["total"]) == pytest.approx(sum(expected.values()), rel=1e-4)


def test_meta_query_padding_divides_by_200():
    y_true, y_pred = one_prompt()
    terms = SAM3Loss().compute(to_tensors(y_true), to_tensors(y_pred))
    assert float(terms["class"]) == pytest.approx(numpy_terms(y_true, y_pred)["class"] * 2 / 200, rel=1e-4)


def test_ground_truth_order_does_not_matter():
    y_true, y_pred = one_prompt()
    swapped = {k: v[:, ::-1].copy() for k, v in y_true.items()}
    loss = SAM3Loss()
    a = float(loss(to_tensors(y_true), to_tensors(y_pred)))
    b = float(loss(to_tensors(swapped), to_tensors(y_pred)))
    assert a == pytest.approx(b, rel=1e-6)


def test_prompt_without_ground_truth_only_trains_presence():
    y_true, y_pred = one_prompt()
    y_true["valid"][:] = 0.0
    terms = SAM3Loss().compute(to_tensors(y_true), to_tensors(y_pred))
    for name in ("class", "bbox", "giou", "mask", "dice", "semantic", "semantic_dice"):
        assert float(terms[name]) == 0.0, name
    assert float(terms["presence"]) == pytest.approx(20 * 0.5 * bce(0.5, 0.0), rel=1e-5)


def test_negative_prompts_option_trains_queries_and_semantics_of_absent_concepts():
    y_true, y_pred = one_prompt()
    y_true["valid"][:] = 0.0
    terms = SAM3Loss(pad_num_queries=2, negative_prompts=True).compute(to_tensors(y_true), to_tensors(y_pred))
    s = y_pred["all_pred_logits"][0, 0].astype("float64")
    expected_class = 20 * (sigmoid(s) ** 2 * bce(s, 0.0)).sum() / 2
    assert float(terms["class"]) == pytest.approx(expected_class, rel=1e-4)
    semantic = y_pred["semantic_seg"][0, ..., 0].astype("float64")
    empty = np.zeros_like(semantic)
    assert float(terms["semantic"]) == pytest.approx(20 * focal(semantic, empty, 0.6).mean(), rel=1e-4)
    assert float(terms["semantic_dice"]) == pytest.approx(30 * dice(semantic, empty), rel=1e-4)
    for name in ("bbox", "giou", "mask", "dice"):
        assert float(terms[name]) == 0.0, name
    # With ground truth present the option changes nothing.
    y_true, y_pred = one_prompt()
    on = SAM3Loss(negative_prompts=True).compute(to_tensors(y_true), to_tensors(y_pred))
    off = SAM3Loss().compute(to_tensors(y_true), to_tensors(y_pred))
    for name in off:
        assert float(on[name]) == pytest.approx(float(off[name]), rel=1e-6), name


def test_a_negative_prompt_weight_scales_only_the_absent_concepts_terms():
    # Two prompts, the second without ground truth: weight w puts w of the
    # absent prompt's query loss in the class term and weighs its semantic
    # terms w against the present prompt's 1.
    first, pred_a = one_prompt()
    second, pred_b = one_prompt()
    second["valid"][:] = 0.0
    y_true = {k: np.concatenate([first[k], second[k]]) for k in first}
    pred_b = {k: v + 0.3 for k, v in pred_b.items()}  # another prediction for the absent prompt
    y_pred = {k: np.concatenate([pred_a[k], pred_b[k]]) for k in pred_a}
    terms = {
        w: SAM3Loss(pad_num_queries=2, negative_prompts=w).compute(to_tensors(y_true), to_tensors(y_pred))
        for w in (False, 0.25, True)
    }
    for name in ("bbox", "giou", "mask", "dice", "presence"):
        assert float(terms[0.25][name]) == pytest.approx(float(terms[False][name]), rel=1e-6), name
    # The class term is a sum over prompts: the absent prompt's part is w of its full part.
    absent_class = float(terms[True]["class"]) - float(terms[False]["class"])
    assert absent_class > 0
    assert float(terms[0.25]["class"]) == pytest.approx(float(terms[False]["class"]) + 0.25 * absent_class, rel=1e-5)
    # The semantic terms are a weighted mean over prompts.
    for name in ("semantic", "semantic_dice"):
        present = float(terms[False][name])
        absent = 2 * float(terms[True][name]) - present  # terms[True] is the plain mean of the two
        assert float(terms[0.25][name]) == pytest.approx((present + 0.25 * absent) / 1.25, rel=1e-5), name
    for bad in (-0.1, 1.5, float("nan"), "yes", None):
        with pytest.raises(ValueError, match="negative_prompts must be a bool or a weight in"):
            SAM3Loss(negative_prompts=bad)


def test_masks_are_upsampled_to_the_target_and_batch_scales_by_sqrt():
    y_true, y_pred = one_prompt()
    y_true["masks"] = np.repeat(np.repeat(y_true["masks"], 2, axis=2), 2, axis=3)  # 4 x 4 targets
    batch2 = lambda tree: {k: np.concatenate([v, v]) for k, v in tree.items()}  # noqa: E731
    loss = SAM3Loss()
    one = loss.compute(to_tensors(y_true), to_tensors(y_pred))
    two = loss.compute(to_tensors(batch2(y_true)), to_tensors(batch2(y_pred)))
    assert np.isfinite(float(one["mask"])) and float(one["mask"]) > 0
    # The same prompt twice: per-box terms keep their value (N doubles too),
    # the total gains sqrt(2).
    assert float(two["total"]) == pytest.approx(float(one["total"]) * np.sqrt(2), rel=1e-4)


def test_missing_masks_with_mask_weights_is_an_error():
    y_true, y_pred = one_prompt()
    del y_true["masks"]
    with pytest.raises(ValueError, match="masks"):
        SAM3Loss()(to_tensors(y_true), to_tensors(y_pred))
    no_masks = SAM3Loss(mask_weight=0, dice_weight=0, semantic_weight=0, semantic_dice_weight=0)
    assert np.isfinite(float(no_masks(to_tensors(y_true), to_tensors(y_pred))))


def test_instances_without_a_segment_skip_the_mask_losses():
    y_true, y_pred = one_prompt()
    y_true["mask_valid"] = np.array([[0.0, 0.0]], "float32")
    terms = SAM3Loss(pad_num_queries=2).compute(to_tensors(y_true), to_tensors(y_pred))
    for name in ("mask", "dice", "semantic", "semantic_dice"):
        assert float(terms[name]) == 0.0, name
    assert float(terms["bbox"]) == pytest.approx(5 * 0.15, rel=1e-5)  # boxes still train


def test_padding_may_hold_anything_and_no_slot_is_an_error():
    y_true, y_pred = one_prompt()
    expected = SAM3Loss(pad_num_queries=2).compute(to_tensors(y_true), to_tensors(y_pred))
    y_true["boxes"][0, 1] = np.nan  # padding slots are never read
    y_true["masks"][0, 1] = np.nan
    terms = SAM3Loss(pad_num_queries=2).compute(to_tensors(y_true), to_tensors(y_pred))
    for name, value in expected.items():
        assert float(terms[name]) == pytest.approx(float(value), rel=1e-6), name
    empty = {"boxes": np.zeros((1, 0, 4), "float32"), "valid": np.zeros((1, 0), "float32")}
    with pytest.raises(ValueError, match="G >= 1"):
        SAM3Loss(mask_weight=0, dice_weight=0, semantic_weight=0, semantic_dice_weight=0)(
            to_tensors(empty), to_tensors(y_pred)
        )


def _cxcywh(y):
    # A box right of its own width: as xyxy, cx > w reads as x1 > x2.
    y["boxes"][0, 0] = [0.6, 0.5, 0.8, 0.9]
    b = y["boxes"]
    y["boxes"] = np.concatenate([(b[..., :2] + b[..., 2:]) / 2, b[..., 2:] - b[..., :2]], -1)


def _pixels(y):
    y["boxes"] = y["boxes"] * 1008


def _nan_box(y):
    y["boxes"][0, 0, 0] = np.nan


def _masks_255(y):
    y["masks"] = y["masks"] * 255


@pytest.mark.parametrize(
    "corrupt, message",
    [
        (_cxcywh, r"1 valid ground-truth boxes have x2 <= x1 or y2 <= y1.*\(cx, cy, w, h\)"),
        (_pixels, r"1 valid ground-truth boxes lie outside \[0, 1\].*divide pixel boxes"),
        (_nan_box, "1 valid ground-truth boxes are not finite"),
        (_masks_255, r"2 mask values of valid instances lie outside \[0, 1\].*not 0 / 255"),
    ],
)
def test_target_values_that_would_train_silently_wrong_are_named(corrupt, message):
    """Checked in the matching's host call, so inside compiled steps too
    (tests/models/test_fit.py)."""
    y_true, y_pred = one_prompt()
    corrupt(y_true)
    # A ValueError on PyTorch; JAX and TensorFlow wrap it in their runtime error.
    with pytest.raises(Exception, match=message):
        SAM3Loss(pad_num_queries=2).compute(to_tensors(y_true), to_tensors(y_pred))


@pytest.mark.parametrize(
    "change, error, message",
    [
        (lambda y: tuple(y.values()), TypeError, "targets are a dict"),
        (lambda y: {k: v for k, v in y.items() if k != "valid"}, ValueError, r"lack \['valid'\]"),
        (lambda y: {**y, "mask_vaild": y["valid"]}, ValueError, r"Unknown SAM3Loss target keys \['mask_vaild'\]"),
        (lambda y: {**y, "valid": y["valid"][0]}, ValueError, r"'valid' must be \(B, G\)"),
        (lambda y: {**y, "masks": y["masks"][:, :1]}, ValueError, r"'masks' must be \(B, G, Hm, Wm\)"),
        (lambda y: {**y, "boxes": y["boxes"][..., :2]}, ValueError, r"'boxes' must be \(B, G, 4\)"),
    ],
)
def test_target_structure_is_checked(change, error, message):
    y_true, y_pred = one_prompt()
    y_true = change(y_true)
    tensors = to_tensors(y_true) if isinstance(y_true, dict) else tuple(ops.convert_to_tensor(v) for v in y_true)
    with pytest.raises(error, match=message):
        SAM3Loss(pad_num_queries=2).compute(tensors, to_tensors(y_pred))


def test_box_only_instances_are_not_semantic_background():
    """A box-only instance (mask_valid 0) leaves its prompt's union unknown:
    that prompt gets no semantic loss, rather than one that calls the
    object's region background."""
    y_true, y_pred = one_prompt()
    y_true["valid"][:] = 1.0
    y_true["boxes"][0, 1] = [0.6, 0.6, 0.9, 0.9]
    y_true["mask_valid"] = np.array([[1.0, 0.0]], "float32")
    terms = SAM3Loss(pad_num_queries=2).compute(to_tensors(y_true), to_tensors(y_pred))
    assert float(terms["semantic"]) == 0.0 and float(terms["semantic_dice"]) == 0.0
    assert float(terms["mask"]) > 0.0  # the masked instance still trains its mask
    y_true["mask_valid"][:] = 1.0
    terms = SAM3Loss(pad_num_queries=2).compute(to_tensors(y_true), to_tensors(y_pred))
    assert float(terms["semantic"]) > 0.0


def test_hard_targets_for_training_from_scratch():
    y_true, y_pred = one_prompt()
    terms = SAM3Loss(pad_num_queries=2, soft_targets=False).compute(to_tensors(y_true), to_tensors(y_pred))
    s = y_pred["all_pred_logits"][0, 0].astype("float64")
    expected = 20 * (10 * bce(s[0], 1.0) + sigmoid(s[1]) ** 2 * bce(s[1], 0.0)) / 2
    assert float(terms["class"]) == pytest.approx(expected, rel=1e-4)


def test_mask_matching_cost_is_hand_computed_and_can_decide_the_match():
    y_true, y_pred = one_prompt()
    loss = SAM3Loss(cost_mask=5.0, cost_dice=5.0)
    cost = ops.convert_to_numpy(
        loss.mask_matching_cost(ops.convert_to_tensor(y_pred["pred_masks"]), ops.convert_to_tensor(y_true["masks"]))
    )
    assert cost.shape == (1, 2, 2)
    for q in range(2):
        for g in range(2):
            x = y_pred["pred_masks"][0, q].astype("float64")
            t = y_true["masks"][0, g]
            assert cost[0, q, g] == pytest.approx(5 * bce(x, t).mean() + 5 * dice(x, t), rel=1e-5)
    # Boxes and scores alone match query 0 (the box on the object). Give
    # query 1 the object's mask and query 0 the opposite: a large enough mask
    # cost moves the match, and the mask losses follow it.
    y_pred["pred_masks"][0, 1] = np.where(y_true["masks"][0, 0] > 0, 8.0, -8.0)
    y_pred["pred_masks"][0, 0] = -y_pred["pred_masks"][0, 1]
    by_boxes, _, _ = SAM3Loss().match(
        *(ops.convert_to_tensor(y_pred[k][:, 0]) for k in ("all_pred_logits", "all_pred_boxes")),
        ops.convert_to_tensor(y_true["boxes"]),
        ops.convert_to_tensor(y_true["valid"]),
    )
    assert ops.convert_to_numpy(by_boxes)[0, 0].tolist() == [1.0, 0.0]
    strong = SAM3Loss(cost_mask=20.0, cost_dice=20.0)
    terms = strong.compute(to_tensors(y_true), to_tensors(y_pred))
    plain = SAM3Loss().compute(to_tensors(y_true), to_tensors(y_pred))
    # Query 1's mask is the ground truth's: near-zero mask losses.
    assert float(terms["mask"]) < 1e-3 < float(plain["mask"])
    assert float(terms["dice"]) < 0.1 < float(plain["dice"])


def test_mask_matching_cost_needs_masks_and_skips_box_only_instances():
    y_true, y_pred = one_prompt()
    del y_true["masks"]
    loss = SAM3Loss(cost_mask=5.0, mask_weight=0, dice_weight=0, semantic_weight=0, semantic_dice_weight=0)
    with pytest.raises(ValueError, match="mask matching cost"):
        loss.compute(to_tensors(y_true), to_tensors(y_pred))
    # A box-only instance (mask_valid 0) is matched as without the mask cost.
    y_true, y_pred = one_prompt()
    y_pred["pred_masks"][0, 1] = np.where(y_true["masks"][0, 0] > 0, 8.0, -8.0)
    y_pred["pred_masks"][0, 0] = -y_pred["pred_masks"][0, 1]
    y_true["mask_valid"] = np.array([[0.0, 0.0]], "float32")
    strong = SAM3Loss(cost_mask=20.0, cost_dice=20.0).compute(to_tensors(y_true), to_tensors(y_pred))
    plain = SAM3Loss().compute(to_tensors(y_true), to_tensors(y_pred))
    for name in plain:
        assert float(strong[name]) == pytest.approx(float(plain[name]), rel=1e-6), name


def one_to_many_prompt():
    """One ground truth (cxcywh 0.3, 0.35, 0.4, 0.5) and four one-to-many
    queries. Quality 0.3 p + 0.7 IoU: query 0 (IoU 0.8) 0.824, query 1 (the
    ground truth's box) 0.85, query 2 (the same box, logit -1) 0.781, query 3
    (no overlap) 0.286. With topk 2 of 4 the quantile is halfway between the
    2nd and 3rd best (0.802): queries 0 and 1 match."""
    y_true, y_pred = one_prompt()
    y_pred["all_pred_logits_o2m"] = np.array([[[2.0, 0.0, -1.0, 3.0]]], "float32")
    y_pred["all_pred_boxes_o2m"] = np.array(
        [[[[0.1, 0.1, 0.5, 0.5], [0.1, 0.1, 0.5, 0.6], [0.1, 0.1, 0.5, 0.6], [0.7, 0.7, 0.9, 0.9]]]], "float32"
    )
    y_pred["pred_masks_o2m"] = np.array(
        [[[[1.0, -2.0], [0.5, -1.0]], [[2.0, -1.0], [2.0, -3.0]], [[0.0, 0.0], [0.0, 0.0]], [[3.0, 3.0], [3.0, 3.0]]]],
        "float32",
    )
    return y_true, y_pred


def test_one_to_many_terms_are_hand_computed():
    y_true, y_pred = one_to_many_prompt()
    loss = SAM3Loss(pad_num_queries=4, o2m_weight=2.0, o2m_topk=2)
    terms = loss.compute(to_tensors(y_true), to_tensors(y_pred))
    s = y_pred["all_pred_logits_o2m"][0, 0].astype("float64")
    p = sigmoid(s)
    class_loss = (
        10 * bce(s[0], p[0] ** 0.25 * 0.8**0.75)
        + 10 * bce(s[1], p[1] ** 0.25)
        + p[2] ** 2 * bce(s[2], 0.0)
        + p[3] ** 2 * bce(s[3], 0.0)
    ) / 4
    gt = y_true["masks"][0, 0]
    masks = y_pred["pred_masks_o2m"][0].astype("float64")
    expected = {
        "class_o2m": 2 * 20 * class_loss,
        "bbox_o2m": 2 * 5 * 0.15,  # query 0's L1; query 1's is 0
        "giou_o2m": 2 * 2 * (1 - 0.8),
        "mask_o2m": 2 * 200 * (focal(masks[0], gt, 0.25).mean() + focal(masks[1], gt, 0.25).mean()),
        "dice_o2m": 2 * 10 * (dice(masks[0], gt) + dice(masks[1], gt)),
    }
    for name, value in expected.items():
        assert float(terms[name]) == pytest.approx(value, rel=1e-4, abs=1e-6), name
    one_to_one = SAM3Loss(pad_num_queries=4).compute(to_tensors(y_true), to_tensors(y_pred))
    assert set(one_to_one) == set(terms) - set(expected)
    for name, value in one_to_one.items():
        if name != "total":
            assert float(terms[name]) == pytest.approx(float(value), rel=1e-6), name
    assert float(terms["total"]) == pytest.approx(float(one_to_one["total"]) + sum(expected.values()), rel=1e-4)
    # Without the one-to-many outputs (an evaluation pass) there are no such terms.
    del y_pred["all_pred_logits_o2m"]
    assert set(loss.compute(to_tensors(y_true), to_tensors(y_pred))) == set(one_to_one)


@pytest.mark.parametrize("matcher_on_aux", [False, True])
def test_one_to_many_earlier_layers_are_matched_one_to_one_as_metas_configurations(matcher_on_aux):
    """Two decoder layers: the last is matched one-to-many; the first
    one-to-one (Meta's `use_o2m_matcher_on_o2m_aux: false`) unless asked."""
    y_true, y_pred = one_to_many_prompt()
    first = {  # another layer before the last: query 2 is the best one-to-one match
        "all_pred_logits_o2m": np.array([[[0.5, -0.5, 1.0, 0.0]]], "float32"),
        "all_pred_boxes_o2m": y_pred["all_pred_boxes_o2m"][:, :, [3, 0, 1, 2]],
    }
    two_layers = dict(y_pred)
    for key in ("all_pred_logits", "all_pred_boxes", "all_presence_logits"):
        two_layers[key] = np.concatenate([y_pred[key], y_pred[key]], axis=1)
    for key, value in first.items():
        two_layers[key] = np.concatenate([value, y_pred[key]], axis=1)
    kwargs = {"pad_num_queries": 4, "o2m_weight": 1.0, "o2m_topk": 2, "o2m_matcher_on_aux": matcher_on_aux,
              "mask_weight": 0.0, "dice_weight": 0.0}
    both = SAM3Loss(**kwargs).compute(to_tensors(y_true), to_tensors(two_layers))
    last = SAM3Loss(**kwargs).compute(to_tensors(y_true), to_tensors(y_pred))
    # The first layer alone, as the one-to-one queries of a one-layer model.
    alone = dict(
        y_pred,
        all_pred_logits=first["all_pred_logits_o2m"],
        all_pred_boxes=first["all_pred_boxes_o2m"],
        pred_masks=y_pred["pred_masks_o2m"],
    )
    if matcher_on_aux:
        alone.update(first)
        first_terms = SAM3Loss(**kwargs).compute(to_tensors(y_true), to_tensors(alone))
        first_terms = {k[: -len("_o2m")]: v for k, v in first_terms.items() if k.endswith("_o2m")}
    else:
        first_terms = SAM3Loss(**{**kwargs, "o2m_weight": 0.0}).compute(to_tensors(y_true), to_tensors(alone))
    for name in ("class", "bbox", "giou"):
        expected = float(first_terms[name]) + float(last[f"{name}_o2m"])
        assert float(both[f"{name}_o2m"]) == pytest.approx(expected, rel=1e-5), name
    assert float(first_terms["bbox"]) != pytest.approx(float(last["bbox_o2m"]), rel=1e-2)


def test_one_to_many_masks_can_be_left_out():
    y_true, y_pred = one_to_many_prompt()
    with_masks = SAM3Loss(pad_num_queries=4, o2m_weight=2.0, o2m_topk=2).compute(to_tensors(y_true), to_tensors(y_pred))
    del y_pred["pred_masks_o2m"]
    with pytest.raises(ValueError, match=r"o2m_masks=True\) needs the one-to-many masks"):
        SAM3Loss(o2m_weight=2.0).compute(to_tensors(y_true), to_tensors(y_pred))
    without = SAM3Loss(pad_num_queries=4, o2m_weight=2.0, o2m_topk=2, o2m_masks=False).compute(
        to_tensors(y_true), to_tensors(y_pred)
    )
    assert set(with_masks) - set(without) == {"mask_o2m", "dice_o2m"}
    for name, value in without.items():
        if name != "total":
            assert float(value) == pytest.approx(float(with_masks[name]), rel=1e-6), name

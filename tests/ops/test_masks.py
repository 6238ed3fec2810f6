import numpy as np
import pytest

from keras_sam3.ops.masks import post_process_instances
from keras_sam3.ops.masks import resize_bilinear

torch = pytest.importorskip("torch", reason="compared with torch's interpolate and the reference processor")


@pytest.mark.parametrize("size", [(40, 60), (13, 7), (8, 8), (100, 31)])
def test_resize_matches_torch_interpolate(size):
    maps = np.random.default_rng(0).normal(size=(3, 8, 8)).astype("float32")
    ours = resize_bilinear(maps, size)
    expected = torch.nn.functional.interpolate(
        torch.from_numpy(maps)[None], size=size, mode="bilinear", align_corners=False
    )[0].numpy()
    np.testing.assert_allclose(ours, expected, atol=1e-5)


def _reference_post_process(outputs, sizes, threshold, mask_threshold=0.5):
    """The reference processor's steps (`Sam3ImageProcessor.post_process_instance_segmentation`,
    which cannot be imported without torchvision) in torch: sigmoid scores times
    sigmoid presence, keep > threshold, sigmoid masks, bilinear resize, threshold."""
    results = []
    scores = torch.sigmoid(torch.from_numpy(outputs["pred_logits"])) * torch.sigmoid(
        torch.from_numpy(outputs["presence_logits"])
    )
    for i, (h, w) in enumerate(sizes):
        keep = scores[i] > threshold
        masks = torch.sigmoid(torch.from_numpy(outputs["pred_masks"][i]))[keep]
        masks = torch.nn.functional.interpolate(masks[None], size=(h, w), mode="bilinear", align_corners=False)[0]
        boxes = torch.from_numpy(outputs["pred_boxes"][i])[keep] * torch.tensor([w, h, w, h])
        results.append({"scores": scores[i][keep], "boxes": boxes, "masks": masks > mask_threshold})
    return results


def test_matches_the_reference_post_processing():
    rng = np.random.default_rng(1)
    outputs = {
        "pred_logits": rng.normal(0, 2, (2, 6)).astype("float32"),
        "presence_logits": rng.normal(1, 1, (2, 1)).astype("float32"),
        "pred_boxes": rng.uniform(0, 1, (2, 6, 4)).astype("float32"),
        "pred_masks": rng.normal(0, 3, (2, 6, 16, 16)).astype("float32"),
        "semantic_seg": rng.normal(0, 3, (2, 16, 16, 1)).astype("float32"),
    }
    sizes = [(30, 45), (64, 20)]
    ours = post_process_instances(outputs, sizes, threshold=0.3)
    expected = _reference_post_process(outputs, sizes, threshold=0.3)
    for o, e in zip(ours, expected):
        assert len(o["scores"]) > 0
        np.testing.assert_allclose(o["scores"], e["scores"].numpy(), rtol=1e-6)
        np.testing.assert_allclose(o["boxes"], e["boxes"].numpy(), rtol=1e-5)
        assert o["masks"].shape == tuple(e["masks"].shape)
        # Resize weights in float32 vs torch's: allow a pixel on a threshold edge.
        assert np.mean(o["masks"] != e["masks"].numpy()) < 1e-3
        assert o["semantic_mask"].shape == o["masks"].shape[1:]


def test_size_count_mismatch_is_an_error():
    outputs = {"pred_logits": np.zeros((2, 3)), "presence_logits": np.zeros((2, 1))}
    with pytest.raises(ValueError, match="2 predictions but 1 sizes"):
        post_process_instances(outputs, [(4, 4)])


def _meta_greedy_nms(ious, scores, iou_threshold):
    """facebookresearch/sam3 `generic_nms_cpu`'s procedure, written out:
    highest score first (its `argsort()[::-1]`), drop the rest whose IoU
    with it is above the threshold, repeat; the kept indices in visiting
    order. numpy's default sort orders equal scores as its algorithm
    happens to (on AVX-512 CPUs a SIMD quicksort, not stable), so ties
    follow the stable form of that order: the later index first."""
    order = scores.argsort(kind="stable")[::-1]
    kept = []
    while order.size:
        i = order[0]
        kept.append(i)
        order = order[1:][ious[i, order[1:]] <= iou_threshold]
    return kept


def test_mask_nms_by_hand():
    from keras_sam3.ops.masks import mask_iou
    from keras_sam3.ops.masks import mask_nms

    masks = np.zeros((4, 8, 8), bool)
    masks[0, :4, :4] = True  # 16 pixels
    masks[1, :4, :4] = True
    masks[1, 4, 0] = True  # 17 pixels: IoU with 0 is 16 / 17
    masks[2, 4:, 4:] = True  # disjoint from both
    masks[3, :4, :2] = True  # inside 0: IoU 8 / 16 = 0.5 with 0, 8 / 17 with 1
    iou = mask_iou(masks, masks)
    np.testing.assert_allclose(iou[0, 1], 16 / 17)
    np.testing.assert_allclose(iou[0, 3], 0.5)
    np.testing.assert_allclose(iou[0, 2], 0.0)
    # Instance 1 scores highest: 0 is its duplicate and goes; 3 overlaps 1 by
    # 8 / 17 <= 0.5 and stays; 2 overlaps nothing.
    scores = np.array([0.8, 0.9, 0.7, 0.6])
    np.testing.assert_array_equal(mask_nms(scores, masks, 0.5), [False, True, True, True])
    # At 0.4, 3 is suppressed by 1 (8 / 17 > 0.4).
    np.testing.assert_array_equal(mask_nms(scores, masks, 0.4), [False, True, True, False])
    # Equal scores: the later index is visited first, as in Meta's procedure.
    np.testing.assert_array_equal(mask_nms(np.array([0.9, 0.9]), masks[:2], 0.5), [False, True])
    # IoU is never above 1: nothing is suppressed.
    assert mask_nms(scores, masks, 1.0).all()
    # Empty masks have IoU 0 with everything, themselves included.
    empty = np.zeros((2, 8, 8), bool)
    assert mask_nms(np.array([0.5, 0.9]), empty, 0.0).all()
    assert mask_nms(np.zeros(0), np.zeros((0, 8, 8), bool), 0.5).shape == (0,)


def test_mask_nms_equals_metas_procedure_on_random_masks():
    from keras_sam3.ops.masks import mask_iou
    from keras_sam3.ops.masks import mask_nms

    rng = np.random.default_rng(3)
    for trial in range(20):
        count = rng.integers(1, 12)
        # Boxes of random extent: overlaps of every degree.
        masks = np.zeros((count, 24, 24), bool)
        for k in range(count):
            y, x = rng.integers(0, 16, 2)
            h, w = rng.integers(2, 10, 2)
            masks[k, y : y + h, x : x + w] = True
        # Distinct scores, or ties (as where logits reach the decoder's clamp).
        scores = rng.permutation(count) / count + 0.01 if trial % 2 else rng.integers(0, 3, count) / 3.0
        threshold = float(rng.choice([0.0, 0.2, 0.5, 0.7]))
        keep = mask_nms(scores, masks, threshold)
        expected = _meta_greedy_nms(mask_iou(masks, masks), scores, threshold)
        assert sorted(np.flatnonzero(keep).tolist()) == sorted(int(i) for i in expected), trial


def test_post_processing_with_nms_drops_duplicates_only():
    rng = np.random.default_rng(4)
    mask_logits = np.full((1, 4, 16, 16), -8.0, "float32")
    mask_logits[0, 0, :8, :8] = 8.0
    mask_logits[0, 1, :8, :8] = 8.0  # a duplicate of query 0, lower score
    mask_logits[0, 1, 8, :2] = 8.0
    mask_logits[0, 2, 8:, 8:] = 8.0
    mask_logits[0, 3, :8, :8] = 8.0  # a duplicate, but below the score threshold
    outputs = {
        "pred_logits": np.array([[3.0, 2.0, 1.0, -5.0]], "float32"),
        "presence_logits": np.array([[6.0]], "float32"),
        "pred_boxes": rng.uniform(0, 1, (1, 4, 4)).astype("float32"),
        "pred_masks": mask_logits,
    }
    plain = post_process_instances(outputs, [(32, 40)], threshold=0.5)[0]
    np.testing.assert_array_equal(plain["indices"], [0, 1, 2])
    suppressed = post_process_instances(outputs, [(32, 40)], threshold=0.5, nms_threshold=0.5)[0]
    np.testing.assert_array_equal(suppressed["indices"], [0, 2])
    for key in ("scores", "boxes", "masks"):
        np.testing.assert_array_equal(suppressed[key], plain[key][[0, 2]])
    unchanged = post_process_instances(outputs, [(32, 40)], threshold=0.5, nms_threshold=1.0)[0]
    for key in ("indices", "scores", "boxes", "masks"):
        np.testing.assert_array_equal(unchanged[key], plain[key])


@pytest.mark.parametrize("value", [-0.1, 1.5, float("nan"), "0.5", True])
def test_nms_threshold_outside_zero_one_is_an_error(value):
    outputs = {"pred_logits": np.zeros((1, 3)), "presence_logits": np.zeros((1, 1))}
    with pytest.raises(ValueError, match="nms_threshold must"):
        post_process_instances(outputs, [(4, 4)], nms_threshold=value)

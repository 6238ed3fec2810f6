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

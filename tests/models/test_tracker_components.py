import keras
import numpy as np
import pytest

from keras_sam3.models.tracker_mask_decoder import SAM3TrackerMaskDecoder
from keras_sam3.models.tracker_prompt_encoder import SAM3TrackerPromptEncoder


def test_prompt_encoder_shapes_and_config():
    encoder = SAM3TrackerPromptEncoder(hidden_dim=16, image_size=112, patch_size=14)
    points = np.array([[[[10.0, 20.0]]]], "float32")
    sparse, dense = encoder(points=points, labels=np.array([[[1]]], "int32"))
    assert sparse.shape == (1, 1, 2, 16)  # the point and SAM's pad point
    assert dense.shape == (1, 8, 8, 16)
    sparse, _ = encoder(points=points, labels=np.array([[[1]]], "int32"), boxes=np.array([[[1, 2, 30, 40]]], "float32"))
    assert sparse.shape == (1, 1, 4, 16)  # no pad point when a box is given
    assert encoder.image_positional_embeddings().shape == (1, 8, 8, 16)
    assert not encoder.trainable_weights[0].path.endswith("positional_embedding")
    assert [w.path.split("/")[-1] for w in encoder.non_trainable_weights] == [
        "shared_embedding_positional_embedding"
    ]
    clone = SAM3TrackerPromptEncoder.from_config(encoder.get_config())
    assert clone.get_config() == encoder.get_config()
    with pytest.raises(ValueError, match="need labels"):
        encoder(points=points)


@pytest.mark.parametrize("multimask, count", [(True, 3), (False, 1)])
def test_mask_decoder_shapes(multimask, count):
    decoder = SAM3TrackerMaskDecoder(hidden_dim=16, mlp_dim=32, num_heads=2, iou_head_hidden_dim=16)
    rng = np.random.default_rng(0)
    image = rng.normal(size=(2, 8, 8, 16)).astype("float32")
    s0, s1 = decoder.project_high_resolution(
        rng.normal(size=(2, 32, 32, 16)).astype("float32"), rng.normal(size=(2, 16, 16, 16)).astype("float32")
    )
    out = decoder(image, image[:1], rng.normal(size=(2, 3, 4, 16)).astype("float32"), image, [s0, s1], multimask_output=multimask)
    assert out["masks"].shape == (2, 3, count, 32, 32)
    assert out["iou_scores"].shape == (2, 3, count)
    assert out["object_score_logits"].shape == (2, 3, 1)
    iou = keras.ops.convert_to_numpy(out["iou_scores"])
    assert np.all((iou >= 0) & (iou <= 1))
    assert SAM3TrackerMaskDecoder.from_config(decoder.get_config()).get_config() == decoder.get_config()


def test_a_built_tracker_comes_back_from_its_config():
    """Every converted tracker is built; its components then come back built
    from their configs, and the tracker must not build them again."""
    from keras_sam3 import SAM3Tracker
    from keras_sam3 import SAM3VisionEncoder

    vision = SAM3VisionEncoder(hidden_dim=32, intermediate_dim=64, num_layers=2, num_heads=2, pretrain_image_size=56,
                               window_size=4, global_attn_indexes=(1,), fpn_hidden_dim=16, scale_factors=(4.0, 2.0, 1.0))
    tracker = SAM3Tracker(
        vision,
        SAM3TrackerPromptEncoder(hidden_dim=16, image_size=112),
        SAM3TrackerMaskDecoder(hidden_dim=16, num_layers=1, num_heads=2, mlp_dim=32, iou_head_hidden_dim=16),
    )
    images = np.random.default_rng(0).uniform(-1, 1, (1, 112, 112, 3)).astype("float32")
    points = np.full((1, 1, 1, 2), 50.0, "float32")
    expected = keras.ops.convert_to_numpy(tracker(images, points=points)["masks"])
    restored = SAM3Tracker.from_config(tracker.get_config())
    restored(images, points=points)  # raised "cannot add new elements of state" before
    restored.set_weights(tracker.get_weights())
    np.testing.assert_allclose(keras.ops.convert_to_numpy(restored(images, points=points)["masks"]), expected, atol=1e-6)

import keras
import numpy as np
import pytest

from keras_sam3 import SAM3Backbone
from tests.models.tiny import tiny_backbone
from tests.models.tiny import tiny_inputs
from tests.models.tiny import unbuilt_layers

EXPECTED_SHAPES = {
    "pred_logits": (2, 5),
    "pred_boxes": (2, 5, 4),
    "pred_masks": (2, 5, 32, 32),
    "presence_logits": (2, 1),
    "semantic_seg": (2, 32, 32, 1),
    "all_pred_logits": (2, 2, 5),
    "all_pred_boxes": (2, 2, 5, 4),
    "all_presence_logits": (2, 2, 1),
    "reference_boxes": (2, 2, 5, 4),
}


def test_output_shapes_and_ranges():
    out = tiny_backbone().predict_on_batch(tiny_inputs())
    assert {k: tuple(v.shape) for k, v in out.items()} == EXPECTED_SHAPES
    assert np.all(np.abs(out["pred_logits"]) <= 12.0)
    assert np.all(np.abs(out["presence_logits"]) <= 10.0)
    np.testing.assert_allclose(out["all_pred_logits"][:, -1], out["pred_logits"])
    # The first layer's input boxes are sigmoid(reference_points): in (0, 1).
    assert np.all((out["reference_boxes"] > 0) & (out["reference_boxes"] < 1))


@pytest.mark.parametrize("num_boxes", [0, 3])
def test_any_number_of_boxes(num_boxes):
    out = tiny_backbone().predict_on_batch(tiny_inputs(num_boxes=num_boxes))
    assert out["pred_masks"].shape == (2, 5, 32, 32)
    assert np.all(np.isfinite(out["pred_masks"]))


def test_padding_boxes_change_nothing():
    model = tiny_backbone()
    inputs = tiny_inputs(batch=1, num_boxes=1)
    inputs["box_labels"][:] = 1
    padded = dict(inputs)
    padded["boxes"] = np.concatenate([inputs["boxes"], np.full((1, 2, 4), -10.0, "float32")], 1)
    padded["box_labels"] = np.concatenate([inputs["box_labels"], np.full((1, 2), -10, "int32")], 1)
    a, b = model.predict_on_batch(inputs), model.predict_on_batch(padded)
    for name in ("pred_logits", "pred_boxes", "pred_masks"):
        np.testing.assert_allclose(a[name], b[name], atol=1e-5, err_msg=name)


def test_every_layer_is_built_once_constructed():
    # An unbuilt layer makes Keras' JAX predict_on_batch run the whole model
    # eagerly once before compiling it: slower, and at 336 px it left
    # 0.86 GB resident (the weightless position encoding was the one).
    model = tiny_backbone()
    assert unbuilt_layers(model) == []


def test_trailing_text_padding_changes_nothing():
    # The text encoder is causal and every reader of its features masks
    # padded tokens: cutting the padding (`trim_prompt_padding`), whatever
    # ids it held, leaves every output as it was.
    model = tiny_backbone()
    inputs = tiny_inputs(batch=2, num_boxes=1)  # 7 real tokens of 32
    inputs["padding_mask"][1, 4:] = 0  # rows of different lengths
    short = dict(inputs, token_ids=inputs["token_ids"][:, :8], padding_mask=inputs["padding_mask"][:, :8])
    a, b = model.predict_on_batch(inputs), model.predict_on_batch(short)
    for name in EXPECTED_SHAPES:
        scale = max(1.0, float(np.abs(a[name]).max()))
        np.testing.assert_allclose(b[name], a[name], rtol=0, atol=1e-5 * scale, err_msg=name)
    # And the padding is read nowhere else: other ids there change nothing.
    other = dict(inputs, token_ids=np.where(inputs["padding_mask"] == 1, inputs["token_ids"], 3))
    c = model.predict_on_batch(other)
    np.testing.assert_allclose(c["pred_masks"], a["pred_masks"], rtol=0, atol=1e-5)
    np.testing.assert_allclose(c["pred_logits"], a["pred_logits"], rtol=0, atol=1e-5)


def test_too_many_text_tokens_is_an_error():
    model = tiny_backbone()
    inputs = tiny_inputs(batch=1, num_boxes=0)
    inputs["token_ids"] = np.concatenate([inputs["token_ids"], inputs["token_ids"][:, :1]], 1)
    inputs["padding_mask"] = np.concatenate([inputs["padding_mask"], inputs["padding_mask"][:, :1]], 1)
    with pytest.raises(ValueError, match="33 tokens"):
        model.predict_on_batch(inputs)


def test_config_round_trip_and_weights(tmp_path):
    model = tiny_backbone(cls_without_boxes=False)
    inputs = tiny_inputs()
    expected = model.predict_on_batch(inputs)
    clone = SAM3Backbone.from_config(model.get_config())
    assert clone.geometry_encoder.cls_without_boxes is False
    path = str(tmp_path / "tiny.weights.h5")
    model.save_weights(path)
    clone.load_weights(path)
    got = clone.predict_on_batch(inputs)
    for name in expected:
        np.testing.assert_array_equal(got[name], expected[name], err_msg=name)


def test_saved_model_file_round_trip(tmp_path):
    model = tiny_backbone()
    inputs = tiny_inputs()
    path = str(tmp_path / "tiny.keras")
    model.save(path)
    restored = keras.models.load_model(path)
    assert isinstance(restored, SAM3Backbone)
    np.testing.assert_array_equal(
        restored.predict_on_batch(inputs)["pred_masks"], model.predict_on_batch(inputs)["pred_masks"]
    )


@pytest.mark.parametrize("dtype", ["bfloat16", "mixed_bfloat16"])
def test_runs_in_bfloat16(dtype):
    out = tiny_backbone(dtype=dtype).predict_on_batch(tiny_inputs())
    for name, value in out.items():
        assert np.all(np.isfinite(np.asarray(value, "float32"))), name


@pytest.mark.parametrize("masks", [True, False])
def test_one_to_many_model_adds_metas_dac_queries_and_leaves_the_rest(masks):
    """`one_to_many_model()`: the backbone's outputs unchanged, plus the
    one-to-many queries' logits and boxes per layer (and masks), which are
    the decoder's `self_attention=False` pass scored and masked alike."""
    from keras_sam3.models.backbone import box_cxcywh_to_xyxy

    backbone = tiny_backbone()
    inputs = tiny_inputs(num_boxes=2)
    plain = backbone.predict_on_batch(inputs)
    model = backbone.one_to_many_model(masks=masks)
    assert len(model.weights) == len(backbone.weights)
    out = model.predict_on_batch(inputs)
    o2m = {"all_pred_logits_o2m": (2, 2, 5), "all_pred_boxes_o2m": (2, 2, 5, 4)}
    if masks:
        o2m["pred_masks_o2m"] = (2, 5, 32, 32)
    assert {k: tuple(v.shape) for k, v in out.items()} == {**EXPECTED_SHAPES, **o2m}
    for key, value in plain.items():
        np.testing.assert_allclose(out[key], value, atol=1e-5, err_msg=key)
    # The one-to-many boxes are the decoder's pass without self-attention,
    # on the inputs the backbone's graph gives the decoder.
    decoder_inputs = keras.Model(
        backbone.input,
        [node.input_tensors for node in backbone.detr_decoder._inbound_nodes][0],
    ).predict_on_batch(inputs)
    many = backbone.detr_decoder(*decoder_inputs, self_attention=False)
    np.testing.assert_allclose(
        out["all_pred_boxes_o2m"], keras.ops.convert_to_numpy(box_cxcywh_to_xyxy(many["boxes"])), atol=1e-5
    )
    assert np.abs(out["all_pred_logits_o2m"] - out["all_pred_logits"]).max() > 1e-3


def test_fewer_images_than_prompts_encodes_each_image_once_for_its_prompts():
    """Images `(N, ...)` with `N * K` prompts: prompts `K i .. K i + K - 1`
    read image `i`, with the outputs of each prompt beside its own copy."""
    backbone = tiny_backbone()
    inputs = tiny_inputs(batch=4, num_boxes=2, seed=3)
    inputs["images"] = inputs["images"][[0, 0, 1, 1]]
    inputs["padding_mask"][1, 3:] = 0  # another prompt on the same image
    full = backbone.predict_on_batch(inputs)
    shared = backbone.predict_on_batch({**inputs, "images": inputs["images"][::2]})
    assert {k: tuple(v.shape) for k, v in shared.items()} == {k: tuple(v.shape) for k, v in full.items()}
    for key, value in full.items():
        np.testing.assert_allclose(shared[key], value, atol=1e-5, err_msg=key)
    assert np.abs(full["pred_logits"][0] - full["pred_logits"][1]).max() > 1e-3  # the prompts differ
    # Traced with an unknown batch size (TensorFlow), the check runs in the graph.
    with pytest.raises(Exception, match="each image needs the same number of prompts"):
        backbone.predict_on_batch({k: v[:3] for k, v in inputs.items()} | {"images": inputs["images"][:2]})

import numpy as np
import pytest

from keras_sam3.models.backbone import ENCODED_TOKENS
from keras_sam3.models.segmenter import SAM3PromptableConceptImageSegmenter
from tests.models.tiny import tiny_segmenter
from tests.models.tiny import unbuilt_layers


@pytest.fixture(scope="module")
def segmenter():
    return tiny_segmenter()


def _images():
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (60, 90, 3)).astype("uint8"), rng.integers(0, 256, (40, 40, 3)).astype("uint8")]


def test_predict_on_raw_inputs_has_keras_hub_outputs(segmenter):
    out = segmenter.predict(
        {
            "images": _images(),
            "prompts": ["red circle", "blue square"],
            "boxes": [[[10, 10, 50, 40]], []],
            "box_labels": [[1], []],
        },
        verbose=0,
    )
    assert out["scores"].shape == (2, 5)
    assert out["boxes"].shape == (2, 5, 4)
    assert out["masks"].shape == (2, 5, 32, 32)
    assert np.all((out["scores"] >= 0) & (out["scores"] <= 1))
    assert np.all((out["masks"] >= 0) & (out["masks"] <= 1))


def test_segment_returns_instances_at_the_original_size(segmenter):
    results = segmenter.segment(_images(), prompts=["a", "b"], threshold=0.0)
    assert len(results) == 2
    first, second = results
    assert first["masks"].shape == (5, 60, 90) and first["masks"].dtype == bool
    assert second["masks"].shape == (5, 40, 40)
    assert first["semantic_mask"].shape == (60, 90)
    assert first["boxes"].shape == (5, 4)
    # No instance passes a threshold of 1.
    assert len(segmenter.segment(_images(), prompts="a", threshold=1.0)[0]["scores"]) == 0


def test_one_encoding_many_prompts_equals_one_prompt_at_a_time(segmenter):
    image = _images()[0]
    prompts = ["red circle", "dog", "the large blue square"]
    boxes = [[[5, 5, 40, 30]], [], [[10, 20, 80, 50], [0, 0, 20, 20]]]
    labels = [[1], [], [1, 0]]
    encoding = segmenter.encode(image)
    together = segmenter.segment_encoded(encoding, prompts, boxes, labels, threshold=0.0)
    assert len(together) == 3
    for prompt, box, label, result in zip(prompts, boxes, labels, together):
        alone = segmenter.segment(image, prompts=[prompt], boxes=[box], box_labels=[label], threshold=0.0)[0]
        np.testing.assert_allclose(result["scores"], alone["scores"], atol=1e-5)
        np.testing.assert_allclose(result["boxes"], alone["boxes"], atol=1e-3)
        assert np.mean(result["masks"] != alone["masks"]) < 1e-3


def test_nms_threshold_drops_overlapping_instances_of_a_prompt(segmenter):
    image = _images()[0]
    plain = segmenter.segment(image, prompts="dog", threshold=0.0)[0]
    kept = segmenter.segment(image, prompts="dog", threshold=0.0, nms_threshold=0.3)[0]
    # The random tiny model's masks overlap: some instances go, the rest are
    # the same instances as without suppression.
    assert 0 < len(kept["indices"]) < len(plain["indices"])
    rows = np.searchsorted(plain["indices"], kept["indices"])
    np.testing.assert_array_equal(plain["indices"][rows], kept["indices"])
    for key in ("scores", "boxes", "masks"):
        np.testing.assert_array_equal(kept[key], plain[key][rows])
    assert kept["scores"].max() == plain["scores"].max()  # the best one stays
    encoded = segmenter.segment_encoded(segmenter.encode(image), ["dog"], threshold=0.0, nms_threshold=0.3)[0]
    np.testing.assert_array_equal(encoded["indices"], kept["indices"])
    for bad in (1.5, -1, "0.5"):
        with pytest.raises(ValueError, match="nms_threshold must"):
            segmenter.segment(image, prompts="dog", nms_threshold=bad)
        with pytest.raises(ValueError, match="nms_threshold must"):
            segmenter.segment_encoded(None, ["dog"], nms_threshold=bad)


def test_short_prompts_reach_the_model_without_trailing_padding(segmenter, monkeypatch):
    # The toy tokenizer spells bytes: "dog" is 5 tokens (8 columns reach
    # the model), "the large blue square" 23 (all 32).
    encoding = segmenter.encode(_images()[0])  # builds the prompt model
    seen = []
    for model in (segmenter._prompt_model, segmenter.backbone):
        call = model.predict_on_batch
        spy = lambda x, call=call: seen.append(x["token_ids"].shape) or call(x)  # noqa: E731
        monkeypatch.setattr(model, "predict_on_batch", spy)
    segmenter.segment_encoded(encoding, ["dog", "cat"])
    segmenter.segment_encoded(encoding, ["dog", "the large blue square"])
    segmenter.segment(_images()[0], prompts="dog")
    assert seen == [(2, 8), (2, 32), (1, 8)]


def test_split_models_have_every_layer_built(segmenter):
    segmenter.encode(_images()[0])
    for model in (segmenter._image_model, segmenter._prompt_model, segmenter._inference()):
        assert unbuilt_layers(model) == []


def test_encoding_carries_the_detr_encoders_first_self_attention(segmenter):
    # It reads no prompt, so encode() runs it once per image; the prompt
    # model starts the DETR encoder from it instead of recomputing it.
    image = _images()[0]
    encoding = segmenter.encode(image)
    assert encoding.features[ENCODED_TOKENS].shape == (1, 8 * 8, 16)
    reference = segmenter.segment_encoded(encoding, ["dog"], threshold=0.0)[0]
    encoding.features[ENCODED_TOKENS] = np.zeros_like(encoding.features[ENCODED_TOKENS])
    changed = segmenter.segment_encoded(encoding, ["dog"], threshold=0.0)[0]
    assert np.max(np.abs(changed["scores"] - reference["scores"])) > 1e-4


def test_prompt_model_outputs_equal_the_full_forward(segmenter):
    # The encode-once path (the DETR encoder's first self-attention in
    # encode()) gives the full forward's raw logits, not only its masks.
    inputs, _ = segmenter.preprocessor(_images()[:1], ["the large blue square"], [[[10, 20, 80, 50]]], [[1]])
    full = segmenter.backbone.predict_on_batch(inputs)
    encoding = segmenter.encode(_images()[0])
    split = segmenter._prompt_model.predict_on_batch(
        {**encoding.features, **{k: v for k, v in inputs.items() if k != "images"}}
    )
    for key in ("pred_logits", "pred_boxes", "pred_masks", "presence_logits", "semantic_seg"):
        expected = np.asarray(full[key])
        scale = max(1.0, float(np.abs(expected).max()))
        np.testing.assert_allclose(np.asarray(split[key]), expected, rtol=0, atol=1e-5 * scale, err_msg=key)


def test_neither_text_nor_boxes_is_an_error(segmenter):
    with pytest.raises(ValueError, match="got neither"):
        segmenter.predict({"images": _images()[0]}, verbose=0)
    with pytest.raises(ValueError, match="Unknown input keys"):
        segmenter.predict({"images": _images()[0], "prompt": "a"}, verbose=0)


def test_every_image_and_every_concept_needs_a_prompt(segmenter):
    """One image (or concept) without text or boxes is an error on both paths,
    not a silent "visual" prompt."""
    images = _images()
    with pytest.raises(ValueError, match=r"Images \[1\] have neither a text prompt nor boxes"):
        segmenter.segment(images, boxes=[[[20, 30, 50, 60]], []])
    encoding = segmenter.encode(images[0])
    with pytest.raises(ValueError, match="got neither"):
        segmenter.segment_encoded(encoding, boxes=[[]])
    with pytest.raises(ValueError, match="got neither"):
        segmenter.segment_encoded(encoding)
    with pytest.raises(ValueError, match=r"Concepts \[0\] have neither"):
        segmenter.segment_encoded(encoding, [None, "dog"], boxes=[[], [[5, 5, 40, 30]]])
    with pytest.raises(ValueError, match="Got 2 concepts but 1 box lists; give one per concept"):
        segmenter.segment_encoded(encoding, ["dog", "cat"], boxes=[[[5, 5, 40, 30]]])
    with pytest.raises(ValueError, match="Got box_labels but no boxes"):
        segmenter.segment_encoded(encoding, ["dog"], box_labels=[[0]])


def test_boxes_as_arrays_and_none_prompts_for_box_only_concepts(segmenter):
    """NumPy box arrays work on both paths; a `None` prompt next to boxes is
    the reference's "visual" prompt, as `prompts=None` is."""
    image = _images()[0]
    box = [20.0, 30.0, 50.0, 55.0]
    encoding = segmenter.encode(image)
    from_array = segmenter.segment_encoded(encoding, boxes=np.array([[box]]), threshold=0.0)[0]
    from_list = segmenter.segment(image, boxes=[[box]], threshold=0.0)[0]
    np.testing.assert_allclose(from_array["scores"], from_list["scores"], atol=1e-5)
    mixed = segmenter.segment_encoded(encoding, ["dog", None], boxes=[[], [box]], threshold=0.0)
    dog = segmenter.segment(image, prompts="dog", threshold=0.0)[0]
    visual = segmenter.segment(image, prompts="visual", boxes=[[box]], threshold=0.0)[0]
    np.testing.assert_allclose(mixed[0]["scores"], dog["scores"], atol=1e-5)
    np.testing.assert_allclose(mixed[1]["scores"], visual["scores"], atol=1e-5)


def test_a_failed_predict_leaves_the_model_usable(segmenter):
    """Keras' JAX `predict` empties the variables while it runs and left
    them empty when a step raised: every later call failed."""
    image = _images()[0]
    x, _ = segmenter.preprocessor(image[None], ["a"])
    before = segmenter.predict(x, verbose=0)["scores"]
    bad = {**x, "boxes": np.zeros((1, 2, 3), "float32")}  # wrong shape
    with pytest.raises(Exception):
        segmenter.predict(bad, verbose=0)
    np.testing.assert_array_equal(segmenter.predict(x, verbose=0)["scores"], before)
    assert len(segmenter.segment(image, prompts="a", threshold=0.0)[0]["scores"]) == 5


def test_a_dataset_of_raw_inputs_is_named_as_such(segmenter):
    tf = pytest.importorskip("tensorflow")
    raw = tf.data.Dataset.from_tensor_slices({"images": np.zeros((2, 8, 8, 3), "uint8"), "prompts": ["a", "b"]})
    with pytest.raises(ValueError, match="datasets and generators carry model-ready batches"):
        segmenter.predict(raw.batch(2), verbose=0)
    targets = {"boxes": np.zeros((2, 1, 4), "float32"), "valid": np.zeros((2, 1), "float32")}
    pairs = tf.data.Dataset.zip((raw, tf.data.Dataset.from_tensor_slices(targets))).batch(2)
    for method in (segmenter.fit, segmenter.evaluate):
        with pytest.raises(ValueError, match="Give model-ready inputs"):
            method(pairs, verbose=0)


def test_quantize_is_refused_with_a_reason(segmenter):
    for model in (segmenter, segmenter.backbone):
        with pytest.raises(NotImplementedError, match="quantization is not supported"):
            model.quantize("int8")


def test_a_keras_file_keeps_the_preprocessor(segmenter, tmp_path):
    import keras

    path = str(tmp_path / "segmenter.keras")
    segmenter.save(path)
    restored = keras.saving.load_model(path)
    assert restored.preprocessor is not None
    assert restored.preprocessor.tokenizer.vocabulary == segmenter.preprocessor.tokenizer.vocabulary
    assert restored.preprocessor.image_converter.image_size == segmenter.preprocessor.image_converter.image_size
    image = _images()[0]
    a = segmenter.segment(image, prompts="red circle", threshold=0.0)[0]
    b = restored.segment(image, prompts="red circle", threshold=0.0)[0]
    np.testing.assert_allclose(a["scores"], b["scores"], atol=1e-6)
    # Without a preprocessor there is nothing to keep.
    bare = SAM3PromptableConceptImageSegmenter(segmenter.backbone)
    bare.save(str(tmp_path / "bare.keras"))
    assert keras.saving.load_model(str(tmp_path / "bare.keras")).preprocessor is None


def test_summary_names_the_preprocessor(segmenter):
    lines = []
    segmenter.summary(print_fn=lambda line, *args, **kwargs: lines.append(line))
    text = "\n".join(lines)
    assert "sam3_promptable_concept_image_segmenter_preprocessor" in text
    assert "Total params" in text


def test_preset_round_trip(segmenter, tmp_path):
    segmenter.save_to_preset(str(tmp_path / "preset"))
    restored = SAM3PromptableConceptImageSegmenter.from_preset(str(tmp_path / "preset"))
    a = segmenter.segment(_images(), prompts=["a", "b"], threshold=0.0)
    b = restored.segment(_images(), prompts=["a", "b"], threshold=0.0)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x["scores"], y["scores"])
        np.testing.assert_array_equal(x["masks"], y["masks"])


def test_tokenizer_larger_than_the_embedding_is_an_error():
    from keras_sam3.models.image_converter import SAM3ImageConverter
    from keras_sam3.models.preprocessor import SAM3PromptableConceptImageSegmenterPreprocessor
    from tests.models.tiny import tiny_backbone
    from tests.models.tiny import toy_tokenizer

    preprocessor = SAM3PromptableConceptImageSegmenterPreprocessor(toy_tokenizer(), SAM3ImageConverter(112))
    with pytest.raises(ValueError, match="tokenizer has 514 ids but the text encoder embeds 100"):
        SAM3PromptableConceptImageSegmenter(backbone=tiny_backbone(), preprocessor=preprocessor)


@pytest.mark.parametrize("dtype", ["bfloat16", "mixed_bfloat16"])
def test_segmenter_runs_in_bfloat16(dtype):
    segmenter = tiny_segmenter(dtype=dtype)
    out = segmenter.predict({"images": _images(), "prompts": ["a", "b"]}, verbose=0)
    assert np.all(np.isfinite(np.asarray(out["scores"], "float32")))
    result = segmenter.segment(_images()[0], prompts="a", threshold=0.0)[0]
    assert result["masks"].shape == (5, 60, 90)

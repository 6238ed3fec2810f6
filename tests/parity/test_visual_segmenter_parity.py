"""The tracker task on raw images: original-pixel prompts, masks at the original size.

The tracker's weights are sharpened (`sharpen_tracker_checkpoint`) so that a
wrong prompt (x and y swapped, a label flipped) fails the tolerance.
"""

import numpy as np
import pytest

from keras_sam3.models.visual_segmenter import SAM3PromptableVisualImageSegmenter
from tests.parity import reference as ref_lib
from tests.parity.reference import torch
from tests.parity.reference import transformers


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    directory = ref_lib.make_reference_video_checkpoint(tmp_path_factory.mktemp("sam3_video"), seed=8)
    ref_lib.sharpen_tracker_checkpoint(directory)
    reference, info = transformers.Sam3TrackerModel.from_pretrained(directory, output_loading_info=True)
    assert not info["missing_keys"]
    ours = SAM3PromptableVisualImageSegmenter.from_checkpoint(directory, add_no_memory_embedding=False)
    return reference.eval(), ours


def _image():
    return np.random.default_rng(0).integers(0, 256, (60, 90, 3)).astype("uint8")


def _reference_logits(reference, pixels, points, labels):
    with torch.no_grad():
        expected = reference(
            pixel_values=torch.from_numpy(np.ascontiguousarray(pixels.transpose(0, 3, 1, 2))),
            input_points=torch.from_numpy(np.asarray(points, "float32")),
            input_labels=torch.tensor(labels),
        )
    return expected.pred_masks[0, 0].detach().numpy(), expected.iou_scores[0, 0].detach().numpy()


# The reference processor's scaling of (45, 20), (10, 50) on 90 x 60: x * 112 / 90, y * 112 / 60.
CLICKS = [[[[45 * 112 / 90, 20 * 112 / 60], [10 * 112 / 90, 50 * 112 / 60]]]]


def test_click_matches_the_reference_at_the_original_size(pair):
    reference, ours = pair
    image = _image()
    result = ours.segment(image, points=[(45, 20), (10, 50)], labels=[1, 0])
    pixels, _ = ours.image_converter(image)
    logits, iou_scores = _reference_logits(reference, pixels, CLICKS, [[[1, 0]]])
    ref_lib.assert_close(result["low_res_logits"], logits, 1e-4, "low_res_logits")
    ref_lib.assert_close(result["iou_scores"], iou_scores, 1e-4, "iou_scores")
    resized = torch.nn.functional.interpolate(
        torch.from_numpy(logits)[None], size=(60, 90), mode="bilinear", align_corners=False
    )[0].numpy()
    assert result["masks"].shape == (3, 60, 90)
    assert np.mean(result["masks"] != (resized > 0)) < 1e-3


def test_a_prompt_change_moves_the_reference_far_above_the_tolerance(pair):
    reference, ours = pair
    pixels, _ = ours.image_converter(_image())
    logits, _ = _reference_logits(reference, pixels, CLICKS, [[[1, 0]]])
    tolerance = 1e-4 * max(1.0, np.abs(logits).max())
    swapped, _ = _reference_logits(reference, pixels, np.asarray(CLICKS)[..., ::-1].copy(), [[[1, 0]]])
    flipped, _ = _reference_logits(reference, pixels, CLICKS, [[[0, 1]]])
    assert np.abs(swapped - logits).max() > 100 * tolerance
    assert np.abs(flipped - logits).max() > 100 * tolerance


def test_interactive_refinement_reuses_the_encoding(pair):
    _, ours = pair
    encoding = ours.encode(_image())
    first = ours.segment_encoded(encoding, points=[(45, 20)])
    best = int(np.argmax(first["iou_scores"]))
    refined = ours.segment_encoded(
        encoding, points=[(45, 20), (70, 40)], labels=[1, 0],
        mask_logits=first["low_res_logits"][best], multimask_output=False,
    )
    assert refined["masks"].shape == (1, 60, 90)
    # A single-mask round's whole `low_res_logits` (1, 4h, 4w) feeds back as is.
    again = ours.segment_encoded(
        encoding, points=[(45, 20)], mask_logits=refined["low_res_logits"], multimask_output=False
    )
    by_index = ours.segment_encoded(
        encoding, points=[(45, 20)], mask_logits=refined["low_res_logits"][0], multimask_output=False
    )
    np.testing.assert_array_equal(again["low_res_logits"], by_index["low_res_logits"])
    boxed = ours.segment_encoded(encoding, box=(10, 5, 80, 55))
    assert boxed["masks"].shape == (3, 60, 90) and isinstance(boxed["object_score_logit"], float)
    # Clicks on the image's edges and a box partly outside it are accepted as given.
    edges = ours.segment_encoded(encoding, points=[(0, 0), (90, 60)], box=(-10, 5, 100, 55))
    assert edges["masks"].shape == (3, 60, 90)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"points": [(1, 1)], "labels": [2]}, "one label, 1 or 0"),
        ({"points": [(1, 1), (2, 2)], "labels": [1]}, "one label, 1 or 0"),
        ({"labels": [1], "box": (10, 5, 80, 55)}, r"1 label\(s\) \[1\] for 0 point"),
        ({"points": [], "labels": [1, 0], "box": (10, 5, 80, 55)}, r"2 label\(s\) \[1, 0\] for 0 point"),
        ({"points": [(1, 1)], "mask_logits": np.zeros((3, 32, 32))}, r"\(32, 32\) or \(1, 32, 32\).*\(3, 32, 32\)"),
        ({"points": [(1, 1)], "mask_logits": np.zeros((16, 16))}, r"got shape \(16, 16\)"),
        ({"box": (10, 10, 5, 20)}, "x2 > x1"),
        ({"points": [(np.nan, 1)]}, "finite"),
        # The image is 90 wide, 60 high: (70, 40) is inside, (40, 70) is not.
        ({"points": [(70, 40), (40, 70)]}, r"Point\(s\) \[\[40.0, 70.0\]\] lie outside the 90 x 60"),
        ({"points": [(-1, 10)]}, "outside the 90 x 60"),
        ({"points": [(1, 2, 3, 4)]}, r"\(x, y\) pixel pairs; got an array of shape \(1, 4\)"),
        ({"box": (95, 5, 120, 50)}, "entirely outside the 90 x 60"),
        ({"box": (10, -30, 80, 0)}, "entirely outside"),
        ({"box": (10, 5, 80)}, "four pixel coordinates"),
    ],
)
def test_bad_prompts_are_named(pair, kwargs, message):
    _, ours = pair
    with pytest.raises(ValueError, match=message):
        ours.segment(_image(), **kwargs)


def test_one_vit_run_serves_concept_and_tracker_prompts(tmp_path, monkeypatch):
    from keras_sam3.models.segmenter import SAM3PromptableConceptImageSegmenter
    from tests.models.tiny import toy_tokenizer

    directory = ref_lib.make_reference_video_checkpoint(tmp_path / "ckpt", seed=10, text_vocab=514)
    toy_tokenizer().save_assets(str(directory))
    concept = SAM3PromptableConceptImageSegmenter.from_preset(str(directory))
    visual = SAM3PromptableVisualImageSegmenter.from_checkpoint(str(directory), concept_segmenter=concept)
    separate = SAM3PromptableVisualImageSegmenter.from_checkpoint(str(directory))
    vit = concept.backbone.vision_encoder.backbone
    assert visual.tracker.vision_encoder.backbone is vit  # one trunk, one copy of its weights

    calls = []
    original = type(vit).call
    monkeypatch.setattr(type(vit), "call", lambda self, *a, **k: calls.append(1) or original(self, *a, **k))
    image = _image()
    concept_encoding, tracker_encoding = visual.encode_both(concept, image)
    assert len(calls) == 1
    clicked = visual.segment_encoded(tracker_encoding, points=[(45, 20)])
    expected = separate.segment(image, points=[(45, 20)])
    np.testing.assert_allclose(clicked["low_res_logits"], expected["low_res_logits"], atol=1e-4)
    by_text = concept.segment_encoded(concept_encoding, ["a dog"], threshold=0.0)[0]
    alone = concept.segment(image, prompts="a dog", threshold=0.0)[0]
    np.testing.assert_allclose(by_text["scores"], alone["scores"], atol=1e-5)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--point", "5,5", "--box", "1,1,20,20:0", "--preset", "no_such_checkpoint"], "one positive --box"),
        (["--point", "5,5", "--preset", "sam3_shapes"], "need a Hugging Face SAM 3 checkpoint with the tracker"),
    ],
)
def test_click_command_line_names_what_it_cannot_do(argv, message, capsys, tmp_path):
    from keras_sam3 import cli

    with pytest.raises(SystemExit) as exit_info:
        cli.main(["image.png", "--default-allocator", "--output-dir", str(tmp_path / "out")] + argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err

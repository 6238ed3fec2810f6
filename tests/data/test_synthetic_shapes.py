"""The synthetic concept dataset: scenes, prompts, targets, streaming."""

import numpy as np
import pytest

from keras_sam3 import SAM3ImageConverter
from keras_sam3 import SAM3PromptableConceptImageSegmenterPreprocessor
from keras_sam3.data.synthetic_shapes import COLORS
from keras_sam3.data.synthetic_shapes import SHAPES
from keras_sam3.data.synthetic_shapes import WORDS
from keras_sam3.data.synthetic_shapes import ShapesGenerator
from keras_sam3.data.synthetic_shapes import SyntheticShapesDataset
from keras_sam3.data.synthetic_shapes import matches
from keras_sam3.data.synthetic_shapes import shapes_tokenizer


def test_every_word_is_one_token():
    tokenizer = shapes_tokenizer()
    for word in WORDS:
        assert len(tokenizer.tokenize(word)) == 1, word
    ids, mask = tokenizer(["large red circle"])
    assert mask.sum() == 5  # start, three words, end


def test_a_covered_corner_leaves_the_earlier_mask_and_box():
    """Scene 2 of the held-out stream (seed 2026): a large white square's
    corner reaches under a later blue circle by 3 pixels. They show the
    circle's colour, so they are the circle's alone, and the square's box
    follows its visible pixels."""
    from keras_sam3.data.synthetic_shapes import _shape_mask

    generator = ShapesGenerator(image_size=128, seed=2026)
    for _ in range(3):
        image, objects = generator.scene()
    square = next(o for o in objects if o["shape"] == "square")
    drawn = _shape_mask("square", square["cx"], square["cy"], square["r"], 128)
    covered = drawn & ~square["mask"]
    assert covered.sum() == 3
    later = [o for o in objects[objects.index(square) + 1 :] if (o["mask"] & covered).any()]
    assert len(later) == 1 and (later[0]["mask"] & covered).sum() == 3
    colour = np.asarray(COLORS[later[0]["color"]], "float32")
    assert np.all(np.abs(image[covered].astype("float32") - colour).max(axis=-1) < 60)
    generator = ShapesGenerator(image_size=128, seed=2026)
    for _ in range(2):
        generator.scene()
    sample = generator.sample()  # the same scene, with a prompt
    for box, mask in zip(sample["boxes"], sample["masks"]):
        ys, xs = np.nonzero(mask)
        np.testing.assert_array_equal(box, [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])


def test_targets_are_every_matching_instance_and_nothing_else():
    generator = ShapesGenerator(image_size=96, seed=1)
    negatives = 0
    for _ in range(200):
        image, objects = generator.scene()
        assert image.shape == (96, 96, 3) and image.dtype == np.uint8
        masks = [o["mask"] for o in objects]
        assert not np.any(np.sum(masks, axis=0) > 1)  # masks hold visible pixels only
        concept = generator.concept(objects)
        words = concept.values()
        assert concept["shape"] in SHAPES and all(w in WORDS for w in words)
        matching = [o for o in objects if all(o[k] == v for k, v in concept.items())]
        negatives += not matching
    assert 20 < negatives < 90  # about a quarter are absent concepts

    sample = ShapesGenerator(image_size=96, seed=2).sample()
    for box, mask in zip(sample["boxes"], sample["masks"]):
        ys, xs = np.nonzero(mask)
        np.testing.assert_array_equal(box, [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
        colour = next((COLORS[w] for w in sample["prompt"].split() if w in COLORS), None)
        if colour is not None:  # the instance is painted in the prompt's colour
            assert np.abs(sample["image"][mask].mean(0) - np.asarray(colour)).max() < 30


def test_batches_are_reproducible_and_model_ready():
    preprocessor = SAM3PromptableConceptImageSegmenterPreprocessor(shapes_tokenizer(), SAM3ImageConverter(64))
    data = SyntheticShapesDataset(preprocessor, batch_size=3, steps=5, seed=7, image_size=64, max_objects=3)
    assert len(data) == 5
    x, y = data[2]
    x2, y2 = data[2]
    for key in x:
        np.testing.assert_array_equal(x[key], x2[key])
    assert x["images"].shape == (3, 64, 64, 3) and x["token_ids"].shape == (3, 32)
    assert y["boxes"].shape == (3, 3, 4) and y["masks"].shape == (3, 3, 64, 64) and y["valid"].shape == (3, 3)
    assert np.all((y["boxes"] >= 0) & (y["boxes"] <= 1))
    # Padding rows are empty, valid rows are not.
    assert np.all(y["masks"].sum((2, 3))[y["valid"] == 0] == 0)
    assert np.all(y["masks"].sum((2, 3))[y["valid"] == 1] > 0)
    x3, _ = data[3]
    assert not np.array_equal(x["images"], x3["images"])


def test_pydataset_options_go_to_keras_and_unknown_ones_fail_at_once():
    preprocessor = SAM3PromptableConceptImageSegmenterPreprocessor(shapes_tokenizer(), SAM3ImageConverter(64))
    data = SyntheticShapesDataset(preprocessor, batch_size=2, steps=2, image_size=64, workers=2, max_queue_size=3)
    assert data.workers == 2 and data.max_queue_size == 3
    x, _ = data[0]
    assert x["images"].shape == (2, 64, 64, 3)
    with pytest.raises(TypeError, match="no_such_option"):
        SyntheticShapesDataset(preprocessor, image_size=64, no_such_option=1)


def test_hard_negatives_are_absent_near_misses():
    # (That the default stream is unchanged, tests/test_embedded_preset.py
    # shows: its held-out figures come from it.)
    generator = ShapesGenerator(image_size=64, negative_rate=1.0, hard_negative_rate=1.0, seed=4)
    near = 0
    for _ in range(100):
        image, objects = generator.scene()
        concept = generator.concept(objects)
        assert not any(matches(o, concept) for o in objects)  # absent
        # One attribute away from some present object.
        near += any(sum(o[k] != v for k, v in concept.items()) == 1 and len(concept) > 1 for o in objects)
    assert near >= 95  # the rest fall back to random absent concepts
    with pytest.raises(ValueError, match="hard_negative_rate"):
        ShapesGenerator(hard_negative_rate=1.5)


def test_distractors_repeat_an_earlier_shape_in_another_colour_or_size():
    generator = ShapesGenerator(image_size=96, distractor_rate=1.0, seed=5)
    later = colour = size = 0
    for _ in range(100):
        _, objects = generator.scene()
        for i, obj in enumerate(objects[1:], 1):
            earlier = objects[:i]
            # Same shape as an earlier object and one step from it: another
            # colour, or the same colour at the other size.
            assert any(
                o["shape"] == obj["shape"] and (o["color"] != obj["color"] or o["size"] != obj["size"]) for o in earlier
            )
            later += 1
            colour += any(o["shape"] == obj["shape"] and o["color"] != obj["color"] for o in earlier)
            size += any(o["shape"] == obj["shape"] and o["color"] == obj["color"] and o["size"] != obj["size"] for o in earlier)
    assert later > 100 and colour > 0.4 * later and size > 0.15 * later
    # Off by default, and then the stream is the held-out one, draw for draw.
    plain, off = ShapesGenerator(seed=3).sample(), ShapesGenerator(seed=3, distractor_rate=0.0).sample()
    np.testing.assert_array_equal(plain["image"], off["image"])
    assert plain["prompt"] == off["prompt"]
    with pytest.raises(ValueError, match="distractor_rate"):
        ShapesGenerator(distractor_rate=-0.1)


def test_colour_prompts_name_a_colour_alone_with_every_object_of_it():
    generator = ShapesGenerator(image_size=96, color_prompt_rate=1.0, seed=6)
    present = absent = 0
    for _ in range(60):
        sample = generator.sample()
        assert sample["prompt"] in COLORS
        wanted = [o for o in sample["objects"] if o["color"] == sample["prompt"]]
        # Every object of that colour, whatever its shape and size; none when absent.
        assert len(sample["boxes"]) == len(wanted)
        present += bool(wanted)
        absent += not wanted
    assert present > 30 and absent > 5
    # Off by default, and then the stream is the held-out one, draw for draw.
    plain, off = ShapesGenerator(seed=3).sample(), ShapesGenerator(seed=3, color_prompt_rate=0.0).sample()
    np.testing.assert_array_equal(plain["image"], off["image"])
    assert plain["prompt"] == off["prompt"]
    with pytest.raises(ValueError, match="color_prompt_rate"):
        ShapesGenerator(color_prompt_rate=2.0)


def test_several_prompts_on_one_scene_each_with_its_own_answer():
    generator = ShapesGenerator(image_size=64, seed=3, distractor_rate=0.5, color_prompt_rate=0.25)
    for _ in range(20):
        samples = generator.scene_samples(4)
        assert len(samples) == 4
        for s in samples[1:]:
            np.testing.assert_array_equal(s["image"], samples[0]["image"])
            assert s["objects"] == samples[0]["objects"]
        for s in samples:  # each answer is its own prompt's
            assert len(s["boxes"]) == sum(matches(o, s["concept"]) for o in s["objects"])
    with pytest.raises(ValueError, match="count"):
        generator.scene_samples(0)


def test_prompts_per_image_batches_consecutive_prompts_on_shared_scenes():
    preprocessor = SAM3PromptableConceptImageSegmenterPreprocessor(shapes_tokenizer(), SAM3ImageConverter(64))
    data = SyntheticShapesDataset(preprocessor, batch_size=6, steps=3, seed=5, image_size=64, prompts_per_image=3)
    x, y = data[1]
    # Each scene's image once, beside its three prompts and their targets.
    assert x["images"].shape == (2, 64, 64, 3)
    assert x["token_ids"].shape[0] == 6 and y["masks"].shape[0] == 6
    generator = ShapesGenerator(image_size=64, seed=(5, 1))
    scenes = [generator.scene_samples(3) for _ in range(2)]
    expected, _ = preprocessor([s[0]["image"] for s in scenes], ["circle", "circle"])
    np.testing.assert_array_equal(x["images"], expected["images"])
    assert not np.array_equal(x["images"][0], x["images"][1])
    # Distinct prompts on a scene (while it has that many concepts to name).
    assert len({tuple(t) for t in x["token_ids"][:3]}) == 3
    # The default is the one-prompt stream.
    plain = SyntheticShapesDataset(preprocessor, batch_size=6, steps=3, seed=5, image_size=64)
    assert not np.array_equal(plain[1][0]["images"][0], plain[1][0]["images"][1])
    with pytest.raises(ValueError, match="prompts_per_image"):
        SyntheticShapesDataset(preprocessor, batch_size=6, image_size=64, prompts_per_image=4)


def test_the_one_prompt_stream_is_the_one_drawn_before_scene_samples():
    """`sample()` draws as it did before `scene_samples` existed: prompts and
    a hash of the images and masks recorded from that code (9b3f8d6)."""
    import hashlib

    generator = ShapesGenerator(
        image_size=64, seed=9, distractor_rate=0.5, color_prompt_rate=0.25, hard_negative_rate=0.5
    )
    prompts, digest = [], hashlib.sha256()
    for _ in range(12):
        s = generator.sample()
        prompts.append(s["prompt"])
        digest.update(s["image"].tobytes())
        digest.update(s["masks"].tobytes())
    assert prompts == [
        "green circle", "large triangle", "small square", "purple", "purple", "small white circle",
        "purple", "large square", "small circle", "large triangle", "white", "yellow circle",
    ]
    assert digest.hexdigest()[:16] == "456369342f8859aa"

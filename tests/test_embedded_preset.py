"""The shipped `sam3_shapes` preset: registered, small, and it segments the
shipped example the way it was trained to (on every backend)."""

import os

import numpy as np
from PIL import Image

from keras_sam3 import SAM3PromptableConceptImageSegmenter
from keras_sam3 import presets
from keras_sam3.data.synthetic_shapes import ShapesGenerator
from keras_sam3.metrics import mask_iou

EXAMPLE = os.path.join(presets.PRESETS_DIR, "examples", "shapes.png")
EXAMPLE_SEED = 8  # ShapesGenerator(seed=8).scene() drew the example


def test_registered_and_under_25_mb():
    definition = presets.list_presets()["sam3_shapes"]
    directory = presets.resolve_preset_name("sam3_shapes")
    assert os.path.isdir(directory)
    size = sum(os.path.getsize(os.path.join(r, n)) for r, _, names in os.walk(directory) for n in names)
    assert size <= 25 * 2**20, size
    segmenter = SAM3PromptableConceptImageSegmenter.from_preset("sam3_shapes")
    assert segmenter.backbone.count_params() == definition["params"]


def test_segments_the_example():
    image = np.asarray(Image.open(EXAMPLE).convert("RGB"))
    scene, objects = ShapesGenerator(seed=EXAMPLE_SEED).scene()
    np.testing.assert_array_equal(image, scene)
    segmenter = SAM3PromptableConceptImageSegmenter.from_preset("sam3_shapes")
    for prompt, wanted in [("triangle", {"shape": "triangle"}), ("red circle", {"shape": "circle", "color": "red"})]:
        truth = np.stack([o["mask"] for o in objects if all(o[k] == v for k, v in wanted.items())])
        result = segmenter.segment(image, prompts=prompt)[0]
        assert len(result["masks"]) == len(truth), (prompt, result["scores"])
        iou = mask_iou(result["masks"], truth)
        assert np.all(iou.max(axis=0) > 0.75), (prompt, iou)
    absent = segmenter.segment(image, prompts="yellow square")[0]
    assert len(absent["masks"]) == 0, absent["scores"]

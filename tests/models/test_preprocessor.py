import warnings

import numpy as np
import pytest
from PIL import Image

from keras_sam3.models.image_converter import SAM3ImageConverter
from keras_sam3.models.image_converter import to_rgb_uint8
from keras_sam3.models.preprocessor import SAM3PromptableConceptImageSegmenterPreprocessor
from keras_sam3.models.preprocessor import normalize_boxes
from keras_sam3.models.preprocessor import trim_prompt_padding
from tests.models.tiny import toy_tokenizer


def _preprocessor(size=28):
    return SAM3PromptableConceptImageSegmenterPreprocessor(
        toy_tokenizer(), SAM3ImageConverter(image_size=size)
    )


def _resize_reference(image, size):
    """PIL-style antialiased bilinear (triangle filter) on uint8, in numpy."""

    def weights(in_size, out_size):
        scale = in_size / out_size
        support = max(scale, 1.0)
        w = np.zeros((out_size, in_size))
        for i in range(out_size):
            center = (i + 0.5) * scale
            lo, hi = int(max(center - support + 0.5, 0)), int(min(center + support + 0.5, in_size))
            x = (np.arange(lo, hi) - center + 0.5) / support
            k = np.maximum(0, 1 - np.abs(x))
            w[i, lo:hi] = k / k.sum()
        return w

    wy, wx = weights(image.shape[0], size), weights(image.shape[1], size)
    out = np.einsum("yh,hwc,xw->yxc", wy, image.astype("float64"), wx)
    return np.clip(np.round(out), 0, 255)


def test_images_are_resized_and_scaled():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (50, 70, 3)).astype("uint8")
    pixels, sizes = SAM3ImageConverter(28)(image)
    assert pixels.shape == (1, 28, 28, 3) and sizes == [(50, 70)]
    assert pixels.min() >= -1 and pixels.max() <= 1
    expected = (_resize_reference(image, 28) - 127.5) / 127.5
    # PIL works in fixed point on uint8: at most one grey level apart.
    assert np.abs(pixels[0] - expected).max() <= 1 / 127.5 + 1e-6


@pytest.mark.parametrize(
    "image",
    [
        np.full((10, 12), 200, "uint8"),  # grayscale
        np.full((10, 12, 1), 200, "uint8"),
        np.dstack([np.full((10, 12, 3), 200, "uint8"), np.full((10, 12), 255, "uint8")]),  # opaque RGBA
        np.full((10, 12, 3), 200.0, "float32"),  # float pixel values
        Image.new("L", (12, 10), 200),
        Image.new("RGBA", (12, 10), (200, 200, 200, 255)),
    ],
)
def test_image_kinds_become_rgb(image):
    pixels, sizes = SAM3ImageConverter(8)(image)
    assert pixels.shape == (1, 8, 8, 3) and sizes == [(10, 12)]
    np.testing.assert_allclose(pixels, (200 - 127.5) / 127.5, atol=1e-6)


def test_transparency_is_composited_onto_white_as_the_reference_does():
    """The reference processor: PIL images through PIL's `alpha_composite`
    onto white; arrays through torchvision's `to_dtype` arithmetic (its
    `convert_to_rgb`), written out here in torch."""
    import torch

    rng = np.random.default_rng(0)
    rgba = rng.integers(0, 256, (16, 16, 4)).astype("uint8")
    rgba[0, 0] = (0, 0, 0, 0)  # fully transparent black: white
    rgba[0, 1] = (10, 20, 30, 255)  # opaque: unchanged
    x = torch.from_numpy(rgba).to(torch.float32).mul_(1.0 / 255)
    expected = (x[..., :3] * x[..., 3:] + (1 - x[..., 3:])).mul(255.0 + 1.0 - 1e-3).to(torch.uint8).numpy()
    converter = SAM3ImageConverter(16)
    ours = to_rgb_uint8(rgba)
    np.testing.assert_array_equal(ours, expected)
    assert ours[0, 0].tolist() == [255, 255, 255] and ours[0, 1].tolist() == [10, 20, 30]
    image = Image.fromarray(rgba, "RGBA")
    white = Image.alpha_composite(Image.new("RGBA", image.size, (255, 255, 255, 255)), image)
    np.testing.assert_array_equal(to_rgb_uint8(image), np.asarray(white.convert("RGB")))
    assert to_rgb_uint8(image)[0, 0].tolist() == [255, 255, 255]
    # A palette image with a transparent index, as PNGs often are.
    palette = Image.new("P", (4, 4), 0)
    palette.putpalette([0, 0, 0, 9, 9, 9] + [0] * 762)
    palette.info["transparency"] = 0
    assert to_rgb_uint8(palette)[0, 0].tolist() == [255, 255, 255]
    pixels, _ = converter(rgba)
    assert pixels.shape == (1, 16, 16, 3)


def test_float_images_in_zero_one_warn():
    image = np.full((8, 8, 3), 0.8, "float32")
    with pytest.warns(UserWarning, match=r"values in \[0, 1\].*Multiply it by 255"):
        SAM3ImageConverter(8)(image)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        SAM3ImageConverter(8)(np.zeros((8, 8, 3), "float32"))  # black, not [0, 1]
        SAM3ImageConverter(8)(np.full((8, 8, 3), 1, "uint8"))  # uint8 is unambiguous


@pytest.mark.parametrize(
    "image, message",
    [
        (np.zeros((2, 3, 4, 5, 3)), "one image"),
        (np.zeros((10, 10, 2)), "1, 3 or 4 channels"),
        (np.full((4, 4, 3), 300.0), r"\[0, 255\]"),
        (np.full((4, 4, 3), np.nan), "finite"),
        (np.zeros((4, 4, 3), "complex64"), "dtype"),
    ],
)
def test_bad_images_are_named(image, message):
    with pytest.raises(ValueError, match=message):
        SAM3ImageConverter(8)(image)


def test_boxes_become_normalized_cxcywh_and_pad_with_minus_ten():
    pre = _preprocessor()
    images = [np.zeros((100, 200, 3), "uint8"), np.zeros((50, 50, 3), "uint8")]
    inputs, sizes = pre(
        images,
        prompts=["a", "b"],
        boxes=[[[20, 10, 60, 50], [0, 0, 200, 100]], [[5, 5, 25, 45]]],
        box_labels=[[1, 0], [1]],
    )
    np.testing.assert_allclose(inputs["boxes"][0, 0], [0.2, 0.3, 0.2, 0.4])
    np.testing.assert_allclose(inputs["boxes"][0, 1], [0.5, 0.5, 1.0, 1.0])
    np.testing.assert_allclose(inputs["boxes"][1, 1], [-10, -10, 0, 0])
    np.testing.assert_array_equal(inputs["box_labels"], [[1, 0], [1, -10]])
    assert inputs["token_ids"].shape == (2, 32)


def test_boxes_only_prompt_visual_and_nothing_is_an_error():
    pre = _preprocessor()
    image = np.zeros((20, 20, 3), "uint8")
    inputs, _ = pre(image, boxes=[[[1, 1, 5, 5]]])
    expected, _ = pre.tokenizer(["visual"])
    np.testing.assert_array_equal(inputs["token_ids"], expected)
    with pytest.raises(ValueError, match="got neither"):
        pre(image)
    with pytest.raises(ValueError, match="empty"):
        pre(image, prompts="   ")


@pytest.mark.parametrize(
    "boxes, labels, message",
    [
        ([[1, 1, np.inf, 5]], None, "finite"),
        ([[5, 1, 1, 5]], None, "x2 > x1"),
        ([[30, 30, 40, 40]], None, "entirely outside"),
        ([[1, 1, 5, 5]], [2], "1 \\(positive\\) or 0"),
        ([[1, 1, 5, 5]], [1, 1], "1 boxes but 2 box labels"),
    ],
)
def test_bad_boxes_are_named(boxes, labels, message):
    with pytest.raises(ValueError, match=message):
        normalize_boxes(boxes, labels, (20, 20))


def test_boxes_partly_outside_are_clipped():
    boxes, _ = normalize_boxes([[-10, 5, 10, 25]], None, (20, 20))
    np.testing.assert_allclose(boxes, [[0.25, 0.625, 0.5, 0.75]])


@pytest.mark.parametrize(
    "boxes, message",
    [
        # One flat box for a batch of four: four "box lists" that are numbers.
        ([1, 1, 5, 5], r"boxes of image 0 must be a list of \(x1, y1, x2, y2\) boxes.*With 4 images"),
        ([[[1, 1, 5]], [], [], []], "boxes of image 0 must be a list"),
        ([[[1, 1, 5, 5]], "box", [], []], "boxes of image 1 must be a list"),
    ],
)
def test_box_lists_of_the_wrong_structure_are_named(boxes, message):
    with pytest.raises(ValueError, match=message):
        _preprocessor()([np.zeros((8, 8, 3), "uint8")] * 4, prompts="a", boxes=boxes)


def test_one_image_takes_its_box_list_or_one_bare_box():
    pre = _preprocessor()
    image = np.zeros((20, 20, 3), "uint8")
    wrapped, _ = pre(image, prompts="a", boxes=[[[2, 2, 10, 10]]])
    bare, _ = pre(image, prompts="a", boxes=[[2, 2, 10, 10]])
    array, _ = pre(image, prompts="a", boxes=np.array([[[2, 2, 10, 10]]]))
    for other in (bare, array):
        np.testing.assert_array_equal(other["boxes"], wrapped["boxes"])


def test_an_image_without_any_prompt_in_a_batch_is_named():
    pre = _preprocessor()
    images = [np.zeros((8, 8, 3), "uint8")] * 3
    with pytest.raises(ValueError, match=r"Images \[0, 2\] have neither a text prompt nor boxes"):
        pre(images, boxes=[[], [[1, 1, 5, 5]], []])
    with pytest.raises(ValueError, match=r"Images \[1\] have neither"):
        pre(images, prompts=["a", None, "b"])
    inputs, _ = pre(images, prompts=["a", None, "b"], boxes=[[], [[1, 1, 5, 5]], []])
    expected, _ = pre.tokenizer(["a", "visual", "b"])
    np.testing.assert_array_equal(inputs["token_ids"], expected)
    with pytest.raises(ValueError, match="Got box_labels but no boxes"):
        pre(images, prompts="a", box_labels=[[1], [1], [1]])
    with pytest.raises(ValueError, match=r"Image 0 has box labels \[1\] but no boxes"):
        pre(images, prompts="a", boxes=[[], [], []], box_labels=[[1], [], []])


def test_batch_size_mismatch_is_named():
    pre = _preprocessor()
    with pytest.raises(ValueError, match="2 images but 3 prompts"):
        pre([np.zeros((8, 8, 3), "uint8")] * 2, prompts=["a", "b", "c"])


def test_trim_prompt_padding_cuts_only_columns_that_are_padding_everywhere():
    ids = np.arange(2 * 32).reshape(2, 32).astype("int32")
    mask = np.zeros((2, 32), "int32")
    mask[0, :3], mask[1, :8] = 1, 1
    short_ids, short_mask = trim_prompt_padding(ids, mask)
    np.testing.assert_array_equal(short_ids, ids[:, :8])
    np.testing.assert_array_equal(short_mask, mask[:, :8])
    mask[1, 8] = 1  # one prompt needs a ninth column: nothing is cut
    long_ids, long_mask = trim_prompt_padding(ids, mask)
    np.testing.assert_array_equal(long_ids, ids)
    np.testing.assert_array_equal(long_mask, mask)
    # A tokenizer of 8 columns or fewer is left as it is.
    assert trim_prompt_padding(ids[:, :6], mask[:, :6])[0].shape == (2, 6)

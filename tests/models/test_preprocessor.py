import numpy as np
import pytest
from PIL import Image

from keras_sam3.models.image_converter import SAM3ImageConverter
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
        np.full((10, 12, 4), 200, "uint8"),  # RGBA
        np.full((10, 12, 3), 200.0, "float32"),  # float pixel values
        Image.new("L", (12, 10), 200),
        Image.new("RGBA", (12, 10), (200, 200, 200, 7)),
    ],
)
def test_image_kinds_become_rgb(image):
    pixels, sizes = SAM3ImageConverter(8)(image)
    assert pixels.shape == (1, 8, 8, 3) and sizes == [(10, 12)]
    np.testing.assert_allclose(pixels, (200 - 127.5) / 127.5, atol=1e-6)


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

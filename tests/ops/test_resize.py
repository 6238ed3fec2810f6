"""`resize_masks`; its TensorFlow path for sizes unknown while tracing is
exercised by `tests/models/test_fit.py::test_mask_resolution_may_change_between_batches`."""

import keras
import numpy as np
import pytest

from keras_sam3.ops.masks import resize_bilinear
from keras_sam3.ops.resize import resize_masks


def _masks():
    return np.random.default_rng(0).normal(size=(2, 3, 8, 8)).astype("float32")


@pytest.mark.parametrize("size", [(16, 16), (32, 24), (8, 8), (4, 4)])
def test_bilinear_with_half_pixel_centres(size):
    masks = _masks()
    ours = keras.ops.convert_to_numpy(resize_masks(keras.ops.convert_to_tensor(masks), size))
    assert ours.shape == (2, 3, *size)
    if size[0] >= 8:  # upsampling: no antialias question, the host-side resize's numbers
        np.testing.assert_allclose(ours, resize_bilinear(masks, size), atol=1e-5)


def test_the_same_size_returns_the_masks_themselves():
    masks = keras.ops.convert_to_tensor(_masks())
    assert resize_masks(masks, (8, 8)) is masks

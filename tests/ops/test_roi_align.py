import keras
import numpy as np
import pytest

from keras_sam3.ops.roi_align import roi_align
from tests.parity.roi_align_reference import roi_align_numpy


def _compare(features_nhwc, boxes, output_size=7):
    ours = keras.ops.convert_to_numpy(roi_align(features_nhwc, boxes, output_size))
    batch, num_boxes = boxes.shape[:2]
    rois = np.concatenate(
        [np.repeat(np.arange(batch), num_boxes)[:, None], boxes.reshape(-1, 4)], axis=1
    )
    expected = roi_align_numpy(features_nhwc.transpose(0, 3, 1, 2), rois, output_size)
    # (K, C, P, P) -> (B, N, P, P, C)
    expected = expected.transpose(0, 2, 3, 1).reshape(ours.shape)
    np.testing.assert_allclose(ours, expected, atol=2e-5, rtol=1e-5)
    return ours


@pytest.mark.parametrize("size", [(9, 9), (12, 10), (72, 72)])
def test_matches_torchvision_algorithm(size):
    rng = np.random.default_rng(sum(size))
    h, w = size
    features = rng.normal(size=(2, h, w, 3)).astype("float32")
    boxes = np.array(
        [
            [
                [0.0, 0.0, w, h],  # the whole map
                [1.3, 2.2, 5.9, 7.1],  # inside
                [-2.0, -1.5, 3.0, 2.5],  # crosses the top-left border
                [w - 2.5, h - 3.0, w + 1.5, h + 0.7],  # crosses the bottom-right border
            ],
            [
                [2.0, 2.0, 2.4, 2.3],  # smaller than a pixel
                [-720.0, -720.0, -720.0, -720.0],  # a padded box, far outside
                [0.5, 0.25, w - 0.5, 0.75],  # thin
                [w - 1.0, h - 1.0, w - 0.2, h - 0.1],  # on the last row / column
            ],
        ],
        "float32",
    )
    out = _compare(features, boxes)
    assert out.shape == (2, 4, 7, 7, 3)
    np.testing.assert_array_equal(out[1, 1], 0.0)  # padded boxes give zeros, not NaN


def test_random_boxes_and_other_output_size():
    rng = np.random.default_rng(3)
    features = rng.normal(size=(1, 16, 16, 2)).astype("float32")
    corners = rng.uniform(0, 16, size=(1, 6, 2, 2))
    boxes = np.concatenate([corners.min(2), corners.max(2)], axis=-1).astype("float32")
    _compare(features, boxes, output_size=4)

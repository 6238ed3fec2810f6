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


@pytest.mark.parametrize("size", [(9, 9), (24, 24), (13, 40)])
def test_boxes_larger_than_the_map_are_exact(size):
    # Such boxes sample on grids larger than any box inside the map needs
    # (torchvision: ceil(roi_h / 7) per bin); a fixed ceil(H / 7) grid missed
    # them by up to 0.27 (seen against the real torchvision on a GPU machine).
    rng = np.random.default_rng(size[0] * 100 + size[1])
    h, w = size
    features = rng.normal(size=(2, h, w, 4)).astype("float32")
    corners = rng.uniform(-3.0, 4.0, size=(2, 12, 2, 2)) * np.array([w, h])
    boxes = np.concatenate([corners.min(2), corners.max(2)], axis=-1).astype("float32")
    boxes[0, 0] = [-0.5, -0.7, w + 0.9, h + 1.2]  # just larger than the map
    boxes[0, 1] = [-500.0, -300.0, 700.0, 900.0]  # grids of ~170 samples per bin
    boxes[1, 0] = [2.0, -40.0, 3.0, h + 40.0]  # a tall, thin box
    out = _compare(features, boxes)
    assert np.abs(out).max() > 0.0


def test_exact_along_a_sweep_of_box_sizes():
    rng = np.random.default_rng(11)
    features = rng.normal(size=(1, 10, 10, 2)).astype("float32")
    lengths = np.linspace(0.3, 60.0, 24)
    boxes = np.stack([-0.37 * lengths, 0.21 * lengths - 2.0, 0.63 * lengths, 1.21 * lengths - 2.0], -1)
    _compare(features, boxes[None].astype("float32"))

import keras
import numpy as np
import pytest

from keras_sam3.layers.windows import window_partition
from keras_sam3.layers.windows import window_unpartition


@pytest.mark.parametrize("size", [(8, 8), (9, 7)])
def test_partition_round_trip(size):
    x = np.arange(2 * size[0] * size[1] * 3, dtype="float32").reshape((2, *size, 3))
    windows, padded = window_partition(x, 4)
    assert padded == (-(-size[0] // 4) * 4, -(-size[1] // 4) * 4)
    assert windows.shape == (2 * padded[0] * padded[1] // 16, 16, 3)
    back = window_unpartition(windows, 4, padded, size)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(back), x)


def test_windows_are_row_major_and_zero_padded():
    x = np.ones((1, 5, 5, 1), "float32")
    windows = keras.ops.convert_to_numpy(window_partition(x, 4)[0])
    # Four windows: top-left full, top-right has one valid column.
    assert windows.shape == (4, 16, 1)
    assert windows[0].sum() == 16
    assert windows[1].sum() == 4
    assert windows[3].sum() == 1

import math

import keras
import numpy as np

from keras_sam3.layers.position_encoding import sine_encode
from keras_sam3.layers.position_encoding import sine_position_encoding_2d


def test_2d_encoding_layout():
    pe = sine_position_encoding_2d(3, 4, num_features=6)
    assert pe.shape == (3, 4, 12)
    i, j = 2, 1
    y = (i + 1) / 3 * 2 * math.pi
    x = (j + 1) / 4 * 2 * math.pi
    dim_t = 10000 ** (2 * (np.arange(6) // 2) / 6)
    expect_y = np.where(np.arange(6) % 2 == 0, np.sin(y / dim_t), np.cos(y / dim_t))
    expect_x = np.where(np.arange(6) % 2 == 0, np.sin(x / dim_t), np.cos(x / dim_t))
    np.testing.assert_allclose(pe[i, j, :6], expect_y, atol=1e-5)
    np.testing.assert_allclose(pe[i, j, 6:], expect_x, atol=1e-5)


def test_1d_encoding_interleaves():
    values = np.array([[0.25, 0.5]], "float32")
    out = keras.ops.convert_to_numpy(sine_encode(values, 8))
    assert out.shape == (1, 2, 8)
    dim_t = 10000 ** (2 * (np.arange(8) // 2) / 8)
    angle = 0.5 * 2 * math.pi / dim_t
    expected = np.where(np.arange(8) % 2 == 0, np.sin(angle), np.cos(angle))
    np.testing.assert_allclose(out[0, 1], expected, atol=1e-6)

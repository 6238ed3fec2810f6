import keras
import numpy as np

from keras_sam3.layers.rope import apply_rope
from keras_sam3.layers.rope import axial_rope_tables


def test_tables_follow_axial_layout():
    cos, sin = axial_rope_tables(3, 5, head_dim=8, theta=100.0, scale=0.5)
    assert cos.shape == (15, 8) and cos.dtype == np.float32
    inv_freq = 100.0 ** (-np.arange(0, 4, 2) / 4)  # d/4 = 2 frequencies
    token = 1 * 5 + 3  # row 1, column 3
    x, y = 3 * 0.5, 1 * 0.5
    angles = np.repeat(np.concatenate([x * inv_freq, y * inv_freq]), 2)
    np.testing.assert_allclose(cos[token], np.cos(angles), rtol=1e-6)
    np.testing.assert_allclose(sin[token], np.sin(angles), rtol=1e-6)


def test_rotation_equals_complex_multiplication():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 6, 3, 8)).astype("float32")  # (B, N, h, d)
    cos, sin = axial_rope_tables(2, 3, head_dim=8)
    ours = keras.ops.convert_to_numpy(apply_rope(x, cos, sin))
    pairs = x[..., 0::2] + 1j * x[..., 1::2]
    angles = np.arctan2(sin[:, 0::2], cos[:, 0::2])[None, :, None, :]
    rotated = pairs * np.exp(1j * angles)
    expected = np.stack([rotated.real, rotated.imag], axis=-1).reshape(x.shape)
    np.testing.assert_allclose(ours, expected, atol=1e-5)


def test_rotation_keeps_dtype_and_norm():
    x = keras.random.normal((1, 4, 2, 8), seed=1)
    x16 = keras.ops.cast(x, "bfloat16")
    cos, sin = axial_rope_tables(2, 2, head_dim=8)
    out = apply_rope(x16, cos, sin)
    assert keras.backend.standardize_dtype(out.dtype) == "bfloat16"
    norms = keras.ops.convert_to_numpy(keras.ops.norm(apply_rope(x, cos, sin), axis=-1))
    np.testing.assert_allclose(norms, keras.ops.convert_to_numpy(keras.ops.norm(x, axis=-1)), rtol=1e-5)


def test_heads_first_layout_gives_the_same_rotation():
    x = np.random.default_rng(3).normal(size=(2, 6, 3, 8)).astype("float32")  # (B, N, h, d)
    cos, sin = axial_rope_tables(2, 3, head_dim=8)
    expected = keras.ops.convert_to_numpy(apply_rope(x, cos, sin))
    out = keras.ops.convert_to_numpy(apply_rope(np.transpose(x, (0, 2, 1, 3)), cos, sin, heads_first=True))
    assert out.shape == (2, 3, 6, 8)
    np.testing.assert_array_equal(np.transpose(out, (0, 2, 1, 3)), expected)

import keras
import numpy as np
import pytest

from keras_sam3.layers.conv import Conv2D
from keras_sam3.layers.conv import Conv2DTranspose
from keras_sam3.ops.conv import conv2d
from keras_sam3.ops.conv import conv2d_transpose
from keras_sam3.ops.conv import upsampled_conv3x3


def _np(x):
    return keras.ops.convert_to_numpy(x)


@pytest.mark.parametrize(
    "kernel_size, strides, padding, dilation, groups",
    [
        (1, 1, "valid", 1, 1),
        (3, 1, "same", 1, 1),
        (3, 1, "same", 2, 1),
        (3, 2, "same", 1, 1),  # asymmetric "same": Keras' own path
        (2, 2, "valid", 1, 1),
        (5, 1, "valid", 1, 1),
        (3, 1, "same", 1, 2),
        (4, 1, "same", 1, 1),  # even kernel "same": Keras' own path
    ],
)
@pytest.mark.parametrize("use_bias", [True, False])
def test_conv2d_equals_keras_conv(kernel_size, strides, padding, dilation, groups, use_bias):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 9, 7, 4)).astype("float32")
    kernel = rng.normal(size=(kernel_size, kernel_size, 4 // groups, 6)).astype("float32")
    bias = rng.normal(size=(6,)).astype("float32") if use_bias else None
    expected = _np(keras.ops.conv(x, kernel, strides=strides, padding=padding, dilation_rate=dilation))
    if use_bias:
        expected = expected + bias
    out = _np(conv2d(x, kernel, bias, strides=strides, padding=padding, dilation_rate=dilation))
    assert out.shape == expected.shape
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    "kernel_size, strides",
    [
        (2, 2),
        (3, 1),
        (3, 2),
        # A kernel equal to its stride: JAX's blockwise path (one matrix
        # product), non-square too.
        (4, 4),
        ((1, 3), (1, 3)),
        ((3, 2), (3, 2)),
    ],
)
def test_conv2d_transpose_equals_keras(kernel_size, strides):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, 5, 6, 4)).astype("float32")
    kh, kw = kernel_size if isinstance(kernel_size, tuple) else (kernel_size, kernel_size)
    sh, sw = strides if isinstance(strides, tuple) else (strides, strides)
    kernel = rng.normal(size=(kh, kw, 3, 4)).astype("float32")
    bias = rng.normal(size=(3,)).astype("float32")
    expected = _np(keras.ops.conv_transpose(x, kernel, strides=strides, padding="valid")) + bias
    out = _np(conv2d_transpose(x, kernel, bias, strides=strides))
    assert out.shape == (2, 4 * sh + kh, 5 * sw + kw, 3)
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4)


def test_conv2d_transpose_layer_with_unknown_spatial_size():
    layer = Conv2DTranspose(3, 2, strides=2)
    model = keras.Sequential([keras.Input((None, None, 4)), layer])
    for height, width in ((3, 5), (4, 2)):
        x = np.random.default_rng(height).normal(size=(2, height, width, 4)).astype("float32")
        expected = _np(keras.ops.conv_transpose(x, layer.kernel, strides=2, padding="valid")) + _np(layer.bias)
        out = model.predict(x, verbose=0)
        assert out.shape == (2, 2 * height, 2 * width, 3)
        np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    "ours_cls, theirs_cls, kwargs",
    [
        (Conv2D, keras.layers.Conv2D, dict(kernel_size=3, padding="same", activation="gelu")),
        (Conv2D, keras.layers.Conv2D, dict(kernel_size=1)),
        (Conv2DTranspose, keras.layers.Conv2DTranspose, dict(kernel_size=2, strides=2)),
    ],
)
def test_fused_layers_equal_keras_layers_forward_and_backward(ours_cls, theirs_cls, kwargs):
    x = np.random.default_rng(2).normal(size=(2, 6, 6, 3)).astype("float32")
    y = None
    weights = []
    for cls in (ours_cls, theirs_cls):
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((6, 6, 3)), cls(5, **kwargs)])
        model.compile(optimizer=keras.optimizers.SGD(0.5), loss="mse")
        out = _np(model(x))
        if y is None:
            y, target = out, np.zeros_like(out)
        else:
            np.testing.assert_allclose(out, y, rtol=1e-5, atol=1e-5)
        model.train_on_batch(x, target + 1.0)
        weights.append([_np(w) for w in model.weights])
    for a, b in zip(*weights):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_fused_conv_mixed_bfloat16_and_serialization():
    layer = Conv2D(4, 3, padding="same", dtype="mixed_bfloat16")
    out = layer(np.ones((1, 5, 5, 2), "float32"))
    assert keras.backend.standardize_dtype(out.dtype) == "bfloat16"
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert isinstance(clone, Conv2D) and clone.filters == 4


def test_weight_files_of_keras_layers_load_into_ours(tmp_path):
    """Keras names list-held layers by class in weight files: presets saved
    with `keras.layers` load into ours and the other way round."""

    class Holder(keras.layers.Layer):
        def __init__(self, dense, conv, deconv, **kwargs):
            super().__init__(**kwargs)
            self.blocks = [dense(3), conv(3, 1), deconv(3, 2, strides=2)]

        def call(self, x):
            return self.blocks[2](self.blocks[1](self.blocks[0](x)))

    from keras_sam3.layers.dense import Dense

    x = np.random.default_rng(4).normal(size=(1, 4, 4, 2)).astype("float32")
    theirs = keras.Sequential([keras.Input((4, 4, 2)), Holder(keras.layers.Dense, keras.layers.Conv2D, keras.layers.Conv2DTranspose)])
    ours = keras.Sequential([keras.Input((4, 4, 2)), Holder(Dense, Conv2D, Conv2DTranspose)])
    path = str(tmp_path / "w.weights.h5")
    theirs.save_weights(path)
    ours.load_weights(path)
    np.testing.assert_allclose(_np(ours(x)), _np(theirs(x)), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape", [(2, 5, 7, 4), (1, 1, 1, 3), (1, 6, 6, 8)])
@pytest.mark.parametrize("with_skip", [True, False])
def test_upsampled_conv3x3_equals_convolving_the_upsampled_map(shape, with_skip):
    rng = np.random.default_rng(1)
    x = rng.normal(size=shape).astype("float32")
    kernel = rng.normal(size=(3, 3, shape[-1], 5)).astype("float32")
    batch, height, width, _ = shape
    skip = rng.normal(size=(batch, 2 * height, 2 * width, 5)).astype("float32") if with_skip else None
    upsampled = np.repeat(np.repeat(x, 2, axis=1), 2, axis=2)
    expected = _np(keras.ops.conv(upsampled, kernel, padding="same"))
    if with_skip:
        expected = expected + skip
    out = _np(upsampled_conv3x3(x, kernel, skip))
    assert out.shape == (batch, 2 * height, 2 * width, 5)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-4)


def test_upsampled_conv3x3_wants_a_3x3_kernel():
    with pytest.raises(ValueError, match="3 x 3 kernel"):
        upsampled_conv3x3(np.zeros((1, 4, 4, 2), "float32"), np.zeros((5, 5, 2, 2), "float32"))

import keras
import numpy as np

from keras_sam3.layers.group_norm import GroupNormalization


def _reference(x, groups, eps=1e-5):
    b, h, w, c = x.shape
    xd = x.astype("float64").reshape(b, h, w, groups, c // groups)
    mean = xd.mean(axis=(1, 2, 4), keepdims=True)
    var = xd.var(axis=(1, 2, 4), keepdims=True)
    return ((xd - mean) / np.sqrt(var + eps)).reshape(x.shape)


def test_accurate_on_a_large_map_with_offset():
    # SAM 3's pixel decoder normalizes 288 x 288 maps in groups of 32 channels.
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(1, 288, 288, 64)) * 2 + 3).astype("float32")
    out = keras.ops.convert_to_numpy(GroupNormalization(2)(x))
    assert np.abs(out - _reference(x, 2)).max() < 5e-6


def test_affine_parameters_and_config():
    layer = GroupNormalization(4, epsilon=1e-3)
    x = np.random.default_rng(1).normal(size=(2, 5, 6, 8)).astype("float32")
    layer.build(x.shape)
    layer.gamma.assign(np.arange(8, dtype="float32"))
    layer.beta.assign(np.ones(8, "float32"))
    out = keras.ops.convert_to_numpy(layer(x))
    np.testing.assert_allclose(out, _reference(x, 4, 1e-3) * np.arange(8) + 1, atol=1e-5)
    assert [v.path.split("/")[-1] for v in layer.weights] == ["gamma", "beta"]
    assert GroupNormalization.from_config(layer.get_config()).get_config() == layer.get_config()


def test_bfloat16_and_gradients():
    x = np.random.default_rng(2).normal(size=(2, 4, 4, 8)).astype("float32")
    out = GroupNormalization(2, dtype="bfloat16")(x)
    assert keras.backend.standardize_dtype(out.dtype) == "bfloat16"
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(keras.ops.cast(out, "float32")), _reference(x, 2), atol=5e-2
    )
    model = keras.Sequential([keras.Input((4, 4, 8)), GroupNormalization(2)])
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    target = np.full((2, 4, 4, 8), 0.5, "float32")
    before = model.evaluate(x, target, verbose=0)
    for _ in range(5):
        model.train_on_batch(x, target)
    assert model.evaluate(x, target, verbose=0) < before

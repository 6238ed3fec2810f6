import keras
import numpy as np
import pytest

from keras_sam3.layers.conv import Conv2D
from keras_sam3.layers.conv import Conv2DTranspose
from keras_sam3.layers.dense import Dense
from keras_sam3.layers.embedding import Embedding
from keras_sam3.layers.initializers import in_place


def _np(x):
    return keras.ops.convert_to_numpy(x)


@pytest.mark.parametrize(
    "initializer",
    [
        "glorot_uniform",
        "he_uniform",
        "lecun_uniform",
        "uniform",
        keras.initializers.RandomUniform(-3.0, 0.5, seed=7),
        keras.initializers.VarianceScaling(2.0, "fan_out", "uniform", seed=3),
        # Not uniform: passed through to Keras unchanged.
        "glorot_normal",
        keras.initializers.TruncatedNormal(stddev=0.02),
        keras.initializers.RandomNormal(stddev=1.0),
        "zeros",
        "ones",
    ],
)
@pytest.mark.parametrize("shape", [(7,), (5, 6), (3, 3, 4, 8)])
def test_in_place_draws_keras_values(initializer, shape):
    """Bit for bit Keras' values from the same seed, on every backend."""
    for dtype in ("float32", "bfloat16"):
        keras.utils.set_random_seed(11)
        ours = _np(keras.ops.cast(in_place(keras.initializers.get(initializer))(shape, dtype), "float32"))
        keras.utils.set_random_seed(11)
        theirs = _np(keras.ops.cast(keras.initializers.get(initializer)(shape, dtype), "float32"))
        assert ours.shape == shape
        np.testing.assert_array_equal(ours, theirs)


def test_in_place_keeps_the_seed_stream():
    """Draws in a row are those Keras would make (a seeded Keras
    initializer repeats its values; one seeded by a SeedGenerator moves on)."""
    for seed in (lambda: None, lambda: keras.random.SeedGenerator(2)):
        keras.utils.set_random_seed(5)
        draw = in_place(keras.initializers.GlorotUniform(seed=seed()))
        ours = [_np(draw((4, 4), "float32")) for _ in range(3)]
        keras.utils.set_random_seed(5)
        init = keras.initializers.GlorotUniform(seed=seed())
        theirs = [_np(init((4, 4), "float32")) for _ in range(3)]
        for a, b in zip(ours, theirs):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    "ours, theirs, shape",
    [
        (lambda: Dense(6), lambda: keras.layers.Dense(6), (None, 4)),
        (lambda: Conv2D(5, 3), lambda: keras.layers.Conv2D(5, 3), (None, 8, 8, 3)),
        (lambda: Conv2DTranspose(5, 2, strides=2), lambda: keras.layers.Conv2DTranspose(5, 2, strides=2), (None, 8, 8, 3)),
        (lambda: Embedding(50, 8), lambda: keras.layers.Embedding(50, 8), (None, 3)),
    ],
)
def test_layers_start_from_keras_values(ours, theirs, shape):
    """Our layers' first weights are those Keras' layers draw; their
    configuration is Keras' too (no initializer of ours in it)."""
    weights, configs = [], []
    for make in (ours, theirs):
        keras.utils.set_random_seed(3)
        layer = make()
        layer.build(shape)
        weights.append([_np(w) for w in layer.weights])
        config = layer.get_config()
        config.pop("name")
        configs.append(config)
    assert configs[0] == configs[1]
    assert len(weights[0]) == len(weights[1])
    for a, b in zip(*weights):
        np.testing.assert_array_equal(a, b)


def test_embedding_lora_and_serialization():
    layer = Embedding(20, 4)
    layer.build((None, 2))
    layer.enable_lora(2)
    assert [w.name for w in layer.trainable_weights] == ["lora_embeddings_a", "lora_embeddings_b"]
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(Embedding(9, 3)))
    assert isinstance(clone, Embedding) and clone.input_dim == 9

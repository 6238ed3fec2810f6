import keras
import numpy as np
import pytest

from keras_sam3.layers.direct import dropout
from keras_sam3.layers.layer_norm import LayerNormalization
from keras_sam3.layers.layer_norm import layer_norm


def _pair(dtype="float32"):
    ours = layer_norm("norm", 1e-6, dtype)
    theirs = keras.layers.LayerNormalization(epsilon=1e-6, dtype=dtype)
    for layer in (ours, theirs):
        layer.build((None, 8))
    rng = np.random.default_rng(0)
    ours.set_weights([rng.normal(size=(8,)).astype("float32") for _ in range(2)])
    theirs.set_weights(ours.get_weights())
    return ours, theirs


def test_layer_norm_skips_keras_call_machinery_on_torch(count_layer_calls):
    ours, theirs = _pair()
    assert isinstance(ours, LayerNormalization)
    x = keras.ops.convert_to_tensor(np.random.default_rng(1).normal(size=(2, 5, 8)).astype("float32"))
    first = keras.ops.convert_to_numpy(ours(x))
    calls = count_layer_calls()
    again = keras.ops.convert_to_numpy(ours(x))
    assert calls == ([] if keras.backend.backend() == "torch" else [ours.name])
    np.testing.assert_array_equal(again, first)
    np.testing.assert_array_equal(again, keras.ops.convert_to_numpy(theirs(x)))


@pytest.mark.parametrize("case", ["mixed_bfloat16", "numpy_input", "float64_input"])
def test_layer_norm_keeps_keras_call_where_it_matters(keeps_keras_call, case):
    ours, theirs = _pair("mixed_bfloat16" if case == "mixed_bfloat16" else "float32")
    x = np.random.default_rng(2).normal(size=(3, 8)).astype("float64" if case == "float64_input" else "float32")
    x = x if case == "numpy_input" else keras.ops.convert_to_tensor(x)
    keeps_keras_call(ours, theirs, x, 0.0)


def test_layer_norm_serializes_as_ours():
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer_norm("n", 1e-5, None)))
    assert isinstance(clone, LayerNormalization) and clone.epsilon == 1e-5 and clone.name == "n"


def test_dropout_helper_calls_the_layer_only_when_training(count_layer_calls):
    layer = keras.layers.Dropout(0.5, seed=0)
    x = keras.ops.ones((4, 64))
    calls = count_layer_calls()
    for training in (None, False):
        assert dropout(layer, x, training) is x
    assert calls == []
    dropped = keras.ops.convert_to_numpy(dropout(layer, x, True))
    assert calls == [layer.name]
    assert (dropped == 0).any() and set(np.unique(dropped)) <= {0.0, 2.0}

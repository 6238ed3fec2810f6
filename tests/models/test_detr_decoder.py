"""SAM3DetrDecoder: initialisation and the grid of reference boxes."""

import keras
import numpy as np
import pytest
from keras import ops

from keras_sam3 import SAM3DetrDecoder


def decoder(num_queries=16):
    layer = SAM3DetrDecoder(hidden_dim=32, num_layers=2, num_heads=4, intermediate_dim=64, num_queries=num_queries)
    layer.build()
    return layer


def test_query_and_reference_embeddings_start_standard_normal():
    # As PyTorch's nn.Embedding (Meta's initialisation): distinct queries and
    # reference boxes spread over the image, not all at sigmoid(0) = 0.5.
    keras.utils.set_random_seed(0)
    layer = decoder(num_queries=64)
    queries = ops.convert_to_numpy(layer.query_embed.embeddings)
    assert 0.9 < queries.std() < 1.1
    boxes = 1 / (1 + np.exp(-ops.convert_to_numpy(layer.reference_points.embeddings)))
    assert boxes.std(axis=0).min() > 0.15


def test_grid_reference_boxes_are_set_and_frozen():
    layer = decoder()
    layer.set_grid_reference_boxes(box_size=0.25)
    boxes = 1 / (1 + np.exp(-ops.convert_to_numpy(layer.reference_points.embeddings)))
    centres = np.array([0.125, 0.375, 0.625, 0.875])
    np.testing.assert_allclose(boxes[:4, 0], centres, atol=1e-6)  # first row: x varies
    np.testing.assert_allclose(boxes[:4, 1], 0.125, atol=1e-6)
    np.testing.assert_allclose(boxes[::4, 1], centres, atol=1e-6)  # first column: y varies
    np.testing.assert_allclose(boxes[:, 2:], 0.25, atol=1e-6)
    assert not layer.reference_points.trainable
    assert all(v.path != layer.reference_points.embeddings.path for v in layer.trainable_variables)
    layer.set_grid_reference_boxes(trainable=True)
    assert layer.reference_points.trainable


def test_grid_reference_boxes_reject_bad_arguments():
    with pytest.raises(ValueError, match="square number of queries"):
        decoder(num_queries=10).set_grid_reference_boxes()
    with pytest.raises(ValueError, match="box_size"):
        decoder().set_grid_reference_boxes(box_size=1.5)


def test_query_initializer_is_configurable_and_serialized():
    keras.utils.set_random_seed(0)
    layer = SAM3DetrDecoder(
        hidden_dim=32, num_layers=1, num_heads=4, intermediate_dim=64, num_queries=64, query_initializer="uniform"
    )
    layer.build()
    queries = ops.convert_to_numpy(layer.query_embed.embeddings)
    assert np.abs(queries).max() <= 0.05  # Keras' RandomUniform(-0.05, 0.05)
    restored = SAM3DetrDecoder.from_config(layer.get_config())
    assert isinstance(restored.query_initializer, keras.initializers.RandomUniform)
    default = SAM3DetrDecoder.from_config(decoder().get_config())
    assert isinstance(default.query_initializer, keras.initializers.RandomNormal)
    assert default.query_initializer.stddev == 1.0


def test_one_to_many_queries_are_the_queries_without_self_attention():
    """`self_attention=False` (Meta's DAC queries) equals the decoder whose
    self-attentions output nothing: each query alone, its layer norm kept."""
    keras.utils.set_random_seed(3)
    layer = decoder()
    rng = np.random.default_rng(0)
    memory = rng.normal(size=(2, 4, 5, 32)).astype("float32")
    memory_pos = rng.normal(size=(1, 4, 5, 32)).astype("float32")
    prompt = rng.normal(size=(2, 3, 32)).astype("float32")
    prompt_mask = np.array([[True, True, False], [True, False, False]])
    args = (memory, memory_pos, prompt, prompt_mask)
    with_self_attention = layer(*args)
    many = layer(*args, self_attention=False)
    for block in layer.decoder_layers:
        for weight in block.self_attn.o_proj.weights:
            weight.assign(np.zeros(weight.shape, "float32"))
    silenced = layer(*args)
    for key in ("queries", "boxes", "reference_boxes"):
        got, want = ops.convert_to_numpy(many[key]), ops.convert_to_numpy(silenced[key])
        np.testing.assert_allclose(got, want, atol=1e-5, err_msg=key)
        assert np.abs(got - ops.convert_to_numpy(with_self_attention[key])).max() > 1e-2, key

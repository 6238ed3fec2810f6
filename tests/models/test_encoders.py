import keras
import numpy as np
import pytest

from keras_sam3 import SAM3TextEncoder
from keras_sam3 import SAM3VisionEncoder
from tests.models.tiny import TINY_VISION

TINY_TEXT = dict(
    vocabulary_size=100,
    hidden_dim=32,
    intermediate_dim=64,
    num_layers=2,
    num_heads=2,
    output_dim=16,
)


def _numpy(outputs):
    return {k: keras.ops.convert_to_numpy(v) for k, v in outputs.items()}


@pytest.mark.parametrize("size", [112, 126])
def test_vision_encoder_shapes(size):
    encoder = SAM3VisionEncoder(**TINY_VISION)
    out = _numpy(encoder(np.zeros((2, size, size, 3), "float32")))
    grid = size // 14
    assert out["last_hidden_state"].shape == (2, grid, grid, 32)
    for i, scale in enumerate((4, 2, 1, 0.5)):
        side = int(grid * scale)
        assert out[f"fpn_hidden_states_{i}"].shape == (2, side, side, 16)
        assert out[f"fpn_position_encoding_{i}"].shape == (1, side, side, 16)
    # Constant tables are not weights.
    assert not encoder.non_trainable_weights


def test_vision_encoder_config_and_weights_round_trip(tmp_path):
    encoder = SAM3VisionEncoder(**TINY_VISION)
    images = np.random.default_rng(0).uniform(-1, 1, (1, 112, 112, 3)).astype("float32")
    expected = _numpy(encoder(images))
    path = str(tmp_path / "vision.weights.h5")
    inputs = keras.Input((112, 112, 3))
    keras.Model(inputs, encoder(inputs)).save_weights(path)

    clone = SAM3VisionEncoder.from_config(encoder.get_config())
    clone_inputs = keras.Input((112, 112, 3))
    clone_model = keras.Model(clone_inputs, clone(clone_inputs))
    clone_model.load_weights(path)
    for name, value in _numpy(clone(images)).items():
        np.testing.assert_array_equal(value, expected[name], err_msg=name)


def test_vision_encoder_in_functional_model_with_dynamic_batch():
    encoder = SAM3VisionEncoder(**TINY_VISION)
    inputs = keras.Input((112, 112, 3))
    model = keras.Model(inputs, encoder(inputs))
    out = model.predict_on_batch(np.zeros((3, 112, 112, 3), "float32"))
    assert out["fpn_hidden_states_2"].shape == (3, 8, 8, 16)


def test_text_encoder_is_causal_and_ignores_padding():
    encoder = SAM3TextEncoder(**TINY_TEXT)
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 100, (2, 32)).astype("int32")
    mask = np.ones((2, 32), "int32")
    mask[1, 5:] = 0
    out = _numpy(encoder(ids, mask))
    changed = ids.copy()
    changed[:, 20:] = (changed[:, 20:] + 1) % 100  # edit only late tokens
    changed_out = _numpy(encoder(changed, mask))
    np.testing.assert_allclose(changed_out["text_features"][:, :20], out["text_features"][:, :20], atol=1e-6)
    assert out["text_mask"].dtype == bool
    np.testing.assert_array_equal(out["text_mask"], mask.astype(bool))


def test_text_encoder_rejects_long_sequences():
    encoder = SAM3TextEncoder(**TINY_TEXT)
    with pytest.raises(ValueError, match="33 tokens"):
        encoder(np.zeros((1, 33), "int32"))


def test_text_encoder_config_round_trip():
    encoder = SAM3TextEncoder(**TINY_TEXT, activation="quick_gelu")
    clone = SAM3TextEncoder.from_config(encoder.get_config())
    assert clone.get_config() == encoder.get_config()


@pytest.mark.parametrize("dtype", ["bfloat16", "mixed_bfloat16"])
def test_encoders_run_in_bfloat16(dtype):
    vision = SAM3VisionEncoder(**TINY_VISION, dtype=dtype)
    out = vision(np.zeros((1, 112, 112, 3), "float32"))
    assert keras.backend.standardize_dtype(out["fpn_hidden_states_0"].dtype) == "bfloat16"
    assert np.all(np.isfinite(keras.ops.convert_to_numpy(keras.ops.cast(out["fpn_hidden_states_0"], "float32"))))
    text = SAM3TextEncoder(**TINY_TEXT, dtype=dtype)
    feats = text(np.ones((1, 32), "int32"), np.ones((1, 32), "int32"))["text_features"]
    assert keras.backend.standardize_dtype(feats.dtype) == "bfloat16"


@pytest.mark.parametrize("dtype", ["bfloat16", "mixed_bfloat16"])
def test_geometry_encoder_keeps_boxes_in_float32(dtype, monkeypatch):
    """Box exemplars reach ROI align and the sine encoding in float32: in
    bfloat16 an edge near 72 feature pixels moves by up to a quarter pixel
    (a review measured 6-17% off in the pooled features)."""
    from keras_sam3 import SAM3GeometryEncoder
    from keras_sam3.models import geometry_encoder as module

    seen = []
    original = module.roi_align
    monkeypatch.setattr(module, "roi_align", lambda f, b, size: seen.append(b) or original(f, b, size))
    encoder = SAM3GeometryEncoder(hidden_dim=16, num_layers=1, num_heads=2, intermediate_dim=32, dtype=dtype)
    grid = 72
    boxes = np.array([[[0.6012, 0.5037, 0.2519, 0.3107], [0.6015, 0.5037, 0.2519, 0.3107]]], "float32")
    out = encoder(
        boxes,
        np.ones((1, 2), "int32"),
        np.ones((1, 2), bool),
        np.random.default_rng(0).normal(size=(1, grid, grid, 16)).astype("float32"),
        np.zeros((1, grid, grid, 16), "float32"),
    )
    pixel = keras.ops.convert_to_numpy(seen[-1])
    assert pixel.dtype == np.float32
    cx, cy, w, h = np.moveaxis(boxes[0].astype("float64"), -1, 0)
    expected = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], -1) * grid
    np.testing.assert_allclose(pixel[0], expected, rtol=1e-6)
    assert keras.backend.standardize_dtype(out["features"].dtype) == "bfloat16"
    tokens = keras.ops.convert_to_numpy(keras.ops.cast(out["features"], "float32"))
    assert np.abs(tokens[0, 0] - tokens[0, 1]).max() > 0  # boxes 0.02 px apart stay apart

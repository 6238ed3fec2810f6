import keras
import numpy as np
import pytest

from keras_sam3 import SAM3MaskDecoder


def _decoder(d=16):
    decoder = SAM3MaskDecoder(hidden_dim=d, num_heads=2)
    decoder.build()
    rng = np.random.default_rng(0)
    for variable in decoder.weights:  # biases and norms too: no branch is zero
        variable.assign(rng.normal(scale=0.3, size=variable.shape).astype("float32"))
    return decoder


@pytest.mark.parametrize("memory_side", [4, 2])  # 2: a 4x stage, convolved at full size
def test_convolved_skips_give_the_plain_pixel_decoder(memory_side):
    d = 16
    decoder = _decoder(d)
    rng = np.random.default_rng(1)
    queries = rng.normal(size=(2, 5, d)).astype("float32")
    memory = rng.normal(size=(2, memory_side, memory_side, d)).astype("float32")
    skips = [rng.normal(size=(2, s, s, d)).astype("float32") for s in (16, 8)]
    prompt = rng.normal(size=(2, 3, d)).astype("float32")
    prompt_mask = np.array([[True, True, False], [True, False, False]])

    plain = decoder(queries, memory, skips, prompt, prompt_mask)
    convolved = decoder.convolve_skips(skips)
    assert [tuple(c.shape) for c in convolved] == [s.shape for s in skips]
    split = decoder(queries, memory, convolved, prompt, prompt_mask, skips_convolved=True)
    for key in ("pred_masks", "semantic_seg"):
        expected = keras.ops.convert_to_numpy(plain[key])
        assert np.std(expected) > 0.05
        scale = max(1.0, float(np.abs(expected).max()))
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(split[key]), expected, rtol=0, atol=1e-5 * scale, err_msg=key
        )


def test_convolve_skips_checks_the_level_count():
    with pytest.raises(ValueError, match="Expected 2 skip levels, got 1"):
        _decoder().convolve_skips([np.zeros((1, 8, 8, 16), "float32")])


def test_convolved_skips_in_mixed_bfloat16():
    d = 16
    decoder = SAM3MaskDecoder(hidden_dim=d, num_heads=2, dtype="mixed_bfloat16")
    decoder.build()
    rng = np.random.default_rng(2)
    queries = rng.normal(size=(1, 5, d)).astype("float32")
    memory = rng.normal(size=(1, 4, 4, d)).astype("float32")
    skips = [rng.normal(size=(1, s, s, d)).astype("float32") for s in (16, 8)]
    prompt = rng.normal(size=(1, 3, d)).astype("float32")
    prompt_mask = np.ones((1, 3), bool)
    plain = decoder(queries, memory, skips, prompt, prompt_mask)["pred_masks"]
    split = decoder(
        queries, memory, decoder.convolve_skips(skips), prompt, prompt_mask, skips_convolved=True
    )["pred_masks"]
    assert keras.backend.standardize_dtype(split.dtype) == "bfloat16"
    expected = keras.ops.convert_to_numpy(keras.ops.cast(plain, "float32"))
    got = keras.ops.convert_to_numpy(keras.ops.cast(split, "float32"))
    assert np.abs(got - expected).max() < 0.05 * max(1.0, np.abs(expected).max())

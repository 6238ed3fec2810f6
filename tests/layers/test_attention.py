import keras
import numpy as np

from keras_sam3.layers.attention import Attention


def _manual(layer, q_in, kv_in, mask=None, bias=None):
    w = {v.path.split("/")[-2] + "/" + v.path.split("/")[-1]: keras.ops.convert_to_numpy(v) for v in layer.weights}
    h, d = layer.num_heads, layer.head_dim

    def proj(x, name):
        return x @ w[f"{name}/kernel"] + w[f"{name}/bias"]

    q = proj(q_in, "q_proj").reshape(*q_in.shape[:2], h, d)
    k = proj(kv_in, "k_proj").reshape(*kv_in.shape[:2], h, d)
    v = proj(kv_in, "v_proj").reshape(*kv_in.shape[:2], h, d)
    logits = np.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(d)
    if bias is not None:
        logits = logits + bias
    if mask is not None:
        logits = np.where(mask, logits, -1e9)
    p = np.exp(logits - logits.max(-1, keepdims=True))
    p = p / p.sum(-1, keepdims=True)
    out = np.einsum("bhqk,bkhd->bqhd", p, v).reshape(*q_in.shape[:2], h * d)
    return out @ w["o_proj/kernel"] + w["o_proj/bias"]


def test_cross_attention_with_mask_and_bias_matches_softmax():
    rng = np.random.default_rng(0)
    q = rng.normal(size=(2, 3, 8)).astype("float32")
    kv = rng.normal(size=(2, 5, 12)).astype("float32")
    mask = rng.random((2, 1, 1, 5)) > 0.3
    mask[..., 0] = True
    bias = rng.normal(size=(2, 2, 3, 5)).astype("float32")
    layer = Attention(hidden_dim=8, num_heads=2)
    out = layer(q, kv, attention_mask=mask, attention_bias=bias)
    expected = _manual(layer, q, kv, mask=mask, bias=bias)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(out), expected, atol=1e-5)
    # Mask alone and bias alone take the same single call.
    out = layer(q, kv, attention_mask=mask)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(out), _manual(layer, q, kv, mask=mask), atol=1e-5
    )


def test_fully_masked_row_is_finite():
    layer = Attention(hidden_dim=8, num_heads=2)
    x = np.ones((1, 3, 8), "float32")
    mask = np.zeros((1, 1, 1, 3), bool)
    out = keras.ops.convert_to_numpy(layer(x, attention_mask=mask, attention_bias=np.zeros((1, 2, 3, 3), "float32")))
    assert np.all(np.isfinite(out))


def test_inner_dim_and_config_round_trip():
    layer = Attention(hidden_dim=8, num_heads=2, inner_dim=4, output_name="out_proj")
    out = layer(np.ones((1, 3, 8), "float32"))
    assert out.shape == (1, 3, 8)
    assert [v.path.split("/")[-2] for v in layer.weights][-1] == "out_proj"
    clone = Attention.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()

import keras
import numpy as np
import pytest

from keras_sam3.ops.attention import dot_product_attention


def _np(x):
    return keras.ops.convert_to_numpy(x)


def _qkv(tq=23, tk=17, heads=3, depth=8, batch=2, seed=0):
    rng = np.random.default_rng(seed)
    q = rng.normal(size=(batch, tq, heads, depth)).astype("float32")
    k = rng.normal(size=(batch, tk, heads, depth)).astype("float32")
    v = rng.normal(size=(batch, tk, heads, depth)).astype("float32")
    return q, k, v


@pytest.mark.parametrize("max_logits", [1, 2 * 3 * 17 * 4, 2 * 3 * 17 * 7, 10**9])
@pytest.mark.parametrize("extra", ["none", "bias", "mask", "both"])
def test_chunked_equals_keras_attention(max_logits, extra):
    """Any chunking (one query per chunk, uneven last chunk, none) gives
    Keras' attention; bias and mask broadcast over queries."""
    q, k, v = _qkv()
    rng = np.random.default_rng(1)
    bias = rng.normal(size=(2, 3, 1, 17)).astype("float32") if extra in ("bias", "both") else None
    mask = (rng.uniform(size=(2, 1, 1, 17)) > 0.3) if extra in ("mask", "both") else None
    if extra == "both":
        # As the Attention layer does: the mask folded into the bias.
        bias = np.where(mask, bias, -1e9).astype("float32")
        mask = None
    expected = keras.ops.dot_product_attention(q, k, v, bias=bias, mask=mask, scale=0.3)
    out = dot_product_attention(q, k, v, bias=bias, mask=mask, scale=0.3, max_logits=max_logits)
    assert tuple(out.shape) == q.shape
    np.testing.assert_allclose(_np(out), _np(expected), rtol=1e-5, atol=1e-5)


def test_chunked_inside_a_compiled_model():
    """Under jit / tf.function (a functional model's predict) as eagerly."""
    q, k, v = _qkv(tq=30, tk=30)
    inputs = [keras.Input((30, 3, 8)) for _ in range(3)]

    class Chunked(keras.layers.Layer):
        def call(self, q, k, v):
            return dot_product_attention(q, k, v, max_logits=3 * 30 * 7)

    model = keras.Model(inputs, Chunked()(*inputs))
    expected = keras.ops.dot_product_attention(q, k, v)
    np.testing.assert_allclose(model.predict_on_batch([q, k, v]), _np(expected), rtol=1e-5, atol=1e-5)


def test_chunked_gradient_equals_keras_attention():
    q, k, v = _qkv(tq=12, tk=9, batch=1)
    inputs = [keras.Input((12, 3, 8)), keras.Input((9, 3, 8)), keras.Input((9, 3, 8))]
    grads = []
    for attend in (
        keras.ops.dot_product_attention,
        lambda q, k, v: dot_product_attention(q, k, v, max_logits=3 * 9 * 5),
    ):
        class Wrap(keras.layers.Layer):
            def __init__(self):
                super().__init__()
                self.dense = keras.layers.Dense(8)

            def call(self, q, k, v):
                return attend(self.dense(q), k, v)

        wrap = Wrap()
        model = keras.Model(inputs, wrap(*inputs))
        dense = wrap.dense
        dense.kernel.assign(np.eye(8, dtype="float32") * 0.7)
        dense.bias.assign(np.full(8, 0.1, "float32"))
        model.compile(optimizer=keras.optimizers.SGD(1.0), loss="mse")
        model.train_on_batch([q, k, v], np.ones_like(q))
        grads.append(_np(dense.kernel))
    assert not np.allclose(grads[0], np.eye(8) * 0.7)  # a step was taken
    np.testing.assert_allclose(grads[0], grads[1], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "step_logits, head_logits",
    [(10**9, 10**9), (1, 10**9), (2 * 23 * 17, 10**9), (1, 5 * 17), (2 * 23 * 17, 7 * 17)],
)
def test_head_loop_equals_keras_attention(monkeypatch, step_logits, head_logits):
    """JAX's and TensorFlow's loops over (batch, head) pairs, any number per
    step and with uneven query chunks, give Keras' attention (PyTorch takes
    Keras' op; the test runs there too)."""
    from keras_sam3.ops import attention

    monkeypatch.setattr(attention, "JAX_LOOP_MIN_LOGITS", 1)
    monkeypatch.setattr(attention, "TF_LOOP_MIN_LOGITS", 1)
    monkeypatch.setattr(attention, "JAX_STEP_LOGITS", step_logits)
    monkeypatch.setattr(attention, "JAX_HEAD_LOGITS", head_logits)
    q, k, v = _qkv()
    expected = keras.ops.dot_product_attention(q, k, v, scale=0.3)
    # TensorFlow chunks a head's queries past max_logits.
    out = dot_product_attention(q, k, v, scale=0.3, max_logits=head_logits)
    assert tuple(out.shape) == q.shape
    np.testing.assert_allclose(_np(out), _np(expected), rtol=1e-5, atol=1e-5)


def test_head_loop_gradient_and_bfloat16(monkeypatch):
    from keras_sam3.ops import attention

    monkeypatch.setattr(attention, "JAX_LOOP_MIN_LOGITS", 1)
    monkeypatch.setattr(attention, "TF_LOOP_MIN_LOGITS", 1)
    monkeypatch.setattr(attention, "JAX_HEAD_LOGITS", 4 * 9)
    q, k, v = _qkv(tq=12, tk=9, batch=1)
    half = [keras.ops.cast(x, "bfloat16") for x in (q, k, v)]
    out = dot_product_attention(*half, max_logits=4 * 9)
    assert keras.backend.standardize_dtype(out.dtype) == "bfloat16"
    expected = keras.ops.dot_product_attention(q, k, v)
    np.testing.assert_allclose(_np(keras.ops.cast(out, "float32")), _np(expected), atol=0.05)
    if keras.backend.backend() == "jax":
        import jax

        loss = lambda f: lambda q: (f(q, k, v) ** 2).sum()  # noqa: E731
        got = jax.jit(jax.grad(loss(dot_product_attention)))(q)  # traced and compiled
        want = jax.grad(loss(keras.ops.dot_product_attention))(q)
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-4, atol=1e-5)
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        def grad(f):
            @tf.function
            def step(q):
                with tf.GradientTape() as tape:
                    tape.watch(q)
                    loss = tf.reduce_sum(f(q, k, v, max_logits=4 * 9) ** 2)
                return tape.gradient(loss, q)

            return step(tf.constant(q)).numpy()

        want = grad(lambda q, k, v, max_logits: keras.ops.dot_product_attention(q, k, v))
        np.testing.assert_allclose(grad(dot_product_attention), want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("tq, heads", [(1500, 2), (3000, 1), (3000, 2)])
def test_head_loop_at_the_shipped_thresholds(tq, heads):
    """Past 2**22 logits (JAX loops; 3,000 queries are chunked per head)
    and 2**24 (TensorFlow loops)."""
    q, k, v = _qkv(tq=tq, tk=tq, heads=heads, depth=8, batch=1)
    expected = keras.ops.dot_product_attention(q, k, v)
    np.testing.assert_allclose(_np(dot_product_attention(q, k, v)), _np(expected), rtol=1e-4, atol=1e-5)

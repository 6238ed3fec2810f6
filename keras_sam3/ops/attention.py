"""Scaled dot-product attention that bounds the size of its logits."""

import math

import keras
from keras import ops

# 2**26 float32 logits (256 MB) per chunk.
MAX_LOGITS = 2**26
# JAX's head loop: logits of one iteration, and of one (batch, head) pair
# before its queries are chunked (measured on this CPU, docs/benchmarks.md).
JAX_STEP_LOGITS = 2**21
JAX_HEAD_LOGITS = 2**22
# Attention smaller than this stays in one XLA op (a loop costs more).
JAX_LOOP_MIN_LOGITS = 2**22
# TensorFlow's fused softmax is faster in one op while the logits are cached.
TF_LOOP_MIN_LOGITS = 2**24


def dot_product_attention(q, k, v, bias=None, mask=None, scale=None, max_logits=MAX_LOGITS):
    """`keras.ops.dot_product_attention`, in query chunks when it is large.

    JAX's and TensorFlow's attention on CPU materialize the `(B, h, Tq, Tk)`
    logits and their softmax: a global layer of the ViT at 1008 px (16
    heads over 5,184 tokens) needs 3.3 GB of temporaries. When the logits
    would exceed `max_logits` elements, the queries go through in equal
    chunks under `keras.ops.map` (a sequential loop under `jit` and
    `tf.function`, so one chunk's temporaries are live at a time: 0.6 GB for
    that layer); every query row still sees every key, so the result is
    the same softmax up to float rounding. PyTorch's kernels never build the
    full logits, so it always takes Keras' op directly. Attention without
    bias or mask past `JAX_LOOP_MIN_LOGITS` logits on JAX, or
    `TF_LOOP_MIN_LOGITS` on TensorFlow, loops over (batch, head) pairs
    instead (`_jax_head_loop`, `_tf_head_loop`: 4x and 1.2x faster on CPU).

    Args:
        q: `(B, Tq, h, d)`.
        k, v: `(B, Tk, h, d)`.
        bias: optional, broadcastable to `(B, h, Tq, Tk)`, added to the
            scaled logits.
        mask: optional bool, broadcastable to `(B, h, Tq, Tk)`; True attends.
        scale: float, defaults to `d ** -0.5`.
        max_logits: int. Most logits one chunk may hold.

    Returns:
        `(B, Tq, h, d)`.

    Example:
    >>> q = keras.random.normal((1, 10, 2, 4))
    >>> tuple(dot_product_attention(q, q, q, max_logits=40).shape)
    (1, 10, 2, 4)
    """
    batch, tq, heads, depth = q.shape
    tk = k.shape[1]
    if bias is None and mask is None and all(isinstance(n, int) for n in (batch, tq, tk, heads)):
        logits = batch * heads * tq * tk
        scale_ = depth**-0.5 if scale is None else scale
        if keras.backend.backend() == "jax" and logits >= JAX_LOOP_MIN_LOGITS:
            return _jax_head_loop(q, k, v, scale_)
        if keras.backend.backend() == "tensorflow" and logits >= TF_LOOP_MIN_LOGITS:
            return _tf_head_loop(q, k, v, scale_, max_logits)
    full = lambda: ops.dot_product_attention(q, k, v, bias=bias, mask=mask, scale=scale)  # noqa: E731
    if keras.backend.backend() == "torch" or not all(isinstance(n, int) for n in (tq, tk, heads)):
        return full()
    # An unknown batch (symbolic tracing) counts as one.
    per_query = heads * tk * (batch if isinstance(batch, int) else 1)
    chunks = math.ceil(tq * per_query / max_logits)
    if chunks <= 1:
        return full()
    # A bias or mask that varies along the queries would be chunked too;
    # SAM 3's large attentions have neither (the ViT, the DETR encoder).
    for extra in (bias, mask):
        # Only a query axis known to be 1 is shared by every chunk.
        if extra is not None and (len(extra.shape) < 2 or extra.shape[-2] != 1):
            return full()
    chunks, size = _even_chunks(tq, chunks)
    padded = ops.pad(q, ((0, 0), (0, chunks * size - tq), (0, 0), (0, 0)))
    # (B, n * c, h, d) -> (n, B, c, h, d)
    pieces = ops.transpose(ops.reshape(padded, (-1, chunks, size, heads, depth)), (1, 0, 2, 3, 4))
    out = ops.map(lambda piece: ops.dot_product_attention(piece, k, v, bias=bias, mask=mask, scale=scale), pieces)
    # (n, B, c, h, d) -> (B, n * c, h, d) -> (B, Tq, h, d)
    out = ops.reshape(ops.transpose(out, (1, 0, 2, 3, 4)), (-1, chunks * size, heads, depth))
    return out[:, :tq]


def _even_chunks(length, chunks):
    """`(n, c)`: at most `chunks` pieces of equal size `c`, `n * c >= length`."""
    size = math.ceil(length / chunks)
    return math.ceil(length / size), size


def _one_head_in_query_chunks(attend, q, k, v, max_logits):
    """`attend(q, k, v)` for one head `(Tq, d)`, in query chunks under
    `keras.ops.map` when `Tq * Tk` passes `max_logits` (the loops' inner step)."""
    tq, depth = q.shape
    chunks = math.ceil(tq * k.shape[0] / max_logits)
    if chunks <= 1:
        return attend(q, k, v)
    chunks, size = _even_chunks(tq, chunks)
    # (Tq, d) -> (n, c, d), zero queries as padding (cropped below)
    pieces = ops.reshape(ops.pad(q, ((0, chunks * size - tq), (0, 0))), (chunks, size, depth))
    out = ops.map(lambda piece: attend(piece, k, v), pieces)
    return ops.reshape(out, (chunks * size, depth))[:tq]


def _jax_head_loop(q, k, v, scale):
    """Attention one (batch, head) pair at a time, heads first, on JAX.

    XLA on CPU runs `jax.nn.dot_product_attention` over every head at once
    with the heads last: at 1008 px a global ViT layer takes 3.0 s where
    PyTorch's fused kernel takes 0.42, a windowed one 0.36 s vs 0.06. The
    same softmax, a few heads per step of a `lax.map` (so one step's logits
    stay small enough to be cached) and, for long sequences, in query
    chunks: 0.65 s and 0.08 s; the DETR encoder's self-attention (8 heads
    of 32) 1.32 -> 0.20 s. Exact up to float rounding; differentiable.
    """
    import jax
    import jax.numpy as jnp

    batch, tq, heads, depth = q.shape
    tk = k.shape[1]
    dtype = q.dtype

    def heads_first(x):
        # (B, T, h, d) -> (B * h, T, d)
        return jnp.reshape(jnp.transpose(x, (0, 2, 1, 3)), (batch * heads, x.shape[1], depth))

    def attend(qq, kk, vv):
        # (c, d) x (Tk, d) -> (c, Tk) -> (c, d)
        # float32 logits from bfloat16 inputs (a GPU would otherwise round
        # them to bfloat16 before the softmax; a no-op in float32).
        logits = jnp.einsum("qd,kd->qk", qq * jnp.asarray(scale, dtype), kk, preferred_element_type="float32")
        # The softmax's division moves after the second product, onto
        # (c, d) instead of (c, Tk): one pass less over the logits (-15%).
        weights = jnp.exp(logits - jax.lax.stop_gradient(logits.max(-1, keepdims=True)))
        out = jnp.einsum("qk,kd->qd", weights.astype(dtype), vv, preferred_element_type="float32")
        return (out / weights.sum(-1, keepdims=True)).astype(dtype)

    def one_head(qkv):
        return _one_head_in_query_chunks(attend, *qkv, JAX_HEAD_LOGITS)

    per_step = max(1, min(batch * heads, JAX_STEP_LOGITS // (tq * tk)))
    out = jax.lax.map(one_head, (heads_first(q), heads_first(k), heads_first(v)), batch_size=per_step)
    # (B * h, Tq, d) -> (B, Tq, h, d)
    return jnp.transpose(jnp.reshape(out, (batch, heads, tq, depth)), (0, 2, 1, 3))


def _tf_head_loop(q, k, v, scale, max_logits):
    """Attention one (batch, head) pair at a time, heads first, on TensorFlow.

    `tf.map_fn` over `B * h` pairs, two in flight, each TensorFlow's fused
    softmax over one head's logits (queries in chunks past `max_logits`).
    At 1008 px on this CPU: a global ViT layer 0.72 -> 0.59 s, a windowed
    one 0.107 -> 0.078 s, the DETR encoder's self-attention 0.30 -> 0.24 s.
    Exact up to float rounding; differentiable.
    """
    import tensorflow as tf

    batch, tq, heads, depth = q.shape
    dtype = q.dtype

    def heads_first(x):
        # (B, T, h, d) -> (B * h, T, d)
        return tf.reshape(tf.transpose(x, (0, 2, 1, 3)), (batch * heads, x.shape[1], depth))

    def attend(qq, kk, vv):
        # (c, d) x (Tk, d) -> (c, Tk) -> (c, d)
        logits = tf.matmul(qq * tf.cast(scale, dtype), kk, transpose_b=True)
        weights = tf.cast(tf.nn.softmax(tf.cast(logits, "float32"), axis=-1), dtype)
        return tf.matmul(weights, vv)

    out = tf.map_fn(
        lambda qkv: _one_head_in_query_chunks(attend, *qkv, max_logits),
        (heads_first(q), heads_first(k), heads_first(v)),
        fn_output_signature=dtype,
        parallel_iterations=2,
    )
    # (B * h, Tq, d) -> (B, Tq, h, d)
    return tf.transpose(tf.reshape(out, (batch, heads, tq, depth)), (0, 2, 1, 3))

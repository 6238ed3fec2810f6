"""Scaled dot-product attention that bounds the size of its logits."""

import math

import keras
from keras import ops

# 2**26 float32 logits (256 MB) per chunk.
MAX_LOGITS = 2**26


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
    full logits, so it always takes Keras' op directly.

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
    >>> dot_product_attention(q, q, q, max_logits=40).shape
    (1, 10, 2, 4)
    """
    batch, tq, heads, depth = q.shape
    tk = k.shape[1]
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
    size = math.ceil(tq / chunks)
    chunks = math.ceil(tq / size)
    padded = ops.pad(q, ((0, 0), (0, chunks * size - tq), (0, 0), (0, 0)))
    # (B, n * c, h, d) -> (n, B, c, h, d)
    pieces = ops.transpose(ops.reshape(padded, (-1, chunks, size, heads, depth)), (1, 0, 2, 3, 4))
    out = ops.map(lambda piece: ops.dot_product_attention(piece, k, v, bias=bias, mask=mask, scale=scale), pieces)
    # (n, B, c, h, d) -> (B, n * c, h, d) -> (B, Tq, h, d)
    out = ops.reshape(ops.transpose(out, (1, 0, 2, 3, 4)), (-1, chunks * size, heads, depth))
    return out[:, :tq]

"""Bilinear resizing of stacks of masks, for the training loss."""

from keras import ops


def resize_masks(masks, size):
    """`(B, n, h, w)` -> `(B, n, H, W)`, bilinear with half-pixel centres.

    `size` may hold tensors where the targets' resolution is unknown while
    tracing (TensorFlow retraces with such shapes when it changes between
    batches); `keras.ops.image.resize` takes ints only, so that case calls
    `tf.image.resize`, the op Keras' own TensorFlow resize runs. A size
    equal to the masks' own returns them as they are.

    Args:
        masks: `(B, n, h, w)` float.
        size: `(H, W)`: ints, or scalar tensors on TensorFlow.
    """
    static = all(isinstance(n, int) for n in size)
    if static and tuple(masks.shape[2:]) == tuple(size):
        return masks
    batch, count, h, w = ops.shape(masks)
    # (B, n, h, w) -> (B*n, h, w, 1)
    flat = ops.reshape(masks, (-1, h, w, 1))
    if static:
        flat = ops.image.resize(flat, size, interpolation="bilinear", antialias=False)
    else:
        import tensorflow as tf

        flat = tf.image.resize(flat, tf.stack(size), method="bilinear", antialias=False)
    return ops.reshape(flat, (batch, count, size[0], size[1]))

"""`x @ kernel + bias` as one fused kernel where the backend has one."""

import keras


def torch_operands(x, kernel, bias):
    """PyTorch tensors of `x`, `kernel` and `bias` (or `None`), and whether
    they share one floating dtype (the fused kernels' precondition; other
    cases keep Keras' ops and their type promotion)."""
    x = keras.ops.convert_to_tensor(x)
    kernel = keras.ops.convert_to_tensor(kernel)
    bias = None if bias is None else keras.ops.convert_to_tensor(bias)
    same = x.dtype == kernel.dtype and (bias is None or bias.dtype == x.dtype)
    return x, kernel, bias, same and x.dtype.is_floating_point


def linear(x, kernel, bias=None):
    """Affine map over the last axis: `x @ kernel + bias`.

    On PyTorch this is one `torch.nn.functional.linear` call (a single
    `addmm` with the bias folded in, what `nn.Linear` runs); Keras' own
    `Dense` runs a matmul and then a separate add, one more pass over the
    output, which costs 10-20% of a large projection on CPU
    (docs/benchmarks.md). JAX and TensorFlow fuse the add under
    compilation, so they keep the plain expression.

    Args:
        x: tensor `(..., D_in)`.
        kernel: tensor `(D_in, D_out)` (Keras' `Dense` layout).
        bias: tensor `(D_out,)` or `None`.

    Returns:
        Tensor `(..., D_out)`.

    Example:
    >>> linear(keras.ops.ones((2, 3)), keras.ops.ones((3, 4)), keras.ops.ones((4,))).shape
    (2, 4)
    """
    if keras.backend.backend() == "torch":
        import torch

        tx, tk, tb, ready = torch_operands(x, kernel, bias)
        if ready:
            # (D_in, D_out) -> (D_out, D_in): a view; addmm reads it transposed.
            return torch.nn.functional.linear(tx, tk.T, tb)
    y = keras.ops.matmul(x, kernel)
    return y if bias is None else keras.ops.add(y, bias)

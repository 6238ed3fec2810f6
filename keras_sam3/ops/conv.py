"""Channels-last 2-D convolutions with the bias folded in, without layout copies on PyTorch."""

import keras

from keras_sam3.ops.linear import torch_operands


def _torch_ready(x, kernel, bias):
    tx, tk, tb, ready = torch_operands(x, kernel, bias)
    return tx, tk, tb, ready and tx.ndim == 4


def _pairs(value):
    return tuple(value) if isinstance(value, (tuple, list)) else (value, value)


def conv2d(x, kernel, bias=None, strides=1, padding="valid", dilation_rate=1):
    """`keras.ops.conv` (channels last) plus `bias`.

    On PyTorch the channels-last input is handed to `conv2d` as an NCHW view
    in channels-last memory, the layout oneDNN computes in, and the bias is
    folded into the call. `keras.ops.conv` copies the input to NCHW and
    back to channels-last memory before the convolution and then adds the
    bias in a separate pass: three extra passes over the feature map, which
    cost 7x the convolution itself for a 1x1 projection of a 144 x 144 x 256
    map on this CPU (docs/benchmarks.md). Other backends, or a "same"
    padding PyTorch cannot express symmetrically, keep Keras' op.

    Args:
        x: tensor `(B, H, W, C_in)`.
        kernel: tensor `(kh, kw, C_in / groups, C_out)` (Keras' layout).
        bias: tensor `(C_out,)` or `None`.
        strides, padding, dilation_rate: as `keras.ops.conv`.

    Returns:
        Tensor `(B, H', W', C_out)`.

    Example:
    >>> conv2d(keras.ops.ones((1, 4, 4, 2)), keras.ops.ones((3, 3, 2, 5)), padding="same").shape
    (1, 4, 4, 5)
    """
    if keras.backend.backend() == "torch":
        import torch

        tx, tk, tb, ready = _torch_ready(x, kernel, bias)
        strides, dilation = _pairs(strides), _pairs(dilation_rate)
        kh, kw = tk.shape[:2]
        pad = 0
        if padding == "same":
            # Symmetric only: an odd kernel at stride 1.
            if strides == (1, 1) and kh % 2 and kw % 2:
                pad = ((kh - 1) * dilation[0] // 2, (kw - 1) * dilation[1] // 2)
            else:
                ready = False
        if ready:
            groups = tx.shape[-1] // tk.shape[2]
            # (B, H, W, C) -> (B, C, H, W), (kh, kw, C_in, C_out) -> (C_out, C_in, kh, kw): views.
            y = torch.nn.functional.conv2d(
                tx.permute(0, 3, 1, 2),
                tk.permute(3, 2, 0, 1),
                tb,
                stride=strides,
                padding=pad,
                dilation=dilation,
                groups=groups,
            )
            return y.permute(0, 2, 3, 1)  # (B, C, H, W) view -> (B, H, W, C)
    y = keras.ops.conv(x, kernel, strides=strides, padding=padding, dilation_rate=dilation_rate)
    return y if bias is None else keras.ops.add(y, bias)


def conv2d_transpose(x, kernel, bias=None, strides=1, padding="valid"):
    """`keras.ops.conv_transpose` (channels last) plus `bias`; fused on
    PyTorch as `conv2d` is, for "valid" padding with the kernel no larger
    than the stride (the FPN's 2 x 2 / 2 upsampling).

    Args:
        x: tensor `(B, H, W, C_in)`.
        kernel: tensor `(kh, kw, C_out, C_in)` (Keras' layout).
        bias: tensor `(C_out,)` or `None`.
        strides, padding: as `keras.ops.conv_transpose`.

    Returns:
        Tensor `(B, H', W', C_out)`.

    Example:
    >>> conv2d_transpose(keras.ops.ones((1, 4, 4, 2)), keras.ops.ones((2, 2, 5, 2)), strides=2).shape
    (1, 8, 8, 5)
    """
    if keras.backend.backend() == "torch":
        import torch

        tx, tk, tb, ready = _torch_ready(x, kernel, bias)
        strides = _pairs(strides)
        if ready and padding == "valid" and tk.shape[0] <= strides[0] and tk.shape[1] <= strides[1]:
            # (kh, kw, C_out, C_in) -> (C_in, C_out, kh, kw): a view.
            y = torch.nn.functional.conv_transpose2d(tx.permute(0, 3, 1, 2), tk.permute(3, 2, 0, 1), tb, stride=strides)
            return y.permute(0, 2, 3, 1)
    y = keras.ops.conv_transpose(x, kernel, strides=strides, padding=padding)
    return y if bias is None else keras.ops.add(y, bias)

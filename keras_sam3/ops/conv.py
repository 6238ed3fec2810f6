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
    >>> tuple(conv2d(keras.ops.ones((1, 4, 4, 2)), keras.ops.ones((3, 3, 2, 5)), padding="same").shape)
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
    than the stride (the FPN's 2 x 2 / 2 upsampling). On JAX a "valid"
    kernel equal to its stride runs as one matrix product
    (`_blockwise_conv_transpose`).

    Args:
        x: tensor `(B, H, W, C_in)`.
        kernel: tensor `(kh, kw, C_out, C_in)` (Keras' layout).
        bias: tensor `(C_out,)` or `None`.
        strides, padding: as `keras.ops.conv_transpose`.

    Returns:
        Tensor `(B, H', W', C_out)`.

    Example:
    >>> tuple(conv2d_transpose(keras.ops.ones((1, 4, 4, 2)), keras.ops.ones((2, 2, 5, 2)), strides=2).shape)
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
    if keras.backend.backend() == "jax" and padding == "valid" and tuple(kernel.shape[:2]) == _pairs(strides):
        return _blockwise_conv_transpose(x, kernel, bias)
    y = keras.ops.conv_transpose(x, kernel, strides=strides, padding=padding)
    return y if bias is None else keras.ops.add(y, bias)


def _blockwise_conv_transpose(x, kernel, bias):
    """A transposed convolution whose kernel equals its stride, as one
    matrix product: each input pixel writes its own `kh x kw` output block.

    XLA on CPU computes the kernel gradient of `conv_transpose` as a dilated
    convolution: 30-80x slower than the product's gradient at the FPN's
    sizes (docs/training.md). TensorFlow's own gradient has no such cost,
    and its forward `conv_transpose` is a little faster.
    """
    kh, kw, channels, in_channels = kernel.shape
    shape = keras.ops.shape(x)
    height, width = shape[1], shape[2]
    # (kh, kw, C_out, C_in) -> (C_in, kh * kw * C_out)
    k = keras.ops.reshape(keras.ops.transpose(kernel, (3, 0, 1, 2)), (in_channels, kh * kw * channels))
    y = keras.ops.matmul(x, k)  # (B, H, W, kh * kw * C_out)
    y = keras.ops.reshape(y, (-1, height, width, kh, kw, channels))  # (B, H, W, kh, kw, C_out)
    y = keras.ops.transpose(y, (0, 1, 3, 2, 4, 5))  # (B, H, kh, W, kw, C_out)
    y = keras.ops.reshape(y, (-1, height * kh, width * kw, channels))
    return y if bias is None else keras.ops.add(y, bias)


def _phase_kernels(kernel):
    """`(3, 3, C_in, C_out)` -> `(2, 2, C_in, 4 * C_out)`: the 2 x 2 kernels
    of the four output phases `(a, b)` of a 3 x 3 convolution of a map
    upsampled 2x (nearest), phase `2a + b` in the last axis.

    Along one axis, even outputs `2i` read input rows `i - 1, i` with weights
    `k0, k1 + k2`; odd outputs `2i + 1` read rows `i, i + 1` with weights
    `k0 + k1, k2`."""
    k = kernel
    # Each phase as (row-pair kernel, column pair): rows first.
    rows = (keras.ops.stack([k[0], k[1] + k[2]]), keras.ops.stack([k[0] + k[1], k[2]]))
    phases = []
    for r in rows:  # r: (2, 3, C_in, C_out)
        phases.append(keras.ops.stack([r[:, 0], r[:, 1] + r[:, 2]], axis=1))
        phases.append(keras.ops.stack([r[:, 0] + r[:, 1], r[:, 2]], axis=1))
    return keras.ops.concatenate(phases, axis=-1)


def upsampled_conv3x3(x, kernel, skip=None):
    """The 3 x 3 "same" convolution (no bias) of `x` upsampled 2x (nearest),
    computed at `x`'s resolution, plus `skip`.

    Each output pixel of that convolution reads a 2 x 2 window of `x`, with
    one of four kernels (sums of the 3 x 3 taps, by its row and column
    parity). All four run as one 2 x 2 convolution with `4 * C_out`
    outputs over `x` padded by one, and the phases are interleaved into the
    `(2H, 2W)` grid: 16 products per input pixel and output channel
    instead of the 36 of convolving the upsampled map. Equal to
    `conv2d(upsample(x), kernel, padding="same") + skip` up to float
    rounding (the summed taps).

    Args:
        x: tensor `(B, H, W, C_in)`.
        kernel: tensor `(3, 3, C_in, C_out)` (Keras' layout), any float
            dtype.
        skip: optional tensor `(B, 2H, 2W, C_out)` of `x`'s dtype, added.

    Returns:
        Tensor `(B, 2H, 2W, C_out)`.

    Example:
    >>> tuple(upsampled_conv3x3(keras.ops.ones((1, 4, 4, 2)), keras.ops.ones((3, 3, 2, 5))).shape)
    (1, 8, 8, 5)
    """
    if tuple(kernel.shape[:2]) != (3, 3):
        raise ValueError(f"Expected a 3 x 3 kernel, got {tuple(kernel.shape[:2])}.")
    _, height, width, _ = x.shape
    channels = kernel.shape[-1]
    padded = keras.ops.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    # The taps are summed in the kernel's dtype (float32 variables under
    # mixed precision), then cast to the input's.
    phases = keras.ops.cast(_phase_kernels(kernel), x.dtype)
    y = conv2d(padded, phases)  # (B, H + 1, W + 1, 4 * C_out)
    y = keras.ops.reshape(y, (-1, height + 1, width + 1, 2, 2, channels))
    # Phase (a, b) of output (i, j) is at padded window (i + a, j + b).
    rows = [
        keras.ops.stack([y[:, a : a + height, b : b + width, a, b] for b in range(2)], axis=3)
        for a in range(2)
    ]
    y = keras.ops.stack(rows, axis=2)  # (B, H, 2, W, 2, C_out)
    if skip is not None:
        y = y + keras.ops.reshape(skip, (-1, height, 2, width, 2, channels))
    return keras.ops.reshape(y, (-1, 2 * height, 2 * width, channels))

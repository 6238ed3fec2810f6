"""`x @ kernel + bias` as one fused kernel where the backend has one."""

import os

import keras


def _cpu_vendor():
    """The first `vendor_id` of /proc/cpuinfo (`"GenuineIntel"`,
    `"AuthenticAMD"`, ...), or `""` where there is none."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("vendor_id"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def _use_onednn(setting, vendor):
    """Whether inference products on CPU take oneDNN's inner-product.

    `KERAS_SAM3_ONEDNN_LINEAR` = `"1"` or `"0"` decides; unset, every CPU but
    Intel's. PyTorch's BLAS on x86 is MKL, Intel's own: on an Intel Xeon
    (AVX-512) it ran the ViT's products 5-20% faster than oneDNN with our
    transposed kernel view, while on an AMD EPYC (Zen 5) oneDNN ran them at
    twice MKL's speed (docs/benchmarks.md)."""
    if setting in ("0", "1"):
        return setting == "1"
    return vendor != "GenuineIntel"


_ONEDNN = _use_onednn(os.environ.get("KERAS_SAM3_ONEDNN_LINEAR"), _cpu_vendor())


def _exact_gelu(x):
    return keras.ops.gelu(x, approximate=False)


# The activations `linear` applies, by name: the function, and oneDNN's
# post-op for it (attr, algorithm of `_linear_pointwise`; "gelu" is the
# exact, erf one).
_ACTIVATIONS = {
    None: (None, "none", ""),
    "relu": (keras.ops.relu, "relu", ""),
    "gelu": (_exact_gelu, "gelu", "none"),
}
FUSED_ACTIVATIONS = tuple(name for name in _ACTIVATIONS if name is not None)  # "relu", "gelu"


def activation_function(name):
    """The function `linear(..., activation=name)` applies after the
    product (`None` for `None`)."""
    if name not in _ACTIVATIONS:
        raise ValueError(f"Unknown activation {name!r}; expected None, 'relu' or 'gelu'.")
    return _ACTIVATIONS[name][0]


def _onednn_linear(tx, tk, tb, activation=None):
    """`activation(tx @ tk + tb)` by oneDNN, or `None` where that does not
    apply. The activation (`None`, `"relu"` or the exact `"gelu"`) runs as
    oneDNN's post-op, in the product's own pass over the output.

    PyTorch's CPU `linear` runs its BLAS (MKL), which on an AMD EPYC (Zen 5)
    ran at half the speed of oneDNN's inner-product on the same products
    (169 vs 337 GFLOP/s on 5184 x 1024 x 4096, docs/benchmarks.md); on
    an Intel Xeon MKL is the faster one, so `_ONEDNN` leaves Intel CPUs to it.
    `torch.ops.mkldnn._linear_pointwise` (the op Inductor's CPU backend
    emits for `linear`) runs oneDNN; it has no
    backward, so only calls without autograd take it (inference: `predict`,
    `segment`), float32 on CPU.
    """
    global _ONEDNN
    import torch

    if not _ONEDNN or tx.device.type != "cpu" or tx.dtype != torch.float32:
        return None
    if torch.is_grad_enabled() and (tx.requires_grad or tk.requires_grad or (tb is not None and tb.requires_grad)):
        return None
    op = getattr(getattr(torch.ops, "mkldnn", None), "_linear_pointwise", None)
    if op is None or not torch.backends.mkldnn.is_available():
        return None
    try:
        _, attr, algorithm = _ACTIVATIONS[activation]
        return op(tx, tk.T, tb, attr, [], algorithm)
    except RuntimeError:  # a build or CPU without this kernel: BLAS from now on
        _ONEDNN = False
        return None


def torch_operands(x, kernel, bias):
    """PyTorch tensors of `x`, `kernel` and `bias` (or `None`), and whether
    they share one floating dtype (the fused kernels' precondition; other
    cases keep Keras' ops and their type promotion)."""
    x = keras.ops.convert_to_tensor(x)
    kernel = keras.ops.convert_to_tensor(kernel)
    bias = None if bias is None else keras.ops.convert_to_tensor(bias)
    same = x.dtype == kernel.dtype and (bias is None or bias.dtype == x.dtype)
    return x, kernel, bias, same and x.dtype.is_floating_point


def torch_linear(tx, tk, tb, activation=None):
    """`linear` on PyTorch tensors of one floating dtype: oneDNN where
    `_onednn_linear` applies (the activation fused), else one
    `torch.nn.functional.linear` and the activation."""
    import torch

    function = activation_function(activation)
    y = _onednn_linear(tx, tk, tb, activation)
    if y is not None:
        return y
    # (D_in, D_out) -> (D_out, D_in): a view; addmm reads it transposed.
    y = torch.nn.functional.linear(tx, tk.T, tb)
    return y if function is None else function(y)


def linear(x, kernel, bias=None, activation=None):
    """Affine map over the last axis: `activation(x @ kernel + bias)`.

    On PyTorch this is one `torch.nn.functional.linear` call (a single
    `addmm` with the bias folded in, what `nn.Linear` runs); Keras' own
    `Dense` runs a matmul and then a separate add, one more pass over the
    output, which costs 10-20% of a large projection on CPU
    (docs/benchmarks.md). Without autograd, on a CPU not Intel's, it runs
    oneDNN's inner-product instead (`_onednn_linear`: twice BLAS' speed on an
    AMD EPYC CPU; `KERAS_SAM3_ONEDNN_LINEAR` = 1 / 0 forces the choice). JAX and TensorFlow fuse the add under compilation, so they keep
    the plain expression. oneDNN also applies `activation` in the same
    pass (its post-op; the same values as PyTorch's `relu` and erf `gelu`).

    Args:
        x: tensor `(..., D_in)`.
        kernel: tensor `(D_in, D_out)` (Keras' `Dense` layout).
        bias: tensor `(D_out,)` or `None`.
        activation: `None`, `"relu"` or `"gelu"` (exact, erf). Defaults to
            `None`.

    Returns:
        Tensor `(..., D_out)`.

    Example:
    >>> tuple(linear(keras.ops.ones((2, 3)), keras.ops.ones((3, 4)), keras.ops.ones((4,))).shape)
    (2, 4)
    """
    if keras.backend.backend() == "torch":
        import torch

        tx, tk, tb, ready = torch_operands(x, kernel, bias)
        if ready:
            return torch_linear(tx, tk, tb, activation)
    function = activation_function(activation)
    y = keras.ops.matmul(x, kernel)
    y = y if bias is None else keras.ops.add(y, bias)
    return y if function is None else function(y)

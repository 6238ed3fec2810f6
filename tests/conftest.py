"""Full float32 on GPUs: the parity bounds (1e-5 / 1e-4 of the reference's
scale) hold for float32 arithmetic, and GPUs trade it for TF32 by default
where the frameworks allow it: PyTorch's cuDNN convolutions and JAX's
float32 matrix products (`jax_default_matmul_precision`) round their inputs
to 10 mantissa bits, which put 5e-4 of the reference's scale into the FPN
(PyTorch) and failed the text encoder (JAX) on an H200. On CPUs these
switches are left alone. Only the running backend's framework is touched
(Keras imports it anyway).

On machines without an NVIDIA GPU, XLA compiles unoptimised machine code
(`--xla_backend_optimization_level=0`, unless `XLA_FLAGS` already names a
level): the tests' graphs are tiny, so compiling is most of their time on
JAX (each eager operation and each `fit` step is compiled), and LLVM's
optimisations took a third to a half of it on a 2-core CPU (a jitted
gradient of the tiny segmenter: 56 s -> 31 s). Fast-math stays off (an XLA
option of its own) and the suite's tolerances hold at both levels. GPU runs
keep XLA's defaults. Set before Keras imports JAX; test subprocesses
inherit it.

On CPUs XLA also compiles without its platform-dependent math
(`--xla_cpu_enable_platform_dependent_math=false`, unless `XLA_FLAGS`
already names it): with it, on an AVX-512 Xeon (2026-12-07), JAX's outputs
in `tests/parity/test_backbone_parity.py::test_boxes_only` were 2.4e-5 of
the reference's scale away (pred_masks; PyTorch and TensorFlow 3e-6 on the
same machine), above the 2e-5 bound; without it, 6.8e-6. The bounds are for
float32 arithmetic, so the tests measure the implementation without XLA's
machine-specific functions; users keep XLA's default (docs/parity.md).

Also the `count_layer_calls` and `keeps_keras_call` fixtures."""

import os
import shutil

if shutil.which("nvidia-smi") is None:
    for flag in ("--xla_backend_optimization_level=0", "--xla_cpu_enable_platform_dependent_math=false"):
        if flag[2:].split("=")[0] not in os.environ.get("XLA_FLAGS", ""):
            os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + flag).strip()

import keras  # noqa: E402
import numpy as np
import pytest

_backend = keras.backend.backend()
if _backend == "torch":
    import torch

    if torch.cuda.is_available():
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
elif _backend == "jax":
    import jax

    if jax.default_backend() == "gpu":
        jax.config.update("jax_default_matmul_precision", "highest")
elif _backend == "tensorflow":
    import tensorflow as tf

    if tf.config.list_physical_devices("GPU"):
        tf.config.experimental.enable_tensor_float_32_execution(False)


@pytest.fixture
def count_layer_calls(monkeypatch):
    """A function that, once called, makes every `keras.layers.Layer.__call__`
    append the layer's name to the list it returns."""

    def start():
        calls = []
        original = keras.layers.Layer.__call__

        def counting(self, *args, **kwargs):
            calls.append(self.name)
            return original(self, *args, **kwargs)

        monkeypatch.setattr(keras.layers.Layer, "__call__", counting)
        return calls

    return start


@pytest.fixture
def keeps_keras_call(count_layer_calls):
    """A check that `ours(x)`, called a second time, still goes through
    `Layer.__call__` and equals Keras' own layer `theirs` (dtype and values,
    within `tolerance`); returns the output."""

    def check(ours, theirs, x, tolerance):
        ours(x)
        calls = count_layer_calls()
        out = ours(x)
        assert calls == [ours.name]
        expected = theirs(x)
        assert keras.backend.standardize_dtype(out.dtype) == keras.backend.standardize_dtype(expected.dtype)
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(keras.ops.cast(out, "float32")),
            keras.ops.convert_to_numpy(keras.ops.cast(expected, "float32")),
            rtol=tolerance,
            atol=tolerance,
        )
        return out

    return check

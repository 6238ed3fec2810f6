import keras
import numpy as np
import pytest

from keras_sam3.layers.dense import Dense
from keras_sam3.ops.linear import linear


@pytest.mark.parametrize("shape", [(5, 3), (2, 5, 3), (2, 4, 5, 3)])
@pytest.mark.parametrize("use_bias", [True, False])
def test_linear_equals_matmul_plus_bias(shape, use_bias):
    rng = np.random.default_rng(0)
    x = rng.normal(size=shape).astype("float32")
    kernel = rng.normal(size=(3, 7)).astype("float32")
    bias = rng.normal(size=(7,)).astype("float32") if use_bias else None
    expected = x @ kernel + (bias if use_bias else 0.0)
    out = keras.ops.convert_to_numpy(linear(x, kernel, bias))
    assert out.shape == shape[:-1] + (7,)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


def test_linear_mixed_dtypes_fall_back_to_promotion():
    x = np.arange(6, dtype="int32").reshape(2, 3)
    kernel = np.ones((3, 2), "float32")
    out = keras.ops.convert_to_numpy(linear(x, kernel, np.ones((2,), "float32")))
    np.testing.assert_allclose(out, x @ kernel + 1.0)


def _pair(units=6, **kwargs):
    ours, theirs = Dense(units, **kwargs), keras.layers.Dense(units, **kwargs)
    ours.build((None, 4))
    theirs.build((None, 4))
    theirs.set_weights(ours.get_weights())
    return ours, theirs


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "mixed_bfloat16"])
def test_fused_dense_equals_keras_dense(dtype):
    ours, theirs = _pair(activation="gelu", dtype=dtype)
    x = np.random.default_rng(1).normal(size=(3, 2, 4)).astype("float32")
    a, b = ours(x), theirs(x)
    assert keras.backend.standardize_dtype(a.dtype) == keras.backend.standardize_dtype(b.dtype)
    tol = 1e-5 if dtype == "float32" else 2e-2
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(keras.ops.cast(a, "float32")),
        keras.ops.convert_to_numpy(keras.ops.cast(b, "float32")),
        rtol=tol,
        atol=tol,
    )


def test_fused_dense_gradient_equals_keras_dense():
    ours, theirs = _pair()
    x = np.random.default_rng(2).normal(size=(5, 4)).astype("float32")
    grads = []
    for layer in (ours, theirs):
        model = keras.Sequential([keras.Input((4,)), layer])
        model.compile(optimizer=keras.optimizers.SGD(1.0), loss="mse")
        model.train_on_batch(x, np.zeros((5, 6), "float32"))
        grads.append([keras.ops.convert_to_numpy(w) for w in layer.weights])
    for a, b in zip(*grads):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_fused_dense_lora_and_serialization():
    ours, theirs = _pair()
    for layer in (ours, theirs):
        layer.enable_lora(2)
        layer.lora_kernel_a.assign(np.linspace(-1, 1, 8).reshape(4, 2).astype("float32"))
        layer.lora_kernel_b.assign(np.full(layer.lora_kernel_b.shape, 0.3, "float32"))
    x = np.random.default_rng(3).normal(size=(2, 4)).astype("float32")
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(ours(x)), keras.ops.convert_to_numpy(theirs(x)), rtol=1e-5, atol=1e-5
    )
    assert [w.name for w in ours.trainable_weights] == [w.name for w in theirs.trainable_weights]
    assert "kernel" not in [w.name for w in ours.trainable_weights]
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(Dense(3, use_bias=False)))
    assert isinstance(clone, Dense) and clone.units == 3 and not clone.use_bias


def _linear_module():
    import sys

    return sys.modules["keras_sam3.ops.linear"]  # `keras_sam3.ops.linear` is the function


def test_onednn_is_the_default_on_cpus_other_than_intels():
    from keras_sam3.ops.linear import _use_onednn

    assert _use_onednn(None, "AuthenticAMD") and _use_onednn(None, "")
    assert not _use_onednn(None, "GenuineIntel")
    assert _use_onednn("1", "GenuineIntel") and not _use_onednn("0", "AuthenticAMD")


def test_inference_linear_takes_onednn_on_torch_cpu_and_matches(monkeypatch):
    """Without autograd PyTorch runs oneDNN's inner-product (ops.linear's
    `_onednn_linear`) where it is switched on; with autograd,
    `torch.nn.functional.linear`. Both equal the plain product on every
    backend."""
    monkeypatch.setattr(_linear_module(), "_ONEDNN", True)
    rng = np.random.default_rng(4)
    x = rng.normal(size=(2, 9, 16)).astype("float32")
    kernel = rng.normal(size=(16, 24)).astype("float32")
    bias = rng.normal(size=(24,)).astype("float32")
    expected = x @ kernel + bias
    np.testing.assert_allclose(keras.ops.convert_to_numpy(linear(x, kernel, bias)), expected, rtol=1e-5, atol=1e-5)
    if keras.backend.backend() == "torch":
        import torch

        from keras_sam3.ops.linear import _onednn_linear

        tx, tk, tb = (torch.from_numpy(a) for a in (x, kernel, bias))
        with torch.no_grad():
            fast = _onednn_linear(tx, tk, tb)
        assert fast is not None  # the oneDNN path applies
        np.testing.assert_allclose(fast.numpy(), expected, rtol=1e-5, atol=1e-5)
        tk.requires_grad_(True)
        assert _onednn_linear(tx, tk, tb) is None  # autograd: BLAS, which has a backward
        out = linear(tx, tk, tb)
        out.sum().backward()
        np.testing.assert_allclose(tk.grad.numpy(), np.broadcast_to(x.reshape(-1, 16).sum(0)[:, None], (16, 24)), rtol=1e-4)


def test_dense_skips_keras_call_machinery_on_torch(count_layer_calls):
    """On PyTorch, once called, `Dense` goes straight to the product (Keras'
    `Layer.__call__` cost about 0.1 ms a call); the result is Keras' own."""
    ours, theirs = _pair(activation="gelu")
    x = keras.ops.convert_to_tensor(np.random.default_rng(5).normal(size=(3, 2, 4)).astype("float32"))
    first = keras.ops.convert_to_numpy(ours(x))
    calls = count_layer_calls()
    again = keras.ops.convert_to_numpy(ours(x, training=False))
    assert calls == ([] if keras.backend.backend() == "torch" else [ours.name])
    np.testing.assert_array_equal(again, first)
    np.testing.assert_allclose(again, keras.ops.convert_to_numpy(theirs(x)), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("case", ["lora", "mixed_bfloat16", "activity_regularizer", "float64_input", "numpy_input"])
def test_dense_keeps_keras_call_where_it_matters(keeps_keras_call, case):
    kwargs = {"dtype": "mixed_bfloat16"} if case == "mixed_bfloat16" else {}
    if case == "activity_regularizer":
        kwargs["activity_regularizer"] = "l2"
    ours, theirs = _pair(**kwargs)
    if case == "lora":
        for layer in (ours, theirs):
            layer.enable_lora(2)
            layer.lora_kernel_a.assign(np.linspace(-1, 1, 8).reshape(4, 2).astype("float32"))
            layer.lora_kernel_b.assign(np.full(layer.lora_kernel_b.shape, 0.3, "float32"))
    x = np.random.default_rng(6).normal(size=(2, 4)).astype("float64" if case == "float64_input" else "float32")
    x = x if case == "numpy_input" else keras.ops.convert_to_tensor(x)
    keeps_keras_call(ours, theirs, x, 2e-2 if case == "mixed_bfloat16" else 1e-5)
    if case == "activity_regularizer":
        assert len(ours.losses) == 1


@pytest.mark.parametrize("activation", ["relu", "gelu"])
@pytest.mark.parametrize("onednn", [True, False])
def test_linear_applies_the_activation(monkeypatch, activation, onednn):
    monkeypatch.setattr(_linear_module(), "_ONEDNN", onednn)
    rng = np.random.default_rng(7)
    x = rng.normal(size=(2, 9, 16)).astype("float32")
    kernel = rng.normal(size=(16, 24)).astype("float32")
    bias = rng.normal(size=(24,)).astype("float32")
    pre = keras.ops.convert_to_tensor(x @ kernel + bias)
    act = keras.ops.relu(pre) if activation == "relu" else keras.ops.gelu(pre, approximate=False)
    expected = keras.ops.convert_to_numpy(act)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(linear(x, kernel, bias, activation)), expected, rtol=1e-5, atol=1e-5
    )
    if keras.backend.backend() == "torch":
        import torch

        from keras_sam3.ops.linear import _onednn_linear
        from keras_sam3.ops.linear import torch_linear

        operands = [torch.from_numpy(a) for a in (x, kernel, bias)]
        with torch.no_grad():
            fused = _onednn_linear(*operands, activation)
            out = torch_linear(*operands, activation)
        assert (fused is not None) == onednn  # oneDNN's post-op where switched on
        np.testing.assert_allclose(out.numpy(), expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="Unknown activation 'tanh'"):
        linear(x, kernel, bias, "tanh")


@pytest.mark.parametrize("activation", ["relu", "gelu"])
def test_dense_activated_equals_the_activation_of_the_call(count_layer_calls, monkeypatch, activation):
    ours, theirs = _pair()
    x = keras.ops.convert_to_tensor(np.random.default_rng(8).normal(size=(3, 2, 4)).astype("float32"))
    ours(x)
    fused = []
    if keras.backend.backend() == "torch":
        module = _linear_module()
        original = module._onednn_linear

        def spy(tx, tk, tb, act=None):
            fused.append(act)
            return original(tx, tk, tb, act)

        monkeypatch.setattr(module, "_onednn_linear", spy)
    calls = count_layer_calls()
    out = keras.ops.convert_to_numpy(ours.activated(x, activation))
    assert calls == ([] if keras.backend.backend() == "torch" else [ours.name])
    # On PyTorch the activation goes into the one product call.
    assert fused == ([activation] if keras.backend.backend() == "torch" else [])
    y = theirs(x)
    expected = keras.ops.relu(y) if activation == "relu" else keras.ops.gelu(y, approximate=False)
    np.testing.assert_allclose(out, keras.ops.convert_to_numpy(expected), rtol=1e-5, atol=1e-5)


def test_dense_activated_keeps_keras_call_with_lora(count_layer_calls):
    ours, theirs = _pair()
    for layer in (ours, theirs):
        layer.enable_lora(2)
        layer.lora_kernel_a.assign(np.linspace(-1, 1, 8).reshape(4, 2).astype("float32"))
        layer.lora_kernel_b.assign(np.full(layer.lora_kernel_b.shape, 0.3, "float32"))
    x = keras.ops.convert_to_tensor(np.random.default_rng(9).normal(size=(2, 4)).astype("float32"))
    ours(x)
    calls = count_layer_calls()
    out = keras.ops.convert_to_numpy(ours.activated(x, "relu"))
    assert calls == [ours.name]
    np.testing.assert_allclose(out, keras.ops.convert_to_numpy(keras.ops.relu(theirs(x))), rtol=1e-5, atol=1e-5)

"""Exact one-to-one (Hungarian) matching that runs inside compiled train steps.

The assignment itself is `scipy.optimize.linear_sum_assignment` on the host,
reached from each backend's compiled step through its own host-call
mechanism: `jax.pure_callback` under `jit`, `tf.numpy_function` under
`tf.function`, a plain call on PyTorch (whose train step runs eagerly). The
result is exactly scipy's, ties included, on every backend.

Errors found by the host call (bad target values, a non-finite cost) raise
`ValueError` from the step on TensorFlow and PyTorch. JAX does not raise
reliably from a `pure_callback` under `jit` (it logs the exception; the step
went on in some runs, in others a runtime error came later and left Keras'
variables empty), so there the host call records the message, returns `FAILED` in every slot, and the
caller turns that into a NaN loss; `raise_host_errors()` raises the recorded
message on the host once the step has run (the segmenter's `fit`,
`evaluate`, `train_on_batch` and `test_on_batch` do this after each batch,
and skip the failed step's update).
"""

import collections
import functools
import threading

import keras
import numpy as np
from keras import ops

FAILED = -2  # every slot of a JAX host call that found an error

_host_errors = collections.deque(maxlen=8)
_host_errors_lock = threading.Lock()


def _record_errors(host):
    """`host`, but an error is recorded instead of raised (JAX's host call)."""

    @functools.wraps(host)
    def recorded(cost, valid, *rest):
        try:
            return host(cost, valid, *rest)
        except ValueError as error:
            with _host_errors_lock:
                _host_errors.append(str(error))
            return np.full((cost.shape[0], cost.shape[2]), FAILED, "int32")

    return recorded


def raise_host_errors():
    """Raises `ValueError` with the message of the first error a JAX host
    call recorded since the last call (and forgets them); nothing otherwise.
    Call it after a jitted step's outputs are ready."""
    with _host_errors_lock:
        messages = list(dict.fromkeys(_host_errors))
        _host_errors.clear()
    if messages:
        raise ValueError(messages[0] + (f" (and {len(messages) - 1} more host-call errors)" if len(messages) > 1 else ""))


def clear_host_errors():
    """Forgets the errors JAX host calls recorded (say, before a new `fit`)."""
    with _host_errors_lock:
        _host_errors.clear()


def match_numpy(cost, valid, problems=None, messages=()):
    """Per-sample Hungarian matching of queries to valid ground truths.

    Args:
        cost: `(B, Q, G)` float array; finite on valid columns.
        valid: `(B, G)` bool array; invalid (padding) columns are ignored.
        problems: optional `(P,)` int array of counts, `messages` their `P`
            texts with a `{}` for the count: a count above zero raises
            `ValueError` with its text (see `hungarian_match`).

    Returns:
        `(B, G)` int32: the query assigned to each ground truth, `-1` for
        padding columns. When `G_valid > Q` only `Q` ground truths get a
        query; the others are `-1` too.
    """
    from scipy.optimize import linear_sum_assignment

    if problems is not None:
        found = [m.format(int(n)) for n, m in zip(np.asarray(problems).reshape(-1), messages) if n > 0]
        if found:
            raise ValueError(" ".join(found))
    cost = np.asarray(cost, "float64")
    valid = np.asarray(valid).astype(bool)
    if cost.ndim != 3 or valid.shape != (cost.shape[0], cost.shape[2]):
        raise ValueError(f"cost must be (B, Q, G) and valid (B, G); got {cost.shape}, {valid.shape}.")
    result = np.full(valid.shape, -1, "int32")
    for b in range(cost.shape[0]):
        columns = np.flatnonzero(valid[b])
        if len(columns) == 0:
            continue
        block = cost[b][:, columns]
        if not np.all(np.isfinite(block)):
            raise ValueError("The matching cost is not finite (NaN or inf in the predictions?).")
        rows, cols = linear_sum_assignment(block)
        result[b, columns[cols]] = rows
    return result


def hungarian_match(cost, valid, problems=None, messages=()):
    """`match_numpy` on backend tensors, usable inside `fit`'s compiled step.

    Args:
        cost: `(B, Q, G)` tensor (no gradient flows through the matching).
        valid: `(B, G)` bool or 0/1 tensor.
        problems: optional `(P,)` int tensor of counts computed in the step,
            and `messages` their `P` texts (`{}` for the count): a nonzero
            count raises `ValueError` from the host call. Inside a compiled
            step this is how a check on the data's values can stop `fit`
            with a message (TensorFlow wraps it in its runtime error; JAX
            records it, see the module docstring).

    Returns:
        `(B, G)` int32 tensor: the matched query per ground truth, -1 where
        there is none; on JAX under a trace, `FAILED` everywhere if the
        host call found an error (eagerly it raises at once).
    """
    cost = ops.stop_gradient(ops.cast(cost, "float32"))
    valid = ops.cast(valid, "bool")
    args = [cost, valid]
    if problems is not None:
        args.append(ops.cast(problems, "int32"))
    host = functools.partial(match_numpy, messages=tuple(messages))
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        if not any(isinstance(a, jax.core.Tracer) for a in args):
            # Eager: the host function runs here and raises as it is.
            return jax.numpy.asarray(host(*(np.asarray(a) for a in args)))
        shape = jax.ShapeDtypeStruct((cost.shape[0], cost.shape[2]), np.int32)
        return jax.pure_callback(_record_errors(host), shape, *args)
    if backend == "tensorflow":
        import tensorflow as tf

        result = tf.numpy_function(host, args, tf.int32, stateful=False)
        result.set_shape((cost.shape[0], cost.shape[2]))
        return result
    if backend == "torch":
        import torch

        result = host(*(a.detach().cpu().numpy() for a in args))
        return torch.as_tensor(result, device=cost.device)
    return ops.convert_to_tensor(host(*(ops.convert_to_numpy(a) for a in args)))


def one_to_many_match(quality, valid, topk, threshold):
    """Meta's one-to-many (DAC) matching, traceable: every ground truth takes
    the queries among its `topk` best whose quality passes `threshold`.

    `facebookresearch/sam3` `BinaryOneToManyMatcher`: a query matches a
    ground truth when its quality is above the `1 - topk / Q` quantile of
    that ground truth's qualities (`torch.quantile`'s linear interpolation)
    and above `threshold`. Those queries are always among the `topk` best,
    so they are returned as the `topk` best per ground truth with a flag.
    A query may match several ground truths.

    Args:
        quality: `(B, Q, G)`, higher is better (Meta's
            `alpha * sigmoid(logit) + (1 - alpha) * box IoU`).
        valid: `(B, G)` 1 for a real ground truth, 0 for padding.
        topk: int, `1 <= topk <= Q`.
        threshold: float.

    Returns:
        `(index, matched)`: int32 `(B, G, topk)` query indices and float
        `(B, G, topk)` 1 where the pair is matched.
    """
    num_queries = quality.shape[1]
    if not 1 <= topk <= num_queries:
        raise ValueError(f"The one-to-many matching takes 1 <= topk <= {num_queries} queries; got topk={topk}.")
    per_target = ops.transpose(quality, (0, 2, 1))  # (B, G, Q)
    ascending = ops.sort(per_target, axis=-1)
    position = (1.0 - topk / num_queries) * (num_queries - 1)
    low = int(np.floor(position))
    high = min(low + 1, num_queries - 1)
    fraction = position - low
    quantile = ascending[..., low] + (ascending[..., high] - ascending[..., low]) * fraction  # (B, G)
    best, index = ops.top_k(per_target, topk, sorted=True)  # (B, G, k)
    matched = (best > quantile[..., None]) & (best > threshold) & (valid[..., None] > 0)
    return ops.cast(index, "int32"), ops.cast(matched, quality.dtype)

"""Hungarian matching equals scipy's, inside each backend's compiled function."""

import keras
import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment

from keras_sam3.ops.matching import hungarian_match
from keras_sam3.ops.matching import match_numpy
from keras_sam3.ops.matching import one_to_many_match


def compiled(fn):
    """`fn` as the backend's train step compiles it (torch's runs eagerly)."""
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        return jax.jit(fn)
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.function(fn)
    return fn


def scipy_reference(cost, valid):
    result = np.full(valid.shape, -1)
    for b in range(cost.shape[0]):
        columns = np.flatnonzero(valid[b])
        if len(columns):
            rows, cols = linear_sum_assignment(cost[b][:, columns])
            result[b, columns[cols]] = rows
    return result


def cases():
    rng = np.random.default_rng(0)
    random = rng.normal(size=(3, 7, 4))
    tied = rng.integers(0, 3, size=(3, 6, 5)).astype("float64")  # many equal costs
    wide = rng.uniform(size=(2, 3, 5))  # more ground truths than queries
    valid = rng.uniform(size=(3, 4)) < 0.7
    valid[0] = False  # a prompt without ground truth
    return [
        (random, np.ones((3, 4), bool)),
        (random, valid),
        (tied, np.ones((3, 5), bool)),
        (np.zeros((2, 4, 3)), np.ones((2, 3), bool)),  # all tied
        (wide, np.ones((2, 5), bool)),
    ]


@pytest.mark.parametrize("case", range(5))
def test_equals_scipy_inside_a_compiled_function(case):
    cost, valid = cases()[case]
    expected = scipy_reference(cost, valid)
    np.testing.assert_array_equal(match_numpy(cost, valid), expected)
    fn = compiled(lambda c, v: hungarian_match(c, v))
    result = fn(keras.ops.convert_to_tensor(cost, "float32"), keras.ops.convert_to_tensor(valid))
    # float32 on device vs float64 here: the random costs have no near-ties.
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(result), expected)


def test_more_ground_truths_than_queries_leave_some_unmatched():
    result = match_numpy(np.random.default_rng(1).uniform(size=(1, 2, 4)), np.ones((1, 4), bool))
    assert sorted(result[0][result[0] >= 0].tolist()) == [0, 1] and (result[0] == -1).sum() == 2


def test_non_finite_cost_is_an_error():
    cost = np.zeros((1, 2, 2))
    cost[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="not finite"):
        match_numpy(cost, np.ones((1, 2), bool))


def test_a_non_finite_cost_in_a_compiled_step_is_reported():
    """TensorFlow and PyTorch raise from the step. JAX cannot raise from a
    host call under `jit`: it returns FAILED everywhere and
    `raise_host_errors` raises the recorded message once the step has run;
    eagerly it raises at once."""
    from keras_sam3.ops.matching import FAILED
    from keras_sam3.ops.matching import clear_host_errors
    from keras_sam3.ops.matching import raise_host_errors

    cost = np.zeros((2, 3, 2), "float32")
    cost[1, 0, 0] = np.nan
    valid = np.ones((2, 2), bool)
    clear_host_errors()
    if keras.backend.backend() == "jax":
        result = keras.ops.convert_to_numpy(compiled(lambda c, v: hungarian_match(c, v))(cost, valid))
        assert (result == FAILED).all()
        with pytest.raises(ValueError, match="not finite"):
            raise_host_errors()
        raise_host_errors()  # reported once
    else:
        with pytest.raises(Exception, match="not finite"):
            compiled(lambda c, v: hungarian_match(c, v))(cost, valid)
    with pytest.raises(ValueError, match="not finite"):
        hungarian_match(keras.ops.convert_to_tensor(cost), keras.ops.convert_to_tensor(valid))
    problems = np.array([0, 3], "int32")
    with pytest.raises(ValueError, match="3 are bad"):
        hungarian_match(
            keras.ops.convert_to_tensor(np.zeros((2, 3, 2), "float32")),
            keras.ops.convert_to_tensor(valid),
            keras.ops.convert_to_tensor(problems),
            ("{} are fine", "{} are bad"),
        )


def meta_one_to_many(quality, valid, topk, threshold):
    """Meta's `BinaryOneToManyMatcher` on a quality matrix, in numpy
    (`np.quantile`'s default is `torch.quantile`'s linear interpolation):
    `(B, Q, G)` bool matches."""
    num_queries = quality.shape[1]
    quantile = np.quantile(quality, 1 - topk / num_queries, axis=1, keepdims=True)
    return (quality > quantile) & (quality > threshold) & valid[:, None, :]


def one_to_many_cases():
    rng = np.random.default_rng(1)
    random = rng.uniform(size=(3, 16, 4))
    tied = rng.integers(0, 4, size=(2, 12, 3)) / 4.0  # many equal qualities
    valid = np.ones((3, 4), bool)
    valid[1, 2:] = False  # padding
    valid[2] = False  # a prompt without ground truth
    return [
        (random, valid, 4, 0.4),
        (random, np.ones((3, 4), bool), 6, 0.0),
        (tied, np.ones((2, 3), bool), 4, 0.2),
        (random[:, :5], np.ones((3, 4), bool), 5, 0.3),  # topk = Q: above the minimum
        (np.full((1, 8, 2), 0.9), np.ones((1, 2), bool), 3, 0.4),  # all tied: nothing above the quantile
    ]


@pytest.mark.parametrize("case", range(5))
def test_one_to_many_matching_is_metas_inside_a_compiled_function(case):
    quality, valid, topk, threshold = one_to_many_cases()[case]
    expected = meta_one_to_many(quality, valid, topk, threshold)
    fn = compiled(lambda q, v: one_to_many_match(q, v, topk, threshold))
    index, matched = fn(keras.ops.convert_to_tensor(quality, "float32"), keras.ops.convert_to_tensor(valid, "float32"))
    index, matched = keras.ops.convert_to_numpy(index), keras.ops.convert_to_numpy(matched)
    assert index.shape == matched.shape == (quality.shape[0], quality.shape[2], topk)
    result = np.zeros_like(expected)
    for b, g, k in zip(*np.nonzero(matched)):
        assert not result[b, index[b, g, k], g], "a pair returned twice"
        result[b, index[b, g, k], g] = True
    np.testing.assert_array_equal(result, expected)
    if case == 0:
        assert expected.sum() > 4 and expected[2].sum() == 0 and expected[1, :, 2:].sum() == 0


def test_one_to_many_matching_refuses_more_picks_than_queries():
    with pytest.raises(ValueError, match=r"1 <= topk <= 3 queries; got topk=4"):
        one_to_many_match(keras.ops.zeros((1, 3, 2)), keras.ops.ones((1, 2)), 4, 0.4)

"""Every `>>>` example in keras_sam3's docstrings runs and prints what it
shows, on every backend (STYLE.md: docstrings carry an example on a tiny
configuration)."""

import doctest
import importlib
import pkgutil

import keras
import numpy as np
import pytest

import keras_sam3


def _modules():
    names = [keras_sam3.__name__]
    for info in pkgutil.walk_packages(keras_sam3.__path__, prefix="keras_sam3."):
        names.append(info.name)
    return sorted(names)


def _examples():
    finder = doctest.DocTestFinder(exclude_empty=True)
    cases = []
    for name in _modules():
        if name == "keras_sam3.__main__":
            continue
        module = importlib.import_module(name)
        names = {**vars(module), "keras": keras, "np": np, "ops": keras.ops}
        for test in finder.find(module, globs=names):
            if test.examples and test.name.startswith(name):
                cases.append(test)
    return cases


EXAMPLES = _examples()


def test_the_examples_are_found():
    assert len(EXAMPLES) >= 15, [t.name for t in EXAMPLES]


@pytest.mark.parametrize("test", EXAMPLES, ids=[t.name for t in EXAMPLES])
def test_docstring_example(test):
    # verbose=False: left at None, doctest turns verbose when "-v" is in sys.argv
    # (pytest -v) and its "Trying:" lines would fail the test.
    runner = doctest.DocTestRunner(verbose=False, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    keras.utils.set_random_seed(0)
    result = runner.run(test, out=lambda text: pytest.fail(text, pytrace=False))
    assert result.failed == 0 and result.attempted == len(test.examples)

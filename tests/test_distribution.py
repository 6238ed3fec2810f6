"""`fit` under Keras' distribution API on simulated host devices (JAX).

Each case runs in a fresh process (`XLA_FLAGS` must be set before JAX
starts), with the JAX backend whatever backend this suite runs on.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_worker(distribution, devices=4):
    env = dict(os.environ)
    env.update(
        KERAS_BACKEND="jax",
        XLA_FLAGS=f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={devices}".strip(),
        PYTHONPATH=ROOT,
        JAX_PLATFORMS="cpu",
    )
    done = subprocess.run(
        [sys.executable, os.path.join(ROOT, "tests", "distribution_worker.py"), distribution],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert done.returncode == 0 and lines, done.stderr[-3000:]
    return json.loads(lines[-1][len("RESULT ") :])


@pytest.fixture(scope="module")
def single():
    return run_worker("none")


@pytest.mark.parametrize("distribution", ["data", "model"])
def test_same_loss_as_one_device(single, distribution):
    result = run_worker(distribution)
    assert result["devices"] == 4
    np.testing.assert_allclose(result["evaluate_loss"], single["evaluate_loss"], rtol=1e-5)
    np.testing.assert_allclose(result["fit_losses"], single["fit_losses"], rtol=1e-4)
    if distribution == "model":
        # Attention and MLP kernels are split over the "model" axis.
        assert result["sharded_variables"] > 10, result

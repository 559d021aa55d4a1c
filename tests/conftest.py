"""Test configuration: strict numerics and several fake CPU devices.

The device count must be set before JAX initialises its backend, so it is set here, at import,
which pytest does before any test module imports jax.
"""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("JAX_NUM_CPU_DEVICES", "4")

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_numpy_dtype_promotion", "strict")
jax.config.update("jax_numpy_rank_promotion", "raise")


@pytest.fixture
def getkey():
    """A fresh, distinct PRNG key on every call, from a fixed root (deterministic tests)."""
    root = jax.random.key(0)
    count = iter(range(1_000_000))
    return lambda: jax.random.fold_in(root, next(count))

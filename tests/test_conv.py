"""coordjax.conv: same values and gradients as lax.conv_general_dilated, also under vmap."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from coordjax import conv


@pytest.mark.parametrize(
    "window, strides, padding",
    [((3, 3), 1, "SAME"), ((5, 5), 2, "SAME"), ((3, 3), 2, "VALID"), ((2, 2), 1, "SAME"),
     ((1, 1), 1, "SAME"), ((3, 2), 1, ((2, 0), (1, 1))), ((3,), 2, "SAME"), ((2, 3, 2), 1, "SAME")],
)  # fmt: skip
def test_values_and_gradients_equal_lax(window, strides, padding):
    rng = np.random.default_rng(0)
    spatial = (9, 7, 5)[: len(window)]
    x = jnp.asarray(rng.normal(size=(3, *spatial, 4)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(*window, 4, 5)), jnp.float32)
    strides = (strides,) * len(window)
    spec = {1: ("NHC", "HIO", "NHC"), 2: ("NHWC", "HWIO", "NHWC"), 3: ("NDHWC", "DHWIO", "NDHWC")}
    dn = spec[len(window)]

    def reference(x, w):
        return lax.conv_general_dilated(x, w, strides, padding, dimension_numbers=dn)

    def mine(x, w):
        return conv.conv_general_dilated(x, w, strides, padding, dimension_numbers=dn)

    np.testing.assert_allclose(mine(x, w), reference(x, w), rtol=1e-5, atol=1e-5)
    loss = lambda f: lambda x, w: jnp.sum(jnp.sin(f(x, w)))  # noqa: E731
    expected = jax.grad(loss(reference), argnums=(0, 1))(x, w)
    got = jax.jit(jax.grad(loss(mine), argnums=(0, 1)))(x, w)
    for g, e in zip(got, expected, strict=True):
        np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-4)
    # Under vmap over kernels (a sweep's model axis) the gradients are still the per-model ones.
    ws = jnp.stack([w, -2 * w])
    batched = jax.vmap(jax.grad(loss(mine), argnums=1), in_axes=(None, 0))(x, ws)
    np.testing.assert_allclose(
        batched[1], jax.grad(loss(reference), argnums=1)(x, -2 * w), rtol=1e-4, atol=1e-4
    )


def test_flax_conv_with_it_is_the_same_layer():
    x = jnp.asarray(np.random.default_rng(1).normal(size=(2, 8, 8, 3)), jnp.float32)
    plain = nn.Conv(4, (3, 3), strides=(2, 2))
    fast = nn.Conv(4, (3, 3), strides=(2, 2), conv_general_dilated=conv.conv_general_dilated)
    params = plain.init(jax.random.key(0), x)
    assert jax.tree.map(jnp.shape, fast.init(jax.random.key(0), x)) == jax.tree.map(
        jnp.shape, params
    )
    np.testing.assert_allclose(fast.apply(params, x), plain.apply(params, x), rtol=1e-6)


def test_unsupported_configurations_fall_back_to_lax():
    x = jnp.ones((1, 6, 6, 4))
    w = jnp.ones((3, 3, 2, 4))  # two feature groups
    dn = ("NHWC", "HWIO", "NHWC")
    got = conv.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=dn,
                                    feature_group_count=2)  # fmt: skip
    want = lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=dn,
                                    feature_group_count=2)  # fmt: skip
    np.testing.assert_array_equal(got, want)

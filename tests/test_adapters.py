"""The model adapters answer the recipe's calls as the user's own model does: an NNX module
through the bridge and a pure pair compute what they compute when called directly, and their
kernels are the leaves the L2 mask selects. (Their full sweeps: test_experiment.py, -m slow.)"""

import jax
import jax.numpy as jnp
import numpy as np
import user_experiments as ux
from flax import nnx

from coordjax.train import as_model
from coordjax.train.penalty import l2_mask

X = jnp.asarray(ux.make_data()["all"]["train"][0][:5])


def test_a_pure_pair_applies_its_own_functions():
    init, apply = ux.pure_pair(3)
    model = as_model(ux.BUILDERS["pure"](3))
    variables = model.init(jax.random.key(0), X)
    np.testing.assert_array_equal(variables["params"]["hidden"]["kernel"],
                                  init(jax.random.key(0), X)["hidden"]["kernel"])  # fmt: skip
    outputs = model.apply(variables, X, train=True)
    np.testing.assert_array_equal(outputs, apply(variables["params"], X))
    outputs_again, updates = model.apply(variables, X, train=True, mutable=["batch_stats"])
    np.testing.assert_array_equal(outputs_again, outputs)
    assert updates == {}


def test_an_nnx_module_through_the_bridge_computes_what_the_module_computes():
    model = as_model(ux.BUILDERS["nnx"](2))
    variables = model.init(jax.random.key(0), X)
    outputs = model.apply(variables, X, train=False)
    assert outputs.shape == (5, 2)
    # The same module built in NNX with the bridge's parameters computes the same outputs.
    module = ux.NNXNet(2, rngs=nnx.Rngs(0))
    params = variables["params"]
    module.conv.kernel[...] = params["conv"]["kernel"]
    module.conv.bias[...] = params["conv"]["bias"]
    module.dense.kernel[...] = params["dense"]["kernel"]
    module.dense.bias[...] = params["dense"]["bias"]
    np.testing.assert_allclose(module(X), outputs, rtol=1e-6, atol=1e-6)


def test_the_l2_mask_selects_the_kernels_of_every_form():
    for kind in ("linen", "nnx", "pure"):
        model = as_model(ux.BUILDERS[kind](2))
        variables = model.init(jax.random.key(0), X)
        mask = l2_mask(variables["params"], model)
        selected = {jax.tree_util.keystr(path) for path, on in
                    jax.tree_util.tree_leaves_with_path(mask) if on}  # fmt: skip
        assert selected and all(path.endswith("['kernel']") for path in selected), (kind, mask)

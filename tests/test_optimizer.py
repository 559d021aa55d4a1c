"""The optimizer update (optax transformations, :func:`coordjax.train.step.apply_update`)
against the hand-written update it replaced and against Adam written out in NumPy: several
steps, vmapped hyperparameters (lr, schedule, l2, decoupled weight decay), the L2 mask, and
entries whose gradient is exactly zero (padding)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from coordjax import models, tasks
from coordjax.train import TrainSetup, learning_rate, make_hparams, stack_hparams
from coordjax.train.step import apply_update, l2_penalty

SETUP = TrainSetup(
    model=models.build("tiny"), task=tasks.get("classification"), batch_size=4, steps_per_epoch=1
)
STEPS = 6
EPOCHS = jnp.asarray([0, 0, 1, 1, 2, 3], jnp.int32)  # the step schedule decays at epochs 2 and 3


def reference_update(setup, hparams, epoch, params, grads, opt_state):
    """The update as ``train_step`` wrote it by hand before (commit 385ed6f), kept verbatim."""
    with jax.numpy_dtype_promotion("standard"):
        moments, opt_state = setup.optimizer.update(grads, opt_state)
    lr = learning_rate(hparams, epoch)
    decay_mask = models.l2_mask(params, setup.model)
    params = jax.tree.map(
        lambda w, u, m: w - lr * u - (lr * hparams.weight_decay * w if m else 0.0),
        params,
        moments,
        decay_mask,
    )
    return params, opt_state


def _hparams(weight_decay):
    per_model = [
        make_hparams(0.01),
        make_hparams(0.002, l2=1e-2, schedule="step", lr_decay=0.5, lr_decay_every=2),
        make_hparams(0.05, l2=1e-3, weight_decay=weight_decay[0]),
        make_hparams(0.001, weight_decay=weight_decay[1], schedule="cosine", cosine_epochs=4),
    ]
    return stack_hparams(per_model)


@functools.partial(jax.jit, static_argnums=0)  # eager, each small op compiles on its own
def _initial(num_models):
    keys = jax.random.split(jax.random.key(0), num_models)
    x = jnp.zeros((1, *models.MODELS["tiny"].input_shape))
    params = jax.vmap(lambda k: SETUP.model.init(k, x, train=False)["params"])(keys)
    return params, jax.vmap(SETUP.optimizer.init)(params)


@jax.jit
def _grads(params, hparams, step):
    """A loss's gradient with the recipe's L2 term ``l2 · Σ w²`` in it (coupled, as the
    reference code adds it), and exactly zero on the first row of each kernel (as padding
    gets)."""
    targets = jax.tree.map(
        lambda w: jax.random.normal(jax.random.fold_in(jax.random.key(1), step), w.shape[1:]),
        params,
    )

    def loss(params, target, l2):
        data = sum(jnp.sum(jnp.sin(3.0 * w) * t) for w, t in zip(
            jax.tree.leaves(params), jax.tree.leaves(target), strict=True))  # fmt: skip
        return data + l2 * l2_penalty(params, SETUP.model)

    grads = jax.vmap(jax.grad(loss), in_axes=(0, None, 0))(params, targets, hparams.l2)
    return {
        module: {k: (g.at[:, 0].set(0.0) if k == "kernel" else g) for k, g in leaves.items()}
        for module, leaves in grads.items()
    }


def _run(update, hparams):
    """``STEPS`` vmapped updates from the same start; the params and Adam state after each."""
    params, opt_state = _initial(hparams.lr.shape[0])
    step = jax.jit(jax.vmap(functools.partial(update, SETUP), in_axes=(0, None, 0, 0, 0)))
    history = []
    for i in range(STEPS):
        grads = _grads(params, hparams, i)
        params, opt_state = step(hparams, EPOCHS[i], params, grads, opt_state)
        history.append((params, opt_state, grads))
    return history


def test_update_equals_the_hand_written_one_bit_for_bit_without_weight_decay():
    hparams = _hparams(weight_decay=(0.0, 0.0))
    ours, theirs = _run(apply_update, hparams), _run(reference_update, hparams)
    for (p, s, _), (q, t, _) in zip(ours, theirs, strict=True):
        for a, b in zip(jax.tree.leaves((p, s)), jax.tree.leaves((q, t)), strict=True):
            np.testing.assert_array_equal(a, b)


def test_update_with_decoupled_weight_decay_is_within_float_rounding_per_step():
    hparams = _hparams(weight_decay=(1e-2, 0.5))
    params, opt_state = _initial(4)
    ours = jax.jit(jax.vmap(functools.partial(apply_update, SETUP), in_axes=(0, None, 0, 0, 0)))
    theirs = jax.jit(
        jax.vmap(functools.partial(reference_update, SETUP), in_axes=(0, None, 0, 0, 0))
    )
    moved = False
    for i in range(STEPS):
        grads = _grads(params, hparams, i)
        args = (hparams, EPOCHS[i], params, grads, opt_state)
        (p, s), (q, t) = ours(*args), theirs(*args)
        for a, b in zip(jax.tree.leaves(s), jax.tree.leaves(t), strict=True):
            np.testing.assert_array_equal(a, b)  # Adam's moments: the same transformation
        for a, b in zip(jax.tree.leaves(p), jax.tree.leaves(q), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-7, atol=1e-7)
        moved |= any(not np.array_equal(a, b) for a, b in zip(
            jax.tree.leaves(p), jax.tree.leaves(params), strict=True))  # fmt: skip
        params, opt_state = p, s  # each step from the same state
    assert moved


def _numpy_adam(hparams, history, b1=0.9, b2=0.99, eps=1e-8):
    """Adam (optax's ε placement: outside the square root) and AdamW's decoupled decay on the
    L2-masked kernels, in float64 NumPy, fed the gradients of ``history``."""
    params, _ = _initial(hparams.lr.shape[0])
    w = {k: {n: np.asarray(v, np.float64) for n, v in m.items()} for k, m in params.items()}
    mask = models.l2_mask(params, SETUP.model)
    mu = jax.tree.map(np.zeros_like, w)
    nu = jax.tree.map(np.zeros_like, w)
    out = []
    for t, (_, _, grads) in enumerate(history, start=1):
        lr = np.asarray(jax.vmap(learning_rate, in_axes=(0, None))(hparams, EPOCHS[t - 1]))
        wd = np.asarray(hparams.weight_decay, np.float64)
        for k in w:
            for n in w[k]:
                g = np.asarray(grads[k][n], np.float64)
                mu[k][n] = b1 * mu[k][n] + (1 - b1) * g
                nu[k][n] = b2 * nu[k][n] + (1 - b2) * g**2
                u = (mu[k][n] / (1 - b1**t)) / (np.sqrt(nu[k][n] / (1 - b2**t)) + eps)
                scale = lr.reshape(-1, *[1] * (g.ndim - 1))
                decay = wd.reshape(scale.shape) * w[k][n] if mask[k][n] else 0.0
                w[k][n] = w[k][n] - scale * (u + decay)
        out.append(jax.tree.map(np.copy, w))
    return out


@pytest.mark.parametrize("weight_decay", [(0.0, 0.0), (1e-2, 0.5)])
def test_update_follows_adam_written_in_numpy(weight_decay):
    hparams = _hparams(weight_decay)
    history = _run(apply_update, hparams)
    expected = _numpy_adam(hparams, history)
    for (params, _, _), want in zip(history, expected, strict=True):
        for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(want), strict=True):
            np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-6)
    # Where the gradient is exactly zero and nothing decays, nothing moves (Adam's 0 / ε).
    last, start = history[-1][0], _initial(4)[0]
    for module in ("coord_1x1", "logits"):
        kept = [np.asarray(tree[module]["kernel"])[:2, 0] for tree in (last, start)]
        np.testing.assert_array_equal(*kept)  # the first two models have no weight decay

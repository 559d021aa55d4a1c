"""The S7.1 GAN as an experiment of the sweep engine's seam: two networks, two optimizers,
alternating updates, no targets, samples drawn from noise.

The recipe (the paper's S7.1 and the reference code as shared/reference/experiments_spec.md,
section 7.2, records it):

* the non-saturating GAN loss on logits: the discriminator minimises
  ``softplus(-D(x)) + softplus(D(G(z)))``, the generator ``softplus(-D(G(z)))``;
* ``z`` of dimension ``z_dim`` (256) uniform in [-1, 1], a fresh draw every iteration;
* per iteration one discriminator step, then ``g_steps`` (2) generator steps on the same ``z``
  and real batch; the discriminator's BatchNorm normalises each training call over the real
  batch and ``G(z)`` together (ours: separate calls would normalise away much of what tells
  them apart, and at a 16 x 16 canvas, whose last feature map is 1 x 1, all of it: the mean
  logit of a batch would not depend on its images); the generator's BatchNorm statistics move
  in its own steps;
* Adam for each network (beta1 0.9, beta2 0.99, the reference's), learning rates ``d_lr``
  (1e-4) and ``g_lr`` (5e-4), both vmapped keys; no weight penalty (the reference's L2 on the
  CoordConv generator has no recorded weight);
* an epoch is ``images // batch_size`` iterations over a fresh permutation (the last partial
  batch is dropped; 50,000 / 16 has none);
* a model whose loss or parameters turn non-finite is frozen and flagged (``diverged``), as in
  the supervised recipe.

Each evaluation draws ``eval_samples`` (1000) samples (generators in inference mode) twice, from
two fixed ``z`` sets of the run's seed, and reports :mod:`coordjax.gan.metrics` against two real
sets: ``train_*`` against the first ``eval_samples`` training images, ``test_*`` against as many
held-out images of the same generator (another seed, never trained on), plus the
discriminator's loss on those real images and the samples (``loss``) and the generator's
(``g_loss``). The score is ``test_centre_sw`` (smaller is better); pruning ranks on
``train_centre_sw``.
"""

from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from coordjax._checks import check_choice, check_seed, positive_int
from coordjax.gan import data as shapes_data
from coordjax.gan import metrics, models
from coordjax.sweep.experiment import STATIC, VMAPPED, Experiment, Key, Recipe, Score
from coordjax.train.guard import all_finite, keep_if_finite

ADAM_B1, ADAM_B2, ADAM_EPS = 0.9, 0.99, 1e-8
HELD_OUT_SEED = 1_000_003
"""Added to ``data_seed`` for the held-out real images (a seed the training set never uses)."""
EVAL_BATCH = 100


def _positive_float(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not value > 0:
        raise ValueError(f"{name} must be a positive number; got {value!r}")


def _bool(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be true or false; got {value!r}")


def _generator(name: str, value: Any) -> None:
    check_choice(name, value, list(models.GENERATORS))


def _width(name: str, value: Any) -> None:
    _positive_float(name, value)
    if value > 8:
        raise ValueError(f"{name} must be in (0, 8]; got {value!r}")


KEYS = {
    "epochs": Key(STATIC, 50, positive_int),
    "eval_every": Key(STATIC, 5, positive_int),
    "batch_size": Key(STATIC, 16, positive_int),
    "canvas": Key(STATIC, shapes_data.PAPER_CANVAS, shapes_data.check_canvas),
    "width": Key(STATIC, 1.0, _width),
    "generator": Key(STATIC, "coordconv", _generator),
    "d_coords": Key(STATIC, False, _bool),
    "g_tanh": Key(STATIC, False, _bool),
    "z_dim": Key(STATIC, 256, positive_int),
    "g_steps": Key(STATIC, 2, positive_int),
    "images": Key(STATIC, shapes_data.PAPER_IMAGES, positive_int),
    "data_seed": Key(STATIC, 0, check_seed),
    "eval_samples": Key(STATIC, 1000, positive_int),
    "g_lr": Key(VMAPPED, 5e-4, _positive_float),
    "d_lr": Key(VMAPPED, 1e-4, _positive_float),
    "seed": Key(VMAPPED, 0, check_seed),
}
"""The experiment's run-config keys: the static ones fix the models and the data, the
learning rates and the seed are vmapped."""

METRICS = {"loss": False, "g_loss": False, **metrics.LARGER_IS_BETTER}
SCORE = Score("test_centre_sw", larger_is_better=False)


@dataclasses.dataclass(frozen=True)
class GanSetup:
    """The static part of a bucket: both networks and the loop's sizes (hashable).

    Attributes:
      generator: ``generator(z (B, z_dim), train) -> (B, canvas, canvas, 3)``.
      discriminator: ``discriminator(x (B, canvas, canvas, 3), train) -> (B,)`` logits.
      generator_kind, g_tanh: how the generator's outputs become images
        (:func:`coordjax.gan.models.samples`).
      batch_size, steps_per_epoch, z_dim, g_steps, eval_samples: as the keys.
      data_spec: ``(images, canvas, data_seed, eval_samples)``: what :func:`make_data` builds.
    """

    generator: nn.Module
    discriminator: nn.Module
    generator_kind: str
    g_tanh: bool
    batch_size: int
    steps_per_epoch: int
    z_dim: int
    g_steps: int
    eval_samples: int
    data_spec: tuple[int, int, int, int]

    @property
    def optimizer(self) -> optax.GradientTransformation:
        """Adam's moments (the lr, a traced value, is applied separately)."""
        return optax.scale_by_adam(b1=ADAM_B1, b2=ADAM_B2, eps=ADAM_EPS)


class GanData(NamedTuple):
    """The arrays every model of a bucket reads.

    Attributes:
      images: (N, canvas, canvas, 3) uint8 training images.
      held_out: (E, canvas, canvas, 3) uint8 images never trained on.
      train_reference, test_reference: :class:`coordjax.gan.metrics.Reference` of the first E
        training images and of ``held_out``.
    """

    images: Any
    held_out: Any
    train_reference: metrics.Reference
    test_reference: metrics.Reference


class GanRun(NamedTuple):
    """One model's vmapped values: the two learning rates (float32) and the seed (int32)."""

    g_lr: Any
    d_lr: Any
    seed: Any


class GanState(NamedTuple):
    """One GAN's training state (``epoch`` and ``step``, int32, are what the engine records;
    ``step`` counts iterations)."""

    g_params: Any
    g_stats: Any
    d_params: Any
    d_stats: Any
    g_opt: Any
    d_opt: Any
    epoch: Any
    step: Any
    diverged: Any
    diverged_step: Any


def make_data(images: int, canvas: int, data_seed: int, eval_samples: int) -> GanData:
    """The training images, the held-out images and both references (host arrays)."""
    train = shapes_data.make_shapes(images, canvas, data_seed).images
    held_out = shapes_data.make_shapes(eval_samples, canvas, data_seed + HELD_OUT_SEED).images
    return GanData(
        train,
        held_out,
        jax.device_get(metrics.reference(shapes_data.to_model_range(train[:eval_samples]))),
        jax.device_get(metrics.reference(shapes_data.to_model_range(held_out))),
    )


def _keys(seed):
    """(generator init, discriminator init, data order, iteration noise, evaluation noise)."""
    return jax.random.split(jax.random.key(seed), 5)


def _variables(params, stats) -> dict:
    return {"params": params, "batch_stats": stats} if stats else {"params": params}


def init(setup: GanSetup, data: GanData, run: GanRun) -> GanState:
    """Both networks' parameters (from the run's seed), statistics and Adam moments."""
    g_key, d_key, *_ = _keys(run.seed)
    canvas = data.images.shape[1]
    g = setup.generator.init(g_key, jnp.zeros((1, setup.z_dim), jnp.float32))
    d = setup.discriminator.init(d_key, jnp.zeros((1, canvas, canvas, 3), jnp.float32))
    return GanState(
        g_params=g["params"], g_stats=g.get("batch_stats", {}),
        d_params=d["params"], d_stats=d.get("batch_stats", {}),
        g_opt=setup.optimizer.init(g["params"]), d_opt=setup.optimizer.init(d["params"]),
        epoch=jnp.zeros((), jnp.int32), step=jnp.zeros((), jnp.int32),
        diverged=jnp.zeros((), bool), diverged_step=jnp.full((), -1, jnp.int32),
    )  # fmt: skip


def _masked_mean(values, mask):
    count = jnp.maximum(jnp.sum(mask.astype(jnp.float32)), 1.0)
    return jnp.sum(jnp.where(mask, values, 0.0)) / count


def _adam(setup, lr, params, grads, opt_state):
    # optax's bias correction raises a float to the int32 count; strict promotion rejects it.
    with jax.numpy_dtype_promotion("standard"):
        moments, opt_state = setup.optimizer.update(grads, opt_state)
    return jax.tree.map(lambda p, u: p - lr * u, params, moments), opt_state


def _train_mode(module, params, stats, x):
    """``module`` on ``x`` with batch statistics: ``(outputs, new statistics)``."""
    if not stats:
        return module.apply({"params": params}, x, train=True), stats
    outputs, updates = module.apply(
        _variables(params, stats), x, train=True, mutable=["batch_stats"]
    )
    return outputs, updates["batch_stats"]


def train_step(setup: GanSetup, data: GanData, run: GanRun, state: GanState, idx, mask):
    """One iteration on the real images ``idx`` (B,) where ``mask`` (B,): a discriminator
    step, then ``g_steps`` generator steps on the same ``z``. Returns the new state and the
    discriminator's loss (0 for a step with no valid example or a frozen model)."""
    *_, noise_key, _ = _keys(run.seed)
    z = jax.random.uniform(jax.random.fold_in(noise_key, state.step), (idx.shape[0], setup.z_dim),
                           jnp.float32, -1.0, 1.0)  # fmt: skip
    real = shapes_data.to_model_range(data.images[idx])
    fake, _ = _train_mode(setup.generator, state.g_params, state.g_stats, z)
    fake = jax.lax.stop_gradient(fake)

    b = idx.shape[0]

    def d_loss_of(d_params):
        logits, stats = _train_mode(setup.discriminator, d_params, state.d_stats,
                                    jnp.concatenate([real, fake]))  # fmt: skip
        loss = _masked_mean(jax.nn.softplus(-logits[:b]), mask)
        return loss + _masked_mean(jax.nn.softplus(logits[b:]), mask), stats

    (d_loss, d_stats), d_grads = jax.value_and_grad(d_loss_of, has_aux=True)(state.d_params)
    d_params, d_opt = _adam(setup, run.d_lr, state.d_params, d_grads, state.d_opt)

    def g_loss_of(g_params, g_stats):
        fake, g_stats = _train_mode(setup.generator, g_params, g_stats, z)
        logits, _ = _train_mode(setup.discriminator, d_params, d_stats,
                                jnp.concatenate([real, fake]))  # fmt: skip
        return _masked_mean(jax.nn.softplus(-logits[b:]), mask), g_stats

    def g_step(carry, _):
        g_params, g_stats, g_opt = carry
        (loss, g_stats), grads = jax.value_and_grad(g_loss_of, has_aux=True)(g_params, g_stats)
        g_params, g_opt = _adam(setup, run.g_lr, g_params, grads, g_opt)
        return (g_params, g_stats, g_opt), loss

    (g_params, g_stats, g_opt), g_losses = jax.lax.scan(
        g_step, (state.g_params, state.g_stats, state.g_opt), None, length=setup.g_steps
    )
    new = state._replace(g_params=g_params, g_stats=g_stats, d_params=d_params, d_stats=d_stats,
                         g_opt=g_opt, d_opt=d_opt, step=state.step + 1)  # fmt: skip
    finite = (
        jnp.isfinite(d_loss)
        & jnp.all(jnp.isfinite(g_losses))
        & all_finite((g_params, g_stats, d_params, d_stats))
    )
    state, taken = keep_if_finite(state, new, mask, finite)
    return state, jnp.where(taken, d_loss, 0.0)


def train_epoch(setup: GanSetup, data: GanData, run: GanRun, state: GanState):
    """``steps_per_epoch`` iterations over a fresh permutation of the images: ``(state, mean
    discriminator loss)``."""
    _, _, order_key, _, _ = _keys(run.seed)
    b, steps = setup.batch_size, setup.steps_per_epoch
    order = jax.random.permutation(jax.random.fold_in(order_key, state.epoch), data.images.shape[0])
    idx = order[: steps * b].reshape(steps, b).astype(jnp.int32)
    mask = jnp.ones((b,), bool)

    def body(state, batch_idx):
        return train_step(setup, data, run, state, batch_idx, mask)

    state, losses = jax.lax.scan(body, state, idx)
    return state._replace(epoch=state.epoch + 1), losses.mean()


def generate(setup: GanSetup, state: GanState, z) -> jax.Array:
    """The generator's raw outputs for ``z`` (N, z_dim), inference mode, ``EVAL_BATCH`` at a
    time: (N, canvas, canvas, 3)."""
    variables = _variables(state.g_params, state.g_stats)

    def one(z):
        return setup.generator.apply(variables, z[None], train=False)[0]

    return jax.lax.map(one, z, batch_size=EVAL_BATCH)


def _discriminate(setup: GanSetup, state: GanState, x) -> jax.Array:
    variables = _variables(state.d_params, state.d_stats)

    def one(x):
        return setup.discriminator.apply(variables, x[None], train=False)[0]

    return jax.lax.map(one, x, batch_size=EVAL_BATCH)


def eval_noise(setup: GanSetup, seed, side: int) -> jax.Array:
    """The fixed ``z`` (eval_samples, z_dim) of a run's evaluations (``side`` 0: train, 1:
    test)."""
    key = jax.random.fold_in(_keys(seed)[4], side)
    return jax.random.uniform(key, (setup.eval_samples, setup.z_dim), jnp.float32, -1.0, 1.0)


def evaluate(setup: GanSetup, data: GanData, run: GanRun, state: GanState) -> dict:
    """Samples against each real set: ``{side_metric: ()}`` for ``train`` and ``test``."""
    out = {}
    sides = (("train", data.images[: setup.eval_samples], data.train_reference),
             ("test", data.held_out, data.test_reference))  # fmt: skip
    for side, (name, real, reference) in enumerate(sides):
        raw = generate(setup, state, eval_noise(setup, run.seed, side))
        images = models.samples(setup.generator_kind, setup.g_tanh, raw)
        on_fake = _discriminate(setup, state, raw)
        on_real = _discriminate(setup, state, shapes_data.to_model_range(real))
        values = {
            "loss": jax.nn.softplus(-on_real).mean() + jax.nn.softplus(on_fake).mean(),
            "g_loss": jax.nn.softplus(-on_fake).mean(),
            **metrics.summary(images, reference),
        }
        out.update({f"{name}_{k}": v for k, v in values.items()})
    return out


def train_chunk(setup: GanSetup, data: GanData, run: GanRun, state: GanState, *, num_epochs: int):
    """``num_epochs`` epochs, then :func:`evaluate` (NaN once diverged)."""

    def body(state, _):
        return train_epoch(setup, data, run, state)

    state, epoch_losses = jax.lax.scan(body, state, None, length=num_epochs)
    values = evaluate(setup, data, run, state)
    out = {k: jnp.where(state.diverged, jnp.nan, v) for k, v in values.items()}
    out.update(epoch_train_loss=epoch_losses, diverged=state.diverged,
               diverged_step=state.diverged_step)  # fmt: skip
    return state, out


RECIPE = Recipe(init, train_chunk, train_step, evaluate)


def make_setup(static: Mapping[str, Any], steps_per_epoch: int, lowering: str = "auto"):
    """The bucket's :class:`GanSetup` from its static keys."""
    del lowering  # plain Flax convolutions
    return GanSetup(
        generator=models.generator(static["generator"], static["canvas"], static["width"],
                                   static["g_tanh"]),
        discriminator=models.Discriminator(static["canvas"], static["width"], static["d_coords"]),
        generator_kind=static["generator"],
        g_tanh=static["g_tanh"],
        batch_size=static["batch_size"],
        steps_per_epoch=steps_per_epoch,
        z_dim=static["z_dim"],
        g_steps=static["g_steps"],
        eval_samples=static["eval_samples"],
        data_spec=(static["images"], static["canvas"], static["data_seed"], static["eval_samples"]),
    )  # fmt: skip


def _steps_per_epoch(static: Mapping[str, Any], configs: Sequence[Mapping[str, Any]]) -> int:
    return static["images"] // static["batch_size"]


def _data(setup: GanSetup) -> GanData:
    return make_data(*setup.data_spec)


def _data_shapes(setup: GanSetup) -> GanData:
    """What :func:`make_data` returns, as shapes (the images are not drawn)."""
    images, canvas, _, eval_samples = setup.data_spec
    reference = jax.eval_shape(
        metrics.reference, jax.ShapeDtypeStruct((eval_samples, canvas, canvas, 3), jnp.float32)
    )
    return GanData(
        jax.ShapeDtypeStruct((images, canvas, canvas, 3), jnp.uint8),
        jax.ShapeDtypeStruct((eval_samples, canvas, canvas, 3), jnp.uint8),
        reference,
        reference,
    )


def stack(configs: Sequence[Mapping[str, Any]]) -> GanRun:
    """The runs' learning rates and seeds with a leading model axis."""
    return GanRun(
        g_lr=np.asarray([c["g_lr"] for c in configs], np.float32),
        d_lr=np.asarray([c["d_lr"] for c in configs], np.float32),
        seed=np.asarray([c["seed"] for c in configs], np.int32),
    )


def _check(config: Mapping[str, Any]) -> None:
    for key in ("batch_size", "eval_samples"):
        if config[key] > config["images"]:
            raise ValueError(
                f"{key} {config[key]} is larger than images {config['images']}; use at most "
                f"{config['images']}"
            )


def count_params(state: GanState) -> int:
    """Both networks' parameters (generator + discriminator)."""
    leaves = jax.tree.leaves((state.g_params, state.d_params))
    return int(sum(np.size(x) for x in leaves))


def ignored_keys(config: Mapping[str, Any]) -> dict[str, str]:
    """``g_tanh`` is read by the CoordConv generator only."""
    if config.get("generator") == "conv":
        return {"g_tanh": "generator 'conv' (it always ends in tanh)"}
    return {}


EXPERIMENT = Experiment(
    name="gan",
    keys=KEYS,
    check=_check,
    setup=make_setup,
    steps_per_epoch=_steps_per_epoch,
    data=_data,
    stack=stack,
    recipe=RECIPE,
    score=lambda config: SCORE,
    metrics=METRICS,
    count_params=count_params,
    ignored_keys=ignored_keys,
    data_shapes=_data_shapes,
)
"""The S7.1 GAN experiment (sweeps/gan.py)."""

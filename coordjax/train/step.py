"""The training recipe as pure functions of (setup, data, run, state).

``setup`` is static (model, task, batch size: it fixes shapes and is closed over); ``data`` is the
dataset on the device; ``run`` holds one model's hyperparameters, seed and split as arrays; and
``state`` is one model's training state. Nothing here knows about a model axis: the sweep engine
vmaps these functions, and :func:`coordjax.train.fit` calls them for a single model, so both run
the same code.

Recipe (the reference code's, faithful by default):
  * loss = masked mean of the task's per-example loss + ``l2 · Σ w²`` over regularised kernels;
  * Adam (β1 0.9, β2 0.99, ε 1e-8, optax's ε placement), lr from :func:`learning_rate` by epoch;
    optional decoupled weight decay (AdamW style, off by default); the update is optax's AdamW
    chain (``scale_by_adam``, ``add_decayed_weights``, ``scale_by_learning_rate``) with the lr
    and the decay read from the traced hyperparameters (:func:`apply_update`);
  * a fresh permutation of the model's train split every epoch from ``fold_in(data_key, epoch)``;
    batches of ``batch_size``; the last partial batch is kept, padded and masked (the reference
    kept it too), so masked examples contribute nothing to the loss or to BatchNorm statistics;
  * a step whose loss or new parameters are not finite marks the model diverged; from then on its
    state is frozen (no update is applied), which never affects any other model.

Options (``TrainSetup``): ``prepare`` maps the dataset's inputs to what the model is fed (the
paper's ``input_scale="unit"`` is one such map); ``precision`` sets the matmul and
convolution precision every model computation is traced with (float32, ``"highest"``, by
default, so that accelerators whose default is a reduced-precision pass, e.g. TF32 on
A100/H100, do not round raw inputs up to 59 to about a pixel).
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from coordjax._checks import check_choice
from coordjax.train.data import DeviceData, SplitIndices
from coordjax.train.guard import all_finite, keep_if_finite
from coordjax.train.hparams import Hparams, learning_rate
from coordjax.train.penalty import l2_mask
from coordjax.train.task import Task


@dataclasses.dataclass(frozen=True)
class TrainSetup:
    """The static part of a training run: everything that fixes array shapes.

    Attributes:
      model: a Flax Linen module called as ``model(x, train=, mask=)`` (the paper's models), or
        an adapter of any other model (:func:`coordjax.train.as_model`).
      task: the task (loss and metrics).
      batch_size: training minibatch size.
      steps_per_epoch: steps run per epoch; at least ``ceil(n_train / batch_size)`` for every
        model sharing this setup (models with fewer examples run no-op steps at the end).
      eval_batch_size: examples per evaluation batch (memory bound only; no effect on values).
      adam_b1, adam_b2, adam_eps: Adam constants of the recipe.
      prepare: ``prepare(x) -> x``, applied to a batch of the dataset's inputs before the model
        sees them (hashable; None: fed as they are). The paper's ``input_scale="unit"`` is
        :data:`coordjax.datasets.unit_inputs`.
      precision: ``jax.default_matmul_precision`` in force while the model is traced (forward,
        gradients, evaluation): ``"highest"`` (full float32, the default), ``"high"``,
        ``"default"`` (whatever the platform does; on A100/H100 GPUs and TPUs a reduced-precision
        pass), or the equivalent names ``"float32"``, ``"tensorfloat32"``, ``"bfloat16"``. On
        CPU all give float32.
    """

    model: nn.Module
    task: Task
    batch_size: int
    steps_per_epoch: int
    eval_batch_size: int = 256
    adam_b1: float = 0.9
    adam_b2: float = 0.99
    adam_eps: float = 1e-8
    prepare: Any = None
    precision: str = "highest"

    def __post_init__(self):
        for name in ("batch_size", "steps_per_epoch", "eval_batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int; got {value!r}")
        if self.prepare is not None and not callable(self.prepare):
            raise ValueError(f"prepare must be callable or None; got {self.prepare!r}")
        check_precision(self.precision)

    def precision_context(self):
        """The context under which the model is traced (see ``precision``)."""
        if self.precision == "default":
            return contextlib.nullcontext()
        return jax.default_matmul_precision(self.precision)

    @property
    def optimizer(self) -> optax.GradientTransformation:
        """Adam's moment estimates; the lr (a traced hyperparameter) is applied separately."""
        return optax.scale_by_adam(b1=self.adam_b1, b2=self.adam_b2, eps=self.adam_eps)


PRECISIONS = ("highest", "high", "default", "float32", "tensorfloat32", "bfloat16")


def check_precision(precision: str) -> None:
    check_choice("precision", precision, PRECISIONS)


def model_inputs(setup: TrainSetup, x: jax.Array) -> jax.Array:
    """The dataset's inputs ``x`` (B, ...) as the model receives them (``setup.prepare``)."""
    return x if setup.prepare is None else setup.prepare(x)


class RunSpec(NamedTuple):
    """One model's per-run data; a sweep stacks these along a leading model axis.

    ``param_mask``: None, or a float32 tree shaped like the params when this model is a smaller
    one embedded in the setup's larger model (the sweep engine's padding); the model then
    computes with ``params * param_mask`` (:func:`apply_mask`).

    ``order_seed``: None, or int32 () to draw the epochs' example order from another seed than
    the initial weights (the order is then that of a run seeded ``order_seed``); None (and
    ``order_seed == seed``) gives both from ``seed``.
    """

    hparams: Hparams
    seed: jax.Array  # int32 (): the model's root key is jax.random.key(seed)
    split: SplitIndices
    param_mask: Any = None
    order_seed: Any = None


def order_seeds(seeds: Any, order_seeds: Any) -> np.ndarray:
    """A stack's ``RunSpec.order_seed`` (M,) int32 from run configs' seeds and order seeds,
    where an order seed of -1 (the configs' default) means the run's own seed."""
    seeds, order_seeds = np.asarray(seeds, np.int32), np.asarray(order_seeds, np.int32)
    return np.where(order_seeds == -1, seeds, order_seeds)


class TrainState(NamedTuple):
    """One model's training state.

    params / batch_stats: the Flax variable collections ({} when the model has no BatchNorm).
    epoch, step: epochs completed and updates applied (int32). diverged: bool; diverged_step: the
    step at which a non-finite loss or update appeared (-1 while finite).
    """

    params: Any
    batch_stats: Any
    opt_state: Any
    epoch: jax.Array
    step: jax.Array
    diverged: jax.Array
    diverged_step: jax.Array


def steps_per_epoch(n_train: int, batch_size: int) -> int:
    """``ceil(n_train / batch_size)``: the last partial batch is kept."""
    return -(-n_train // batch_size)


def chunk_lengths(epochs: int, eval_every: int) -> list[int]:
    """Epochs per compiled chunk: ``eval_every`` each, the last one possibly shorter."""
    return [eval_every] * (epochs // eval_every) + (
        [epochs % eval_every] if epochs % eval_every else []
    )


def _keys(seed: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(init_key, data_key), split once from the root key ``jax.random.key(seed)``."""
    init_key, data_key = jax.random.split(jax.random.key(seed))
    return init_key, data_key


def _data_key(run: RunSpec) -> jax.Array:
    """The key of the model's example order: ``order_seed``'s data key, else ``seed``'s."""
    return _keys(run.seed if run.order_seed is None else run.order_seed)[1]


def init_state(setup: TrainSetup, data: DeviceData, run: RunSpec) -> TrainState:
    """Initialises parameters (from ``seed``), BatchNorm statistics and Adam moments."""
    init_key, _ = _keys(run.seed)
    with setup.precision_context():
        variables = setup.model.init(init_key, model_inputs(setup, data.inputs[:1]), train=False)
    params = variables["params"]
    return TrainState(
        params=params,
        batch_stats=variables.get("batch_stats", {}),
        opt_state=setup.optimizer.init(params),
        epoch=jnp.zeros((), jnp.int32),
        step=jnp.zeros((), jnp.int32),
        diverged=jnp.zeros((), bool),
        diverged_step=jnp.full((), -1, jnp.int32),
    )


def apply_mask(params: Any, mask: Any | None) -> Any:
    """``params * mask`` leaf by leaf (``params`` unchanged when ``mask`` is None)."""
    if mask is None:
        return params
    return jax.tree.map(lambda p, m: p * m.astype(p.dtype), params, mask)


def l2_penalty(params: Any, model: Any) -> jax.Array:
    """``Σ w²`` over the kernels of ``model`` that carry the recipe's L2 (:func:`l2_mask`)."""
    mask = l2_mask(params, model)
    pairs = zip(jax.tree.leaves(params), jax.tree.leaves(mask), strict=True)
    return sum((jnp.sum(jnp.square(w)) for w, m in pairs if m), jnp.zeros((), jnp.float32))


def _masked_mean(values: jax.Array, mask: jax.Array) -> jax.Array:
    count = jnp.maximum(jnp.sum(mask.astype(jnp.float32)), 1.0)
    return jnp.sum(jnp.where(mask, values, 0.0)) / count


def _variables(state: TrainState, params=None) -> dict:
    variables = {"params": state.params if params is None else params}
    if state.batch_stats:
        variables["batch_stats"] = state.batch_stats
    return variables


def loss_fn(setup, params, state, hparams, x, y, mask):
    """Training-mode loss on one masked batch: (total, (new_batch_stats, data_loss)).

    ``x`` is the dataset's input (mapped here by ``setup.prepare``).
    """
    with setup.precision_context():
        outputs, updates = setup.model.apply(
            _variables(state, params),
            model_inputs(setup, x),
            train=True,
            mask=mask,
            mutable=["batch_stats"],
        )
    data_loss = _masked_mean(setup.task.loss(outputs, y), mask)
    total = data_loss + hparams.l2 * l2_penalty(params, setup.model)
    return total, (updates.get("batch_stats", {}), data_loss)


def train_step(
    setup: TrainSetup,
    data: DeviceData,
    run: RunSpec,
    state: TrainState,
    idx: jax.Array,
    mask: jax.Array,
) -> tuple[TrainState, jax.Array]:
    """One Adam step on the examples ``idx`` (B,) where ``mask`` (B,) is True.

    A step with no valid example is a no-op (the state, Adam's count included, is unchanged).
    Returns the new state and the batch's data loss (NaN-free: 0 for a no-op step).
    """
    x, y = data.inputs[idx], data.targets[idx]

    def loss_of(params):
        # Masked (padding) entries get exactly zero gradient, hence no Adam moment or update.
        return loss_fn(setup, apply_mask(params, run.param_mask), state, run.hparams, x, y, mask)

    grads, (batch_stats, data_loss) = jax.grad(loss_of, has_aux=True)(state.params)
    params, opt_state = apply_update(
        setup, run.hparams, state.epoch, state.params, grads, state.opt_state
    )
    new = state._replace(
        params=params, batch_stats=batch_stats, opt_state=opt_state, step=state.step + 1
    )
    finite = jnp.isfinite(data_loss) & all_finite((params, batch_stats))
    state, taken = keep_if_finite(state, new, mask, finite)
    return state, jnp.where(taken, data_loss, 0.0)


def scale_and_decay(
    hparams: Hparams, epoch: jax.Array, decay_mask: Any
) -> optax.GradientTransformation:
    """What follows Adam's moments ``u``: ``-lr · (u + weight_decay · w)``, the decoupled weight
    decay (AdamW style, 0 in the paper's recipe) on the kernels ``decay_mask`` marks (a tree of
    bools shaped like the params), the lr from :func:`learning_rate` at ``epoch``.

    Both are traced leaves of ``hparams`` (vmapped in a sweep), so the transformation is built
    inside the step; it holds no state.
    """
    return optax.chain(
        optax.add_decayed_weights(hparams.weight_decay, mask=decay_mask),
        optax.scale_by_learning_rate(learning_rate(hparams, epoch)),
    )


def apply_update(
    setup: TrainSetup, hparams: Hparams, epoch: jax.Array, params: Any, grads: Any, opt_state: Any
) -> tuple[Any, Any]:
    """One optimizer update of ``params`` by ``grads`` (trees of the same shapes; the L2
    penalty, when any, is already in ``grads``: it is part of the loss). Returns the new params
    and Adam state (``setup.optimizer``'s, the only state: checkpoints keep its layout)."""
    # optax's bias correction raises a float to the int32 step count, which strict promotion
    # (used by our tests and by careful users) rejects; the promotion is exact here.
    with jax.numpy_dtype_promotion("standard"):
        moments, opt_state = setup.optimizer.update(grads, opt_state)
    rest = scale_and_decay(hparams, epoch, l2_mask(params, setup.model))
    updates, _ = rest.update(moments, rest.init(params), params)
    return optax.apply_updates(params, updates), opt_state


def epoch_order(
    run: RunSpec, epoch: jax.Array, padded_size: int, num_examples: int
) -> tuple[jax.Array, jax.Array]:
    """This epoch's order of the model's train examples, padded to ``padded_size``.

    Each of the ``num_examples`` examples of the dataset draws a uniform key from
    ``fold_in(data_key, epoch)``; the model's train examples are sorted by it. The order thus
    depends only on the seed (``order_seed`` where given), the epoch and the split's membership,
    not on how the split's index array is stored or padded (a model trains identically alone or
    in any bucket).

    Returns (idx, valid): (padded_size,) example indices and a mask; the valid entries are a
    uniformly random permutation of the model's ``n_train`` examples.
    """
    data_key = _data_key(run)
    slots = run.split.train_idx.shape[0]
    if padded_size < slots:
        raise ValueError(
            f"steps_per_epoch * batch_size ({padded_size}) must cover the train split's "
            f"{slots} slots; use steps_per_epoch >= ceil(n_train / batch_size)"
        )
    noise = jax.random.uniform(jax.random.fold_in(data_key, epoch), (num_examples,))
    valid = jnp.arange(slots) < run.split.n_train
    order = jnp.argsort(jnp.where(valid, noise[run.split.train_idx], 2.0))  # padding sorts last
    idx = jnp.concatenate(
        [run.split.train_idx[order], jnp.zeros((padded_size - slots,), jnp.int32)]
    )
    return idx, jnp.arange(padded_size) < run.split.n_train


def train_epoch(
    setup: TrainSetup, data: DeviceData, run: RunSpec, state: TrainState
) -> tuple[TrainState, jax.Array]:
    """One epoch of ``setup.steps_per_epoch`` steps (a ``lax.scan``).

    Returns the new state and the epoch's mean training-mode data loss over its examples.
    """
    b = setup.batch_size
    idx, valid = epoch_order(run, state.epoch, setup.steps_per_epoch * b, data.inputs.shape[0])
    idx = idx.reshape(setup.steps_per_epoch, b)
    valid = valid.reshape(setup.steps_per_epoch, b)

    def body(state, batch):
        batch_idx, batch_mask = batch
        state, loss = train_step(setup, data, run, state, batch_idx, batch_mask)
        return state, loss * jnp.sum(batch_mask.astype(jnp.float32))

    state, weighted = jax.lax.scan(body, state, (idx, valid))
    n = jnp.maximum(run.split.n_train.astype(jnp.float32), 1.0)
    return state._replace(epoch=state.epoch + 1), jnp.sum(weighted) / n


def evaluate(
    setup: TrainSetup, data: DeviceData, run: RunSpec, state: TrainState
) -> dict[str, jax.Array]:
    """Loss and metrics on the model's full train and test splits, in inference mode.

    Returns ``{"train_loss": (), "train_<metric>": (), ..., "test_loss": (), ...}``; the loss is
    the data loss (no L2 term).
    """
    out = {}
    state = state._replace(params=apply_mask(state.params, run.param_mask))
    for prefix, idx, n in (
        ("train", run.split.train_idx, run.split.n_train),
        ("test", run.split.test_idx, run.split.n_test),
    ):
        sums = _eval_sums(setup, data, state, idx, n)
        count = jnp.maximum(n.astype(jnp.float32), 1.0)
        out.update({f"{prefix}_{k}": v / count for k, v in sums.items()})
    return out


def _eval_sums(setup, data, state, idx, n):
    size = setup.eval_batch_size
    chunks = -(-idx.shape[0] // size)
    padded = jnp.concatenate([idx, jnp.zeros((chunks * size - idx.shape[0],), idx.dtype)])
    valid = jnp.arange(chunks * size) < n

    def chunk_sums(batch):
        batch_idx, batch_mask = batch
        x, y = data.inputs[batch_idx], data.targets[batch_idx]
        with setup.precision_context():
            outputs = setup.model.apply(_variables(state), model_inputs(setup, x), train=False)
        values = {"loss": setup.task.loss(outputs, y), **setup.task.metrics(outputs, y)}
        return {k: jnp.sum(jnp.where(batch_mask, v, 0.0)) for k, v in values.items()}

    per_chunk = jax.lax.map(chunk_sums, (padded.reshape(chunks, size), valid.reshape(chunks, size)))
    return {k: jnp.sum(v) for k, v in per_chunk.items()}


def train_chunk(
    setup: TrainSetup,
    data: DeviceData,
    run: RunSpec,
    state: TrainState,
    *,
    num_epochs: int,
) -> tuple[TrainState, dict[str, jax.Array]]:
    """``num_epochs`` epochs (a ``lax.scan``), then one evaluation.

    Returns the new state and metrics: ``epoch_train_loss`` (num_epochs,) training-mode losses,
    plus the scalar evaluation metrics of :func:`evaluate` (NaN once the model has diverged),
    ``diverged`` and ``diverged_step``.
    """

    def body(state, _):
        return train_epoch(setup, data, run, state)

    state, epoch_losses = jax.lax.scan(body, state, None, length=num_epochs)
    # A diverged model's metrics are undefined (its frozen parameters may overflow): report NaN
    # deliberately rather than whatever the frozen state happens to evaluate to.
    metrics = {
        k: jnp.where(state.diverged, jnp.nan, v)
        for k, v in evaluate(setup, data, run, state).items()
    }
    metrics.update(
        epoch_train_loss=epoch_losses,
        diverged=state.diverged,
        diverged_step=state.diverged_step,
    )
    return state, metrics

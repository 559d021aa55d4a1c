"""Single-model training: the same step functions the sweep engine vmaps, run for one model."""

from __future__ import annotations

import functools
import time
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from coordjax.train.adapters import as_model
from coordjax.train.data import device_split_data, sides_indices
from coordjax.train.hparams import Hparams, check_concrete_hparams
from coordjax.train.step import (
    RunSpec,
    TrainSetup,
    TrainState,
    chunk_lengths,
    init_state,
    steps_per_epoch,
)
from coordjax.train.step import train_chunk as _train_chunk
from coordjax.train.task import Task


class FitResult(NamedTuple):
    """What :func:`fit` returns.

    Attributes:
      state: the final :class:`TrainState` (params, batch_stats, ...).
      history: one entry per evaluation, each a dict of floats: ``epoch``, ``step``,
        ``wall_time``, ``train_loss``, ``train_<metric>``, ``test_loss``, ``test_<metric>``,
        ``epoch_train_loss`` (mean training-mode loss of the last epoch), ``diverged``.
    """

    state: TrainState
    history: list[dict[str, Any]]


def fit(
    model: nn.Module,
    task: Task,
    data: Any,
    hparams: Hparams,
    *,
    seed: int,
    order_seed: int | None = None,
    epochs: int,
    batch_size: int,
    eval_every: int | None = None,
    prepare: Any = None,
    precision: str = "highest",
) -> FitResult:
    """Trains one model with the supervised recipe, sized by ``data``'s own arrays.

    The model trains and is evaluated on ``data``'s own arrays (the task's input and target
    fields of ``data.train`` and ``data.test``); each example keeps its position (``indices``),
    which fixes the epoch order. The model runs as a sweep of one model (the sweep engine's
    program, vmapped over a model axis of size 1), so an unchanged Not-so-Clevr split trains
    bit for bit as the same run config does in a sweep.

    Args:
      model: a Linen module called as ``model(x, train=, mask=)`` (the paper's models), or
        anything :func:`coordjax.train.as_model` wraps.
      task: the task (loss and metrics; its ``input_field`` / ``target_field`` name the data's
        fields).
      data: an object with ``.train`` and ``.test`` sides, each with ``indices`` and the task's
        fields (a split from :func:`coordjax.datasets.not_so_clevr`, or one with its arrays
        changed: the model sees them as given).
      hparams: from :func:`coordjax.train.make_hparams`.
      seed: the model's seed (init and data order derive from ``jax.random.key(seed)``).
      order_seed: draw the epochs' example order from this seed instead (the initial weights
        stay ``seed``'s); None: ``seed``.
      epochs: number of epochs, >= 1.
      batch_size: minibatch size, >= 1.
      eval_every: evaluate on the full train and test splits every this many epochs (and after
        the last one); default: only at the end.
      prepare: maps a batch of inputs before the model sees them (None: as they are); the
        paper's unit inputs are :data:`coordjax.datasets.unit_inputs`.
      precision: matmul/convolution precision the model is traced with (``"highest"``: full
        float32, the default); see :class:`coordjax.train.TrainSetup`.

    Returns:
      A :class:`FitResult`.
    """
    if not isinstance(task, Task):
        raise ValueError(
            f"task must be a coordjax.train.Task (e.g. coordjax.tasks.get(name)); got {task!r}"
        )
    if not all(hasattr(getattr(data, side, None), "indices") for side in ("train", "test")):
        raise ValueError(
            "data must have .train and .test sides with indices and the task's fields (e.g. "
            f"coordjax.datasets.not_so_clevr(split)); got {type(data).__name__}"
        )
    check_concrete_hparams(hparams)
    if isinstance(epochs, bool) or not isinstance(epochs, (int, np.integer)) or epochs < 1:
        raise ValueError(f"epochs must be a positive int; got {epochs!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)):
        raise ValueError(f"batch_size must be a positive int; got {batch_size!r}")
    if not 1 <= batch_size <= len(data.train):
        raise ValueError(
            f"batch_size must be in [1, {len(data.train)}] (the training examples of "
            f"{getattr(data, 'split', 'data')!r}); got {batch_size!r}"
        )
    for name, value in (("seed", seed), ("order_seed", seed if order_seed is None else order_seed)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise ValueError(f"{name} must be a non-negative int; got {value!r}")
    eval_every = epochs if eval_every is None else eval_every
    if isinstance(eval_every, bool) or not isinstance(eval_every, int) or eval_every < 1:
        raise ValueError(f"eval_every must be a positive int; got {eval_every!r}")
    setup = TrainSetup(
        model=model if isinstance(model, nn.Module) else as_model(model),
        task=task,
        batch_size=batch_size,
        steps_per_epoch=steps_per_epoch(len(data.train), batch_size),
        prepare=prepare,
        precision=precision,
    )
    device = device_split_data(task, data)
    run = RunSpec(hparams=hparams, seed=np.int32(seed), split=sides_indices(data),
                  order_seed=np.int32(seed if order_seed is None else order_seed))  # fmt: skip
    # A model axis of size 1: the sweep engine vmaps every model (each alone, or a bucket at a
    # time), and a vmapped program rounds differently from an unbatched one (batched matmuls);
    # this recipe amplifies a rounding difference into another run within a few dozen steps.
    runs = jax.tree.map(lambda leaf: jnp.expand_dims(jnp.asarray(leaf), 0), run)
    states = _compiled_init(setup)(device, runs, None)
    history, start = [], time.perf_counter()
    for chunk in chunk_lengths(epochs, eval_every):
        states, metrics = _compiled_chunk(setup, chunk)(device, runs, states)
        state = jax.tree.map(lambda leaf: leaf[0], states)
        metrics = jax.tree.map(lambda leaf: leaf[0], jax.device_get(metrics))
        row = {k: float(v) for k, v in metrics.items() if k != "epoch_train_loss"}
        row.update(
            epoch=int(state.epoch),
            step=int(state.step),
            wall_time=time.perf_counter() - start,
            epoch_train_loss=float(metrics["epoch_train_loss"][-1]),
            diverged=bool(metrics["diverged"]),
        )
        history.append(row)
    return FitResult(state=state, history=history)


# The sweep engine's programs for one device (coordjax.sweep.programs.compiled_init and
# compiled_chunk with the "vmap" strategy), built the same way down to their names and donated
# state, so that they lower to the same module (and a persistent compilation cache serves both).


@functools.cache
def _compiled_init(setup: TrainSetup):
    """Initial states of a stack of models: ``program(data, runs, None) -> states``."""

    def init(data, runs, _):
        return jax.vmap(functools.partial(init_state, setup), in_axes=(None, 0))(data, runs)

    return jax.jit(init)


@functools.cache
def _compiled_chunk(setup: TrainSetup, num_epochs: int):
    """A chunk of a stack of models: ``program(data, runs, states) -> (states, metrics)``."""
    chunk = functools.partial(_train_chunk, setup, num_epochs=num_epochs)
    return jax.jit(jax.vmap(chunk, in_axes=(None, 0, 0)), donate_argnums=(2,))

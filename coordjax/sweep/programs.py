"""The compiled programs of a bucket: single-model recipe functions lifted to a stack of models.

A bucket's models run as one program: on each device the model axis is lowered by ``jax.vmap``
(one batched program; vmapped convolutions become grouped convolutions) or by ``lax.map`` over
slices of vmapped models (:func:`per_device`), and with several devices ``shard_map`` gives each
device its slice of the models (:func:`distribute`). The builders here (:func:`compiled_chunk`,
:func:`compiled_steps`, :func:`compiled_init`) are what the engine runs and what the benchmarks
time; :class:`Programs` keeps the ones a sweep has built, so a shape compiles once per sweep.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from coordjax.sweep.experiment import Recipe
from coordjax.sweep.planner import Bucket
from coordjax.train import step as supervised

SUPERVISED = Recipe(
    supervised.init_state, supervised.train_chunk, supervised.train_step, supervised.evaluate
)
"""The supervised recipe (:mod:`coordjax.train.step`): what the builders lift by default."""

logger = logging.getLogger("coordjax.sweep")

MODEL_AXIS = "model"
TUNE_PROBE_STEPS = 2

Mesh = jax.sharding.Mesh


def make_mesh(shard: bool) -> Mesh | None:
    """A mesh over all devices with the model axis, or None (``not shard`` or one device)."""
    devices = jax.devices()
    if not shard or len(devices) == 1:
        return None
    # Auto axes: the model axis is split by shard_map explicitly; host-side indexing of the
    # stacked results must not require sharding annotations.
    return jax.make_mesh(
        (len(devices),), (MODEL_AXIS,), (jax.sharding.AxisType.Auto,), devices=devices
    )


def place(tree: Any, mesh: Mesh | None, spec: P) -> Any:
    """``tree`` on the devices, in one transfer: on ``mesh`` by ``spec``, else the default one."""
    if mesh is None:
        return jax.device_put(tree)
    return jax.device_put(tree, NamedSharding(mesh, spec))


def per_device(fn: Callable, strategy: str, map_batch_size: int) -> Callable:
    """Lifts a single-model ``fn(data, run, state)`` to a stack of models on one device.

    ``"vmap"``: ``vmap(fn)``; ``"map"``: ``lax.map`` over slices of ``map_batch_size``
    vmapped models. ``data`` is shared; ``run`` and ``state`` carry a leading model axis.
    """
    if strategy == "vmap":
        return jax.vmap(fn, in_axes=(None, 0, 0))

    def mapped(data, runs, states):
        return jax.lax.map(lambda rs: fn(data, *rs), (runs, states), batch_size=map_batch_size)

    return mapped


def distribute(fn: Callable, mesh: Mesh | None) -> Callable:
    """``fn(data, runs, states)`` on each device's slice of the model axis (``shard_map``)."""
    if mesh is None:
        return fn
    return jax.shard_map(
        fn, mesh=mesh, in_specs=(P(), P(MODEL_AXIS), P(MODEL_AXIS)), out_specs=P(MODEL_AXIS)
    )


def compiled_chunk(
    setup: Any,
    num_epochs: int,
    strategy: str,
    map_batch_size: int,
    mesh: Mesh | None,
    recipe: Recipe = SUPERVISED,
) -> Callable:
    """``jit(shard_map(vmap(recipe.train_chunk)))`` for one bucket shape; state buffers are
    donated.

    Called as ``program(data, runs, states)``; returns ``(states, metrics)``.
    """
    chunk = functools.partial(recipe.train_chunk, setup, num_epochs=num_epochs)
    return jax.jit(
        distribute(per_device(chunk, strategy, map_batch_size), mesh), donate_argnums=(2,)
    )


def compiled_steps(
    setup: Any,
    num_steps: int,
    strategy: str,
    map_batch_size: int,
    mesh: Mesh | None,
    recipe: Recipe = SUPERVISED,
    *,
    return_losses: bool = False,
) -> Callable:
    """``num_steps`` training steps of every model on one fixed batch, lifted like a chunk.

    The program ``"tune"`` times to choose a strategy (and benchmarks time): the same
    ``train_step`` and model-axis lowering as :func:`compiled_chunk`, without the epoch's
    shuffle and the evaluation. Called as ``program(data, runs, states)``; returns the states,
    or with ``return_losses`` ``(states, losses)``, losses ``(M, num_steps)`` (to check that
    two lowerings train alike).
    """

    def steps(data, run, state):
        size = setup.batch_size
        idx = jnp.arange(size, dtype=jnp.int32) % jax.tree.leaves(data)[0].shape[0]
        mask = jnp.ones((size,), bool)

        def body(state, _):
            state, loss = recipe.train_step(setup, data, run, state, idx, mask)
            return state, (loss if return_losses else None)

        state, losses = jax.lax.scan(body, state, None, length=num_steps)
        return (state, losses) if return_losses else state

    return jax.jit(distribute(per_device(steps, strategy, map_batch_size), mesh))


def compiled_init(setup: Any, mesh: Mesh | None, recipe: Recipe = SUPERVISED) -> Callable:
    """Initial states of a stack of models: ``program(data, runs, None) -> states``."""

    def init(data, runs, _):
        return jax.vmap(functools.partial(recipe.init, setup), in_axes=(None, 0))(data, runs)

    return jax.jit(distribute(init, mesh))


@dataclasses.dataclass
class Programs:
    """The compiled programs one sweep has built, by their arguments (a shape compiles once).

    The engine owns one per :func:`~coordjax.sweep.engine.run_sweep` call and passes it down;
    nothing is cached between sweeps or kept alive by the module.
    """

    built: dict[tuple, Callable] = dataclasses.field(default_factory=dict)

    def _get(self, builder: Callable, *args) -> Callable:
        key = (builder.__name__, *args)
        if key not in self.built:
            self.built[key] = builder(*args)
        return self.built[key]

    def chunk(self, setup, num_epochs, strategy, map_batch_size, mesh, recipe=SUPERVISED):
        """:func:`compiled_chunk`, built once per arguments."""
        args = (setup, num_epochs, strategy, map_batch_size, mesh, recipe)
        return self._get(compiled_chunk, *args)

    def steps(self, setup, num_steps, strategy, map_batch_size, mesh, recipe=SUPERVISED):
        """:func:`compiled_steps` (states only), built once per arguments."""
        return self._get(compiled_steps, setup, num_steps, strategy, map_batch_size, mesh, recipe)

    def init(self, setup, mesh, recipe=SUPERVISED) -> Callable:
        """:func:`compiled_init`, built once per arguments."""
        return self._get(compiled_init, setup, mesh, recipe)


def default_strategy(platform: str, models_per_device: int, map_batch_size: int):
    """The deterministic lowering of a bucket's model axis: ``(strategy, map_batch_size)``.

    On CPU, ``lax.map`` over single models beats one vmapped program as soon as a device holds
    several models (grouped convolutions; benchmarks/results/strategies-cpu.md: 1.3-1.5x at
    4 models) and ties at one; on accelerators one vmapped program keeps the device busy.
    """
    if platform == "cpu" and models_per_device > 1:
        return "map", 1
    return "vmap", map_batch_size


def tune_strategy(
    setup: Any,
    data,
    runs: Any,
    state: Any,
    mesh: Mesh | None,
    map_batch_size: int,
    programs: Programs,
    recipe: Recipe = SUPERVISED,
) -> tuple[str, int]:
    """Times ``TUNE_PROBE_STEPS`` training steps of each candidate lowering; the fastest wins.

    Compile time is excluded (each candidate is compiled, run once, then timed); the probe's
    results are discarded. The winner depends on the machine's load at that moment, which is
    why it is only used when asked for (``strategy="tune"``) and recorded for resumes.
    """
    timings = {}
    for candidate in (("vmap", map_batch_size), ("map", 1)):
        program = programs.steps(setup, TUNE_PROBE_STEPS, *candidate, mesh, recipe)
        jax.block_until_ready(program(data, runs, state))
        tick = time.perf_counter()
        jax.block_until_ready(program(data, runs, state))
        timings[candidate] = time.perf_counter() - tick
    best = min(timings, key=timings.get)
    logger.info(
        "tuned strategy %s (probe: %s)",
        best[0],
        ", ".join(f"{name}={seconds * 1e3:.0f}ms" for (name, _), seconds in timings.items()),
    )
    return best


def padded_to_devices(configs: Sequence[dict[str, Any]], multiple: int) -> list[dict[str, Any]]:
    """The model list padded to a multiple of the device count with copies of the last run."""
    configs = list(configs)
    return configs + [configs[-1]] * (-len(configs) % multiple)


def initial_state(
    bucket: Bucket,
    setup: Any,
    data,
    configs: Sequence[dict[str, Any]],
    mesh: Mesh | None = None,
    programs: Programs | None = None,
):
    """A bucket's stacked initial state and runs, and each model's parameter count.

    Args:
      bucket: the bucket; ``setup``: its :meth:`~coordjax.sweep.planner.Bucket.setup`;
        ``data``: the device data.
      configs: the bucket's run configs (possibly padded to a multiple of the device count).
      mesh: the model-axis mesh, or None for one device.
      programs: the sweep's compiled programs (a fresh set when None).

    Returns:
      ``(state, runs, param_counts)``: ``TrainState`` and ``RunSpec`` stacked over ``configs``
      (placed on ``mesh``; in a padded bucket the runs carry parameter masks), and a list of
      ints.
    """
    programs = programs or Programs()
    experiment = bucket.experiment
    recipe = experiment.recipe
    runs = experiment.stack(configs)
    run_shapes = [bucket.run_model_kwargs(c) for c in configs]
    if any(shape != bucket.model_kwargs for shape in run_shapes):

        def init(own_setup, own_runs):
            return programs.init(own_setup, None, recipe)(data, own_runs, None)

        state, runs, param_counts = experiment.padding.init(
            setup, bucket.static, run_shapes, runs, init
        )
        return place(state, mesh, P(MODEL_AXIS)), place(runs, mesh, P(MODEL_AXIS)), param_counts
    runs = place(runs, mesh, P(MODEL_AXIS))
    state = programs.init(setup, mesh, recipe)(data, runs, None)
    count = experiment.count_params(jax.tree.map(lambda x: x[0], state))
    return state, runs, [count] * len(configs)


class BucketInputs(NamedTuple):
    """What a bucket's programs are called with, and each model's parameter count.

    ``runs`` and ``states`` are stacked over the bucket's models, padded with copies of the last
    run to a multiple of the device count (``param_counts`` has one entry per stacked model).
    """

    setup: Any
    data: Any
    runs: Any
    states: Any
    param_counts: list[int]


def bucket_inputs(
    bucket: Bucket, mesh: Mesh | None, lowering: str = "auto", programs: Programs | None = None
) -> BucketInputs:
    """The setup, the device data and the initial stacked state of a bucket, as the engine
    trains it (and the benchmarks time it): placed on ``mesh``, convolutions lowered as given."""
    setup = bucket.setup(lowering)
    configs = padded_to_devices(bucket.runs, 1 if mesh is None else mesh.size)
    data = place(bucket.experiment.data(setup), mesh, P())
    states, runs, param_counts = initial_state(bucket, setup, data, configs, mesh, programs)
    return BucketInputs(setup, data, runs, states, param_counts)

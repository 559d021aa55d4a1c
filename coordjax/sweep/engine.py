"""The sweep engine: whole training runs vmapped over a bucket's models, chunk by chunk.

For each bucket (one compiled program) the host loop runs over *chunks* of ``eval_every`` epochs:
``jit(shard_map(vmap(train_chunk)))`` trains every model of the bucket for the chunk and evaluates
it; then, on the host, the chunk's metrics come back in one ``device_get``, the results table is
rewritten atomically, and the stacked state is checkpointed. Nothing runs per step on the host.

Rerunning on the same workdir resumes each bucket from its latest checkpoint and skips finished
buckets; results rows past a bucket's checkpoint (written just before a kill) are dropped and
recomputed, which gives the same numbers because every key derives from the run's seed. Each
bucket's lowering is fixed when it starts and recorded (``strategies.json``), so a resumed run
equals an uninterrupted one bit for bit. An unreadable latest checkpoint is deleted (with a
warning) for the one before; a bucket whose results rows were lost is retrained from the start.
Checkpoints kept per bucket: the latest two and each run's best evaluation.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import pathlib
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from coordjax import conv, models, tasks
from coordjax.sweep import workdir as wd
from coordjax.sweep.checkpoints import BucketCheckpoints
from coordjax.sweep.grid import Sweep
from coordjax.sweep.planner import Bucket, plan, validate_pad
from coordjax.train import (
    RunSpec,
    TrainSetup,
    device_data,
    init_state,
    make_hparams,
    padding,
    split_indices,
    stack_hparams,
    stack_splits,
    train_chunk,
    train_step,
)

logger = logging.getLogger("coordjax.sweep")

MODEL_AXIS = "model"
STRATEGIES = ("auto", "vmap", "map", "tune")
TUNE_PROBE_STEPS = 2


@dataclasses.dataclass(frozen=True)
class EngineOptions:
    """How a sweep is executed; none of these change a model's numbers beyond float noise.

    Attributes:
      strategy: how the model axis is lowered inside a device: ``"vmap"`` (one batched program;
        vmapped convolutions become grouped convolutions), ``"map"`` (``lax.map`` over slices of
        ``map_batch_size`` vmapped models, which bounds memory and avoids large groups),
        ``"auto"`` (default): a fixed rule per platform and models per device
        (:func:`default_strategy`, from ``benchmarks/strategies.py``), so the same command
        always computes the same numbers; or ``"tune"``: per bucket, time a few training steps
        of ``"vmap"`` and of ``"map"`` with slices of 1 and keep the faster (machine load can
        change that choice, and the two lowerings differ at float level). Whatever is chosen
        is recorded per bucket in ``workdir/strategies.json`` and reused when the sweep
        resumes; the results' ``strategy`` column repeats it.
      map_batch_size: models per slice for ``"map"``.
      max_models: at most this many models per program (larger buckets are split).
      shard: shard the model axis over all local devices (``shard_map``; each device runs the
        single-device program on its slice of models).
      progress: show a progress bar (tqdm) on stderr.
      pad: shape axes (``"filter_size"``, ``"channel_mult"``, ...) served by padding instead of
        by separate buckets, for the models that support it: one program trains the largest
        shape and every smaller model exactly inside it (``coordjax.train.padding``). Fewer
        compiles and launches, more FLOPs per small model.
      lowering: how every convolution is computed (:mod:`coordjax.conv`): ``"lax"``,
        ``"matmul"``, or ``"auto"`` (default): the fixed per-platform rule
        :func:`coordjax.conv.resolve_lowering` (never a timing). The resolved lowering is
        recorded in the workdir's ``config.json`` (``"lowering"``) and reused on resume.
    """

    strategy: str = "auto"
    map_batch_size: int = 4
    max_models: int | None = None
    shard: bool = True
    progress: bool = True
    pad: tuple[str, ...] = ()
    lowering: str = "auto"

    def __post_init__(self):
        object.__setattr__(self, "pad", validate_pad(self.pad))
        if self.lowering not in conv.LOWERINGS:
            raise ValueError(
                f"lowering must be one of {list(conv.LOWERINGS)}; got {self.lowering!r}"
            )
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {list(STRATEGIES)}; got {self.strategy!r}")
        if not isinstance(self.map_batch_size, int) or self.map_batch_size < 1:
            raise ValueError(f"map_batch_size must be a positive int; got {self.map_batch_size!r}")


def make_setup(bucket: Bucket, lowering: str = "auto") -> TrainSetup:
    """The static training setup shared by a bucket's models (convolutions lowered as given)."""
    static = bucket.static
    task_options = {} if static["loss"] == "default" else {"loss": static["loss"]}
    return TrainSetup(
        model=models.build(static["model"], lowering=lowering, **bucket.model_kwargs),
        task=tasks.get(static["task"], **task_options),
        batch_size=static["batch_size"],
        steps_per_epoch=bucket.steps_per_epoch,
        input_scale=static["input_scale"],
        precision=static["precision"],
    )


def stack_runs(configs: list[dict[str, Any]]) -> RunSpec:
    """The bucket's per-model arrays: hyperparameters, seeds and splits, stacked."""
    hparams = stack_hparams(
        [
            make_hparams(
                c["lr"],
                c["l2"],
                schedule=c["schedule"],
                lr_decay=c["lr_decay"],
                lr_decay_every=c["lr_decay_every"],
                lr_max_decays=c["lr_max_decays"],
                weight_decay=c["weight_decay"],
                cosine_epochs=c["epochs"],  # the "cosine" schedule spans the whole run
            )  # fmt: skip
            for c in configs
        ]
    )
    splits = stack_splits([split_indices(c["split"]) for c in configs])
    seeds = np.asarray([c["seed"] for c in configs], dtype=np.int32)
    return RunSpec(hparams=hparams, seed=seeds, split=splits)


def _mesh(shard: bool) -> jax.sharding.Mesh | None:
    devices = jax.devices()
    if not shard or len(devices) == 1:
        return None
    # Auto axes: the model axis is split by shard_map explicitly; host-side indexing of the
    # stacked results must not require sharding annotations.
    return jax.make_mesh(
        (len(devices),), (MODEL_AXIS,), (jax.sharding.AxisType.Auto,), devices=devices
    )


def _per_device(fn: Callable, strategy: str, map_batch_size: int) -> Callable:
    """Lifts a single-model ``fn(data, run, state)`` to a stack of models on one device."""
    if strategy == "vmap":
        return jax.vmap(fn, in_axes=(None, 0, 0))

    def mapped(data, runs, states):
        return jax.lax.map(lambda rs: fn(data, *rs), (runs, states), batch_size=map_batch_size)

    return mapped


def _distribute(fn: Callable, mesh) -> Callable:
    if mesh is None:
        return fn
    return jax.shard_map(
        fn, mesh=mesh, in_specs=(P(), P(MODEL_AXIS), P(MODEL_AXIS)), out_specs=P(MODEL_AXIS)
    )


@functools.cache
def compiled_chunk(setup: TrainSetup, num_epochs: int, strategy: str, map_batch_size: int, mesh):
    """``jit(shard_map(vmap(train_chunk)))`` for one bucket shape; state buffers are donated."""
    chunk = functools.partial(train_chunk, setup, num_epochs=num_epochs)
    fn = _distribute(_per_device(chunk, strategy, map_batch_size), mesh)
    return jax.jit(fn, donate_argnums=(2,))


@functools.cache
def compiled_steps(setup: TrainSetup, num_steps: int, strategy: str, map_batch_size: int, mesh):
    """``num_steps`` training steps of every model on one fixed batch, lifted like a chunk.

    The program ``"tune"`` times to choose a strategy (and benchmarks time): the same
    ``train_step`` and model-axis lowering as :func:`compiled_chunk`, without the epoch's
    shuffle and the evaluation. Called as ``program(data, runs, states)``; returns the states.
    """

    def steps(data, run, state):
        size = setup.batch_size
        idx = jnp.arange(size, dtype=jnp.int32) % data.inputs.shape[0]
        mask = jnp.ones((size,), bool)

        def body(state, _):
            return train_step(setup, data, run, state, idx, mask)[0], None

        return jax.lax.scan(body, state, None, length=num_steps)[0]

    return jax.jit(_distribute(_per_device(steps, strategy, map_batch_size), mesh))


def default_strategy(platform: str, models_per_device: int, map_batch_size: int):
    """The deterministic lowering of a bucket's model axis: ``(strategy, map_batch_size)``.

    On CPU, ``lax.map`` over single models beats one vmapped program as soon as a device holds
    several models (grouped convolutions; benchmarks/results/strategies-cpu.md: 1.3-1.5x at
    4 models) and ties at one; on accelerators one vmapped program keeps the device busy.
    """
    if platform == "cpu" and models_per_device > 1:
        return "map", 1
    return "vmap", map_batch_size


def tune_strategy(setup, data, runs, state, mesh, options) -> tuple[str, int]:
    """Times ``TUNE_PROBE_STEPS`` training steps of each candidate lowering; the fastest wins.

    Compile time is excluded (each candidate is compiled, run once, then timed); the probe's
    results are discarded. The winner depends on the machine's load at that moment, which is
    why it is only used when asked for (``strategy="tune"``) and recorded for resumes.
    """
    timings = {}
    for candidate in (("vmap", options.map_batch_size), ("map", 1)):
        program = compiled_steps(setup, TUNE_PROBE_STEPS, *candidate, mesh)
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


def bucket_strategy(bucket, setup, data, runs, state, mesh, options, workdir) -> tuple[str, int]:
    """The bucket's lowering: the one recorded in the workdir if any, else chosen and recorded.

    A resumed bucket always continues with the lowering it started with, whatever ``options``
    say now, so that an interrupted run computes exactly what an uninterrupted one does.
    """
    recorded = wd.read_strategies(workdir).get(bucket.bucket_id)
    if recorded is not None:
        choice = (recorded["strategy"], int(recorded["map_batch_size"]))
        if options.strategy in ("vmap", "map") and options.strategy != choice[0]:
            logger.info(
                "bucket %s: keeping its recorded strategy %s (not %s) so resumed numbers equal "
                "an uninterrupted run's",
                bucket.bucket_id, choice[0], options.strategy,
            )  # fmt: skip
        return choice
    n_devices = 1 if mesh is None else mesh.size
    per_device = -(-bucket.num_models // n_devices)
    if options.strategy in ("vmap", "map"):
        choice, source = (options.strategy, options.map_batch_size), "option"
    elif options.strategy == "tune" and jax.process_count() == 1:
        choice, source = tune_strategy(setup, data, runs, state, mesh, options), "tune"
    else:  # processes must agree on the program, and timings differ between hosts
        platform = jax.devices()[0].platform
        choice, source = default_strategy(platform, per_device, options.map_batch_size), "rule"
    if jax.process_index() == 0:
        wd.record_strategy(
            workdir,
            bucket.bucket_id,
            {"strategy": choice[0], "map_batch_size": choice[1], "source": source,
             "models_per_device": per_device},
        )  # fmt: skip
    return choice


@functools.cache
def compiled_init(setup: TrainSetup, mesh):
    def init(data, runs, _):
        return jax.vmap(functools.partial(init_state, setup), in_axes=(None, 0))(data, runs)

    return jax.jit(_distribute(init, mesh))


def _padded(configs: list[dict[str, Any]], multiple: int) -> list[dict[str, Any]]:
    """Pads the model list to a multiple of the device count with copies of the last run."""
    extra = -len(configs) % multiple
    return configs + [configs[-1]] * extra


def _place(tree, mesh, spec):
    if mesh is None:
        return jax.device_put(tree)
    return jax.device_put(tree, NamedSharding(mesh, spec))


class SweepInterrupted(KeyboardInterrupt):
    """Ctrl-C during a sweep; says where it stopped. Everything checkpointed is kept."""

    def __init__(self, epoch: int, bucket_id: str, index: int, num_buckets: int):
        super().__init__(
            f"interrupted at epoch {epoch} of bucket {bucket_id} ({index + 1} of {num_buckets}); "
            "rerun the same command to resume"
        )
        self.epoch, self.bucket_id = epoch, bucket_id


@dataclasses.dataclass
class _Progress:
    """The progress bar: bucket and phase, one rate, and an ETA weighted by each bucket's cost.

    Work restored from checkpoints moves the bar but not the rate: the rate and the ETA count
    only what this process trained (compiles excluded), so a resume shows no bogus speed.
    """

    bar: Any = None
    costs: dict[str, float] = dataclasses.field(default_factory=dict)  # bucket_id -> cost
    epoch: int = 0  # the current bucket's last checkpointed epoch (where a resume starts)
    label: str = ""
    status: str = ""
    compiled: set = dataclasses.field(default_factory=set)
    trained_cost: float = 0.0
    trained_seconds: float = 0.0
    trained_model_steps: int = 0

    def start(self, index: int, count: int, bucket: Bucket) -> None:
        self.epoch = 0
        self.label = f"bucket {index + 1}/{count} {bucket.bucket_id}"
        self.phase("starting")

    def phase(self, name: str) -> None:
        if self.bar is not None:
            rate = f" | {self.status}" if self.status else ""
            self.bar.set_description_str(f"{self.label} {name}{rate}", refresh=True)

    def _cost(self, bucket: Bucket, epochs: int) -> float:
        return self.costs.get(bucket.bucket_id, 0.0) * epochs / bucket.static["epochs"]

    def restored(self, bucket: Bucket, epochs: int) -> None:
        if self.bar is not None and epochs:
            self.bar.update(self._cost(bucket, epochs))

    def trained(self, bucket: Bucket, epochs: int, seconds: float) -> None:
        cost = self._cost(bucket, epochs)
        self.trained_cost += cost
        self.trained_seconds += seconds
        self.trained_model_steps += bucket.num_models * epochs * bucket.steps_per_epoch
        if self.bar is None:
            return
        self.bar.update(cost)
        rate = self.trained_model_steps / max(self.trained_seconds, 1e-9)
        left = (self.bar.total - self.bar.n) * self.trained_seconds / max(self.trained_cost, 1e-30)
        self.status = f"{rate:,.0f} model-steps/s, ETA {_duration(left)}"


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds >= 86400:
        return f"{seconds // 86400}d{seconds % 86400 // 3600:02d}h"
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s"


def run_sweep(
    sweep: Sweep,
    workdir: str | pathlib.Path,
    *,
    preset: str = "",
    options: EngineOptions | None = None,
    restart: bool = False,
) -> pd.DataFrame:
    """Trains every run of ``sweep``, resumably, and returns the results table.

    Args:
      sweep: the sweep definition.
      workdir: where config, results and checkpoints live; rerunning resumes.
      preset: the preset's name (recorded; part of the workdir's identity).
      options: execution options.
      restart: move a workdir holding a different sweep aside and start over.

    Returns:
      The results table (also in ``workdir/results.csv``): one row per model per evaluation.
    """
    options = options or EngineOptions()
    workdir = pathlib.Path(workdir)
    # Everything is validated before anything is written: a bad grid never leaves a workdir.
    runs = sweep.expand()
    buckets = plan(runs, max_models=options.max_models, pad=options.pad)
    wd.check_usable(workdir)
    identity = {"sweep": sweep.name, "preset": preset, "definition": sweep.to_json()}
    if options.max_models is not None or options.pad:
        # They change the buckets, hence the checkpoints' layout: part of the workdir's identity.
        identity["planning"] = {"max_models": options.max_models, "pad": list(options.pad)}
    # With several processes (jax.distributed), process 0 alone owns the workdir's files; orbax
    # coordinates the checkpoint writes of all processes itself.
    lead = jax.process_index() == 0
    with wd.locked(workdir) if lead else contextlib.nullcontext():
        if lead:
            wd.check_same_sweep(workdir, identity, restart=restart)
        options = dataclasses.replace(options, lowering=_lowering(options, workdir))
        if lead:
            wd.write_config(workdir, _config(identity, buckets, options))
        results = wd.read_results(workdir)
        mesh = _mesh(options.shard)
        progress = _progress(buckets, options)
        with _logs_through(progress.bar):
            try:
                for index, bucket in enumerate(buckets):
                    progress.start(index, len(buckets), bucket)
                    try:
                        results = _run_bucket(bucket, workdir, results, mesh, options, progress)
                    except KeyboardInterrupt as err:
                        raise SweepInterrupted(
                            progress.epoch, bucket.bucket_id, index, len(buckets)
                        ) from err
            finally:
                if progress.bar is not None:
                    progress.bar.close()
        if not progress.trained_model_steps:
            logger.info("nothing to do: every bucket of this sweep is finished in %s", workdir)
    return results


def _lowering(options: EngineOptions, workdir: pathlib.Path) -> str:
    """The concrete lowering: as asked, else the one this workdir recorded, else the rule."""
    if options.lowering != "auto":
        return options.lowering
    recorded = (wd.read_config(workdir) or {}).get("lowering")
    return recorded if recorded in ("lax", "matmul") else conv.resolve_lowering("auto")


def _progress(buckets: list[Bucket], options: EngineOptions) -> _Progress:
    """The progress bar (or a silent tracker). A bucket's cost is its FLOPs from XLA's cost
    analysis (train steps and evaluations), so the ETA weighs a deconv epoch above a
    CoordConv one; model-steps stand in where the analysis gives nothing."""
    if not options.progress:
        return _Progress()
    from tqdm.auto import tqdm

    from coordjax.sweep.dry_run import bucket_costs

    costs = {}
    for bucket in buckets:
        per_model = bucket_costs(bucket)
        flops = (
            bucket.total_steps * per_model["step_flops"]
            + len(bucket.chunks) * per_model["eval_flops"]
        )
        costs[bucket.bucket_id] = bucket.num_models * (
            flops if np.isfinite(flops) and flops > 0 else bucket.total_steps
        )
    bar = tqdm(total=sum(costs.values()), desc="sweep", bar_format=BAR_FORMAT)
    return _Progress(bar=bar, costs=costs)


BAR_FORMAT = "{percentage:3.0f}%|{bar}| {desc}"


@contextlib.contextmanager
def _logs_through(bar):
    """While the bar shows, log lines go through ``tqdm.write`` and do not break it."""
    if bar is None:
        yield
        return
    from tqdm.contrib.logging import logging_redirect_tqdm

    with logging_redirect_tqdm(loggers=[logging.getLogger(), logging.getLogger("coordjax")]):
        yield


def _run_bucket(bucket, workdir, results, mesh, options, progress) -> pd.DataFrame:
    checkpoints = BucketCheckpoints(workdir / wd.CHECKPOINTS / bucket.bucket_id)
    try:
        saved = checkpoints.epochs()
        start_epoch = saved[-1] if saved else 0
        if start_epoch and _rows_missing(results, bucket, start_epoch):
            # Every number derives from the runs' seeds: retraining reproduces the lost rows.
            logger.warning(
                "bucket %s: %s lacks its rows up to epoch %d although checkpoints remain; "
                "retraining the bucket from the start (this reproduces them exactly)",
                bucket.bucket_id, workdir / wd.RESULTS, start_epoch,
            )  # fmt: skip
            for epoch in saved:
                checkpoints.delete(epoch)
            start_epoch = 0
        results = _drop_rows_after(results, bucket.bucket_id, start_epoch)
        if start_epoch >= bucket.static["epochs"]:
            progress.restored(bucket, start_epoch)
            logger.info("bucket %s: finished, nothing to do", bucket.bucket_id)
            return results
        progress.phase("initialising")
        setup = make_setup(bucket, options.lowering)
        n_devices = 1 if mesh is None else mesh.size
        configs = _padded(list(bucket.runs), n_devices)
        data = _place(device_data(setup.task), mesh, P())
        state, runs, param_counts = initial_state(bucket, setup, data, configs, mesh)
        if start_epoch:
            start_epoch, state = _restore_readable(checkpoints, bucket, state)
            results = _drop_rows_after(results, bucket.bucket_id, start_epoch)
        progress.epoch = start_epoch
        progress.restored(bucket, start_epoch)
        wall = _bucket_wall_time(results, bucket.bucket_id)
        epoch, strategy = 0, None
        for num_epochs in bucket.chunks:
            epoch += num_epochs
            if epoch <= start_epoch:
                continue
            if strategy is None:
                progress.phase("choosing a strategy")
                strategy = bucket_strategy(bucket, setup, data, runs, state, mesh, options, workdir)
            program = compiled_chunk(setup, num_epochs, *strategy, mesh)
            if progress.bar is not None and program not in progress.compiled:
                # Compiled ahead of the call (jit reuses it) so the bar can say so.
                progress.phase("compiling")
                program.lower(data, runs, state).compile()
                progress.compiled.add(program)
            progress.phase(f"training + evaluating epochs {epoch - num_epochs + 1}-{epoch}")
            tick = time.perf_counter()
            state, metrics = program(data, runs, state)
            metrics, epochs, steps = _fetch((metrics, state.epoch, state.step))
            progress.epoch = epoch  # trained; a Ctrl-C from here on reports this epoch
            seconds = time.perf_counter() - tick
            wall += seconds
            progress.phase("checkpointing")
            rows = _rows(bucket, metrics, epochs, steps, wall, param_counts, strategy[0])
            results = pd.concat([results, pd.DataFrame(rows)], ignore_index=True)
            if jax.process_index() == 0:
                wd.write_results(workdir, results)
            checkpoints.save(epoch, state)
            checkpoints.prune(_epochs_to_keep(results, bucket, checkpoints.epochs()))
            progress.trained(bucket, num_epochs, seconds)
    finally:
        checkpoints.close()
    return results


def _rows_missing(results: pd.DataFrame, bucket: Bucket, epoch: int) -> bool:
    """Whether the results table lacks a row of the bucket's runs at an evaluation <= epoch."""
    ends = np.cumsum(bucket.chunks)
    wanted = {(r["run_id"], int(e)) for r in bucket.runs for e in ends if e <= epoch}
    if results.empty:
        return bool(wanted)
    mine = results.loc[results["bucket_id"] == bucket.bucket_id]
    have = set(zip(mine["run_id"], mine["epoch"].astype(int), strict=True))
    return not wanted <= have


def _restore_readable(checkpoints: BucketCheckpoints, bucket: Bucket, state):
    """The latest readable checkpoint: ``(epoch, state)``; unreadable ones are deleted with a
    warning, and with none readable the bucket starts over (``(0, state)``)."""
    for epoch in reversed(checkpoints.epochs()):
        try:
            restored = checkpoints.restore(epoch, state)
        except Exception as err:  # orbax raises many kinds for truncated or garbage files
            logger.warning(
                "bucket %s: checkpoint %s is unreadable (%s: %s); deleting it and resuming "
                "from the one before",
                bucket.bucket_id, checkpoints.directory / str(epoch), type(err).__name__,
                str(err).splitlines()[0] if str(err) else "",
            )  # fmt: skip
            checkpoints.delete(epoch)
            continue
        logger.info("bucket %s: resumed at epoch %d", bucket.bucket_id, epoch)
        return epoch, restored
    logger.warning(
        "bucket %s: no readable checkpoint; training it from the start", bucket.bucket_id
    )
    return 0, state


def _epochs_to_keep(results: pd.DataFrame, bucket: Bucket, saved: list[int]) -> set[int]:
    """The latest two checkpoints and each run's best evaluation so far (``load_run`` can load
    the model the summary reports as a run's peak)."""
    from coordjax.sweep.summary import PRIMARY_METRIC

    keep = set(saved[-2:])
    metric, larger = PRIMARY_METRIC.get(bucket.static["task"], (None, True))
    mine = results.loc[results["bucket_id"] == bucket.bucket_id] if len(results) else results
    if metric is None or mine.empty or metric not in mine:
        return keep
    for _, history in mine.groupby("run_id"):
        values = history[metric].astype(float)
        if values.notna().any():
            best = values.idxmax() if larger else values.idxmin()
            keep.add(int(history.loc[best, "epoch"]))
    return keep


def initial_state(bucket: Bucket, setup: TrainSetup, data, configs, mesh=None):
    """A bucket's stacked initial state and runs, and each model's parameter count.

    Args:
      bucket: the bucket; ``setup``: its :func:`make_setup`; ``data``: the device data.
      configs: the bucket's run configs (possibly padded to a multiple of the device count).
      mesh: the model-axis mesh, or None for one device.

    Returns:
      ``(state, runs, param_counts)``: ``TrainState`` and ``RunSpec`` stacked over ``configs``
      (placed on ``mesh``; in a padded bucket the runs carry parameter masks), and a list of
      ints.
    """
    if _needs_padding(bucket):
        state, runs, param_counts = _init_padded(bucket, setup, data, configs)
        return _place(state, mesh, P(MODEL_AXIS)), _place(runs, mesh, P(MODEL_AXIS)), param_counts
    runs = _place(stack_runs(configs), mesh, P(MODEL_AXIS))
    state = compiled_init(setup, mesh)(data, runs, None)
    count = models.count_params(jax.tree.map(lambda x: x[0], state.params))
    return state, runs, [count] * len(configs)


def _needs_padding(bucket: Bucket) -> bool:
    return any(bucket.run_model_kwargs(c) != bucket.model_kwargs for c in bucket.runs)


def _init_padded(bucket: Bucket, setup: TrainSetup, data, configs):
    """Each model initialised at its own shape, then embedded in the bucket's superset model.

    Returns the stacked superset state, the runs with their parameter masks, and each model's
    own parameter count. Initialising at the model's own shape gives exactly the parameters it
    gets alone (the same key draws a differently shaped kernel otherwise).
    """
    runs = stack_runs(configs)
    big = jax.device_get(compiled_init(setup, None)(data, runs, None))
    offset = models.MODELS[bucket.static["model"]].kernel_offset
    params = jax.tree.map(np.zeros_like, big.params)
    batch_stats = jax.tree.map(np.array, big.batch_stats)  # writable copies
    mask = jax.tree.map(np.zeros_like, big.params)
    param_counts = [0] * len(configs)
    shapes: dict[tuple, list[int]] = {}
    for i, config in enumerate(configs):
        shapes.setdefault(tuple(sorted(bucket.run_model_kwargs(config).items())), []).append(i)
    for shape, members in shapes.items():
        own_model = models.build(
            bucket.static["model"], lowering=setup.model.lowering, **dict(shape)
        )
        own_setup = dataclasses.replace(setup, model=own_model)
        rows = np.asarray(members)
        own_runs = jax.tree.map(lambda x, rows=rows: x[rows], runs)
        own = jax.device_get(compiled_init(own_setup, None)(data, own_runs, None))
        ones = jax.tree.map(np.ones_like, own.params)
        for tree, part in ((params, own.params), (batch_stats, own.batch_stats), (mask, ones)):
            _embed_rows(tree, part, members, offset)
        count = models.count_params(jax.tree.map(lambda x: x[0], own.params))
        for i in members:
            param_counts[i] = count
    state = big._replace(
        params=params,
        batch_stats=batch_stats,
        opt_state=jax.vmap(setup.optimizer.init)(params),
    )
    return state, runs._replace(param_mask=mask), param_counts


def _embed_rows(big_tree, small_tree, rows: list[int], offset) -> None:
    """Writes ``small_tree`` (stacked over ``rows``) into rows of ``big_tree``, in place."""
    rows_index = np.asarray(rows)
    for big, small in zip(jax.tree.leaves(big_tree), jax.tree.leaves(small_tree), strict=True):
        big[rows_index] = padding.embed(small, big[rows_index], offset, axis0=True)


def _padding_plan(bucket: Bucket) -> dict[str, Any]:
    return {
        "padded": list(bucket.padded),
        "run_shapes": [bucket.run_model_kwargs(r) for r in bucket.runs],
    }


def _fetch(tree):
    """The stacked arrays on the host: one transfer per chunk (gathered across processes)."""
    if jax.process_count() == 1:
        return jax.device_get(tree)
    from jax.experimental import multihost_utils

    return multihost_utils.process_allgather(tree, tiled=True)


def _rows(bucket, metrics, epochs, steps, wall, param_counts, strategy) -> list[dict[str, Any]]:
    rows = []
    for i, config in enumerate(bucket.runs):  # padding models (beyond the real runs) dropped
        row = {**config, "bucket_id": bucket.bucket_id, "param_count": param_counts[i]}
        row["strategy"] = strategy
        row.update(epoch=int(epochs[i]), step=int(steps[i]), wall_time=wall)
        for key, value in metrics.items():
            value = np.asarray(value[i])
            row[key] = value[-1].item() if key == "epoch_train_loss" else value.item()
        rows.append(row)
    return rows


def _drop_rows_after(results: pd.DataFrame, bucket_id: str, epoch: int) -> pd.DataFrame:
    if results.empty:
        return results
    stale = (results["bucket_id"] == bucket_id) & (results["epoch"] > epoch)
    return results.loc[~stale].reset_index(drop=True)


def _bucket_wall_time(results: pd.DataFrame, bucket_id: str) -> float:
    if results.empty:
        return 0.0
    mine = results.loc[results["bucket_id"] == bucket_id, "wall_time"]
    return float(mine.max()) if len(mine) else 0.0


def _config(identity, buckets, options) -> dict[str, Any]:
    import flax
    import optax
    import orbax.checkpoint

    return {
        "identity": identity,
        "engine": dataclasses.asdict(options),
        "lowering": options.lowering,  # resolved: "lax" or "matmul"
        "versions": {
            "jax": jax.__version__,
            "flax": flax.__version__,
            "optax": optax.__version__,
            "orbax-checkpoint": orbax.checkpoint.__version__,
            "numpy": np.__version__,
        },
        "devices": [str(d) for d in jax.devices()],
        "device_kind": jax.devices()[0].device_kind,
        "plan": [
            {
                "bucket_id": b.bucket_id,
                "static": b.static,
                "num_models": b.num_models,
                "steps_per_epoch": b.steps_per_epoch,
                "run_ids": [r["run_id"] for r in b.runs],
                **(_padding_plan(b) if b.padded else {}),
            }
            for b in buckets
        ],
    }

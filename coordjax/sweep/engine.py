"""The sweep engine: whole training runs vmapped over a bucket's models, chunk by chunk.

For each bucket (one compiled program) the host loop runs over *chunks* of ``eval_every`` epochs:
``jit(shard_map(vmap(train_chunk)))`` trains every model of the bucket for the chunk and evaluates
it; then, on the host, the chunk's metrics come back in one ``device_get``, the results table is
rewritten atomically, and the stacked state is checkpointed. Nothing runs per step on the host.

Rerunning on the same workdir resumes each bucket from its latest checkpoint and skips finished
buckets; results rows past a bucket's checkpoint (written just before a kill) are kept until
retraining writes them again, with the same numbers because every key derives from the run's
seed. Each bucket's lowering is fixed when it starts and recorded (``strategies.json``), so a
resumed run equals an uninterrupted one bit for bit. An unreadable latest checkpoint is
quarantined (moved aside, with a warning) for the one before; a bucket whose results rows were
lost is retrained from the start, its old checkpoints quarantined. Nothing damaged is deleted.
Checkpoints kept per bucket: the latest two, each run's best evaluation and each pruned run's
last (its rung's). With a pruning rule the buckets advance rung by rung (:func:`run_sweep`).

With a task slot (``task=``, ``coordjax sweep --task-index I --task-count N``) the buckets are
shared by independent processes over one workdir (:mod:`coordjax.sweep.fanout`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import pathlib
import time

import jax
import numpy as np
import pandas as pd
from jax.sharding import PartitionSpec as P

from coordjax import conv
from coordjax.sweep import fanout, pruning
from coordjax.sweep import workdir as wd
from coordjax.sweep.checkpoints import BucketCheckpoints, CheckpointDamaged
from coordjax.sweep.grid import Sweep
from coordjax.sweep.options import EngineOptions
from coordjax.sweep.planner import Bucket, plan
from coordjax.sweep.programs import (
    MODEL_AXIS,
    Programs,
    bucket_inputs,
    default_strategy,
    make_mesh,
    place,
    tune_strategy,
)
from coordjax.sweep.progress import logs_through, make_progress
from coordjax.sweep.rates import estimate_seconds

logger = logging.getLogger("coordjax.sweep")


def bucket_strategy(
    bucket, setup, data, runs, state, mesh, options, workdir, programs=None
) -> tuple[str, int]:
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
        probe = (setup, data, runs, state, mesh, options.map_batch_size, programs or Programs(),
                 bucket.experiment.recipe)  # fmt: skip
        choice, source = tune_strategy(*probe), "tune"
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


class SweepInterrupted(KeyboardInterrupt):
    """Ctrl-C during a sweep; says where it stopped. Everything checkpointed is kept."""

    def __init__(self, epoch: int, bucket_id: str, index: int, num_buckets: int):
        super().__init__(
            f"interrupted at epoch {epoch} of bucket {bucket_id} ({index + 1} of {num_buckets}); "
            "rerun the same command to resume"
        )
        self.epoch, self.bucket_id = epoch, bucket_id


def run_sweep(
    sweep: Sweep,
    workdir: str | pathlib.Path,
    *,
    preset: str = "",
    options: EngineOptions | None = None,
    restart: bool = False,
    programs: Programs | None = None,
    task: fanout.TaskSlot | None = None,
    stale_after: float = fanout.DEFAULT_STALE_AFTER_S,
) -> pd.DataFrame:
    """Trains every run of ``sweep``, resumably, and returns the results table.

    With a pruning rule (:class:`~coordjax.sweep.Prune` on the sweep or its grids), every bucket
    trains to the first rung, the rung's decision is taken over all buckets and recorded
    (``pruning.json``), the pruned runs leave their buckets' model axes, and the survivors
    train on to the next rung, and so on (:mod:`coordjax.sweep.pruning`).

    Args:
      sweep: the sweep definition.
      workdir: where config, results and checkpoints live; rerunning resumes.
      preset: the preset's name (recorded; part of the workdir's identity).
      options: execution options.
      restart: move a workdir holding a different sweep aside and start over.
      programs: compiled programs to reuse and add to (e.g. across the sweeps of one process);
        by default this call builds its own and drops them when it returns.
      task: this process's share of a sweep fanned out over independent processes sharing
        ``workdir`` (:mod:`coordjax.sweep.fanout`); None (default): this process trains every
        bucket (with ``jax.distributed``, all processes together).
      stale_after: with ``task``, seconds after which another process's claim on a bucket may
        be taken over (its heartbeat stopped: the process died or hangs).

    Returns:
      The results table (also in ``workdir/results.csv``): one row per model per evaluation,
      with each run's ``status`` (running / pruned / finished / diverged). With ``task``, the
      whole sweep's table once every bucket is done.
    """
    options = options or EngineOptions()
    workdir = pathlib.Path(workdir)
    if task is not None and jax.process_count() > 1:
        raise ValueError(
            "task (a fan-out over independent processes) cannot be combined with "
            "jax.distributed (processes in lockstep); use one or the other"
        )
    if task is not None and restart:
        raise ValueError(
            "restart cannot be combined with a task index: other processes may be using the "
            "workdir; move it aside yourself"
        )
    claims = None if task is None else fanout.Claims(workdir, task, stale_after)
    # Everything is validated before anything is written: a bad grid never leaves a workdir.
    runs = sweep.expand()
    experiment = sweep.experiment
    buckets = plan(runs, experiment=experiment, max_models=options.max_models, pad=options.pad)
    rules = check_rules(sweep, runs)
    wd.check_usable(workdir)
    identity = {"sweep": sweep.name, "preset": preset, "definition": sweep.to_json()}
    if options.max_models is not None or options.pad:
        # They change the buckets, hence the checkpoints' layout: part of the workdir's identity.
        identity["planning"] = {"max_models": options.max_models, "pad": list(options.pad)}
    # With several processes (jax.distributed), process 0 alone owns the workdir's files; orbax
    # coordinates the checkpoint writes of all processes itself.
    lead = jax.process_index() == 0
    with contextlib.ExitStack() as owning:
        if lead:
            owning.enter_context(wd.locked(workdir, shared=task is not None))
            with wd.records_lock(workdir):
                wd.check_same_sweep(workdir, identity, restart=restart)
        if task is not None:  # refused before anything is written if the index is taken
            owning.enter_context(fanout.task_lock(workdir, task))
        with wd.records_lock(workdir) if lead else contextlib.nullcontext():
            options = dataclasses.replace(options, lowering=_lowering(options, workdir))
            if lead:
                config = wd.sweep_config(identity, buckets, options, jax.devices())
                wd.write_config(workdir, config)
        results = wd.read_results(workdir)
        pruned = wd.pruned_at(workdir)  # decisions already taken are replayed, never retaken
        if claims is not None:
            order = _work_order(sweep, options, buckets, task)
        mesh = make_mesh(options.shard)
        programs = Programs() if programs is None else programs
        progress = make_progress(buckets, options.progress)
        with logs_through(progress.bar):
            try:
                # Without rungs this is one pass over the buckets, each trained to its end.
                for stop in [*pruning.rung_epochs(rules, runs), None]:

                    def train(index, claim=None, stop=stop, pruned=pruned):
                        nonlocal results
                        bucket = buckets[index]
                        progress.start(index, len(buckets), bucket)
                        if claim is not None:  # other processes write rows too: a fresh view
                            results = wd.read_results(workdir)
                        try:
                            results = _run_bucket(
                                bucket, workdir, results, mesh, options, progress, programs,
                                until=stop, pruned=pruned, claim=claim,
                            )  # fmt: skip
                        except KeyboardInterrupt as err:
                            raise SweepInterrupted(
                                progress.epoch, bucket.bucket_id, index, len(buckets)
                            ) from err

                    if claims is None:
                        for index in range(len(buckets)):
                            train(index)
                    else:
                        _fan_out(claims, buckets, stop, train, order)
                        results = wd.read_results(workdir)
                    if stop is not None:
                        before = set(pruned)
                        results, pruned = _take_rung(
                            workdir, results, stop, rules, runs, pruned, experiment,
                            shared=task is not None,
                        )  # fmt: skip
                        for bucket in buckets:
                            gone = [
                                r
                                for r in bucket.runs
                                if r["run_id"] in pruned and r["run_id"] not in before
                            ]
                            progress.pruned(bucket, len(gone), stop)  # fmt: skip
            finally:
                if progress.bar is not None:
                    progress.bar.close()
        if not progress.trained_model_steps:
            logger.info("nothing to do: every bucket of this sweep is finished in %s", workdir)
    return results


def check_rules(sweep: Sweep, runs: list[dict]) -> dict[str, pruning.Prune]:
    """run_id -> its pruning rule, each rule checked against the runs it governs
    (ValueError naming ``prune.at`` / ``prune.metric``)."""
    rules = sweep.rules()
    by_rule: dict[pruning.Prune, list[dict]] = {}
    for run in runs:
        if run["run_id"] in rules:
            by_rule.setdefault(rules[run["run_id"]], []).append(run)
    for rule, governed in by_rule.items():
        pruning.check_rule(rule, governed, f"sweep {sweep.name!r}", sweep.experiment)
    return rules


def _work_order(sweep, options, buckets, task) -> list[int]:
    """The bucket positions in the order task ``task`` tries them: the assignment by the dry
    run's estimate (every process computes the same one), its own buckets first."""
    seconds = {b.bucket_id: b.train_s + b.eval_s for b in estimate_seconds(sweep, options).buckets}
    owners = fanout.assign([seconds[b.bucket_id] for b in buckets], task.count)
    logger.info(
        "task %d of %d: %d of %d buckets assigned",
        task.index, task.count, owners.count(task.index), len(buckets),
    )  # fmt: skip
    return fanout.work_order(owners, task.index)


def _fan_out(claims, buckets, stop, train, order) -> None:
    """This process's part of one stage of a fanned-out sweep (every bucket trained to ``stop``,
    or to its end): in ``order``, any bucket no live process holds, until all are done."""
    stages = [
        b.static["epochs"] if stop is None else min(stop, b.static["epochs"]) for b in buckets
    ]
    fanout.run_stage(claims, [b.bucket_id for b in buckets], stages, order, train)


def _take_rung(workdir, results, rung, rules, runs, pruned, experiment, shared=False):
    """The rung's decision: replayed if recorded, else taken from the results and recorded
    before anything acts on it. Returns the results with their status, and who is pruned.

    ``shared``: other processes (a fan-out) write the workdir too; the first decision recorded
    is the one every process takes (they compute the same one from the same rows)."""
    recorded = {d["epoch"]: d for d in wd.read_pruning(workdir)}
    decision = recorded.get(rung)
    if decision is None:
        decision = pruning.decide(results, rung, rules, runs, pruned, experiment)
        if jax.process_index() == 0:
            decision = wd.record_pruning(workdir, decision)
        kept = sum(r["kept"] for g in decision["groups"] for r in g["runs"])
        total = sum(g["n"] for g in decision["groups"])
        logger.info(
            "rung at epoch %d: %d of %d runs train on (%d groups; decision in %s)",
            rung, kept, total, len(decision["groups"]), workdir / wd.PRUNING,
        )  # fmt: skip
    pruned = {**pruned, **pruning.pruned_epochs([decision])}
    if shared:
        return wd.restatus_results(workdir, pruned), pruned
    results = wd.with_status(results, pruned)
    if jax.process_index() == 0:
        wd.write_results(workdir, results)
    return results, pruned


def _lowering(options: EngineOptions, workdir: pathlib.Path) -> str:
    """The concrete lowering: as asked, else the one this workdir recorded, else the rule."""
    if options.lowering != "auto":
        return options.lowering
    recorded = (wd.read_config(workdir) or {}).get("lowering")
    if recorded in conv.LOWERINGS and recorded != "auto":
        return recorded
    return conv.resolve_lowering("auto", vmapped=True)  # the model axis is vmapped


def _run_bucket(
    bucket, workdir, results, mesh, options, progress, programs, *, until=None, pruned=None,
    claim=None,
) -> pd.DataFrame:  # fmt: skip
    """Trains ``bucket`` from its latest checkpoint to epoch ``until`` (default: its end), with
    the runs ``pruned`` (run_id -> rung) out of its model axis after their rungs.

    ``claim``: the fan-out claim this process holds on the bucket (:mod:`coordjax.sweep.fanout`);
    checked before every write, and the bucket's rows are merged into ``results.csv`` rather
    than the whole table written."""
    pruned = pruned or {}
    lead = jax.process_index() == 0

    def record(results):
        if claim is not None:
            claim.check()
            wd.merge_bucket_rows(workdir, results, bucket.bucket_id, pruned)
        elif lead:
            wd.write_results(workdir, results)

    run_ids = [r["run_id"] for r in bucket.runs]
    devices = 1 if mesh is None else mesh.size
    last = bucket.static["epochs"]
    end = last if until is None else min(until, last)
    checkpoints = BucketCheckpoints(workdir / wd.CHECKPOINTS / bucket.bucket_id)
    try:
        saved = checkpoints.epochs()
        start_epoch = saved[-1] if saved else 0
        if start_epoch and wd.rows_missing(results, bucket, start_epoch, pruned):
            # Every number derives from the runs' seeds: retraining reproduces the lost rows.
            logger.warning(
                "bucket %s: %s lacks its rows up to epoch %d although checkpoints remain; "
                "retraining the bucket from the start (this reproduces them exactly)",
                bucket.bucket_id, workdir / wd.RESULTS, start_epoch,
            )  # fmt: skip
            for epoch in saved:
                checkpoints.quarantine(epoch, "results rows missing")
            start_epoch = 0
        if start_epoch >= last:
            progress.restored(bucket, start_epoch)
            logger.info("bucket %s: finished, nothing to do", bucket.bucket_id)
            return results
        if start_epoch >= end:
            return results  # at this rung already
        if not pruning.model_axis(run_ids, pruned, start_epoch, devices):
            logger.info("bucket %s: every run pruned by epoch %d", bucket.bucket_id, start_epoch)
            return results
        progress.phase("initialising")
        setup, data, runs, state, param_counts = bucket_inputs(
            bucket, mesh, options.lowering, programs
        )
        start_epoch, state, runs, axis = _resume(
            checkpoints, bucket, state, runs, start_epoch, pruned, mesh
        )
        progress.epoch = start_epoch
        progress.restored(bucket, start_epoch)
        # Totals as they were at the checkpoint (rows past it are kept until rewritten).
        wall = wd.bucket_wall_time(results, bucket.bucket_id, through=start_epoch)
        model_steps = int(
            wd.bucket_total(results, bucket.bucket_id, "bucket_model_steps", through=start_epoch)
        )
        epoch, strategy = 0, None
        for num_epochs in bucket.chunks:
            epoch += num_epochs
            if epoch <= start_epoch:
                continue
            if epoch > end:
                break
            if strategy is None:
                progress.phase("choosing a strategy")
                choice = (bucket, setup, data, runs, state, mesh, options, workdir, programs)
                strategy = bucket_strategy(*choice)
            program = programs.chunk(setup, num_epochs, *strategy, mesh, bucket.experiment.recipe)
            if progress.bar is not None and (program, len(axis)) not in progress.compiled:
                # Compiled ahead of the call (jit reuses it) so the bar can say so.
                progress.phase("compiling")
                program.lower(data, runs, state).compile()
                progress.compiled.add((program, len(axis)))
            progress.phase(f"training + evaluating epochs {epoch - num_epochs + 1}-{epoch}")
            tick = time.perf_counter()
            state, metrics = program(data, runs, state)
            metrics, epochs, steps = _fetch((metrics, state.epoch, state.step))
            progress.epoch = epoch  # trained; a Ctrl-C from here on reports this epoch
            seconds = time.perf_counter() - tick
            wall += seconds
            model_steps += len(axis) * num_epochs * bucket.steps_per_epoch
            progress.phase("checkpointing")
            rows = wd.result_rows(
                bucket, axis, metrics, epochs, steps, wall, param_counts, strategy[0], model_steps
            )
            results = wd.with_status(wd.replace_rows(results, rows), pruned)
            record(results)
            if claim is not None:
                claim.check()
            checkpoints.save(epoch, state)
            # A pruned run's last checkpoint (its rung's) is kept too: load_run reads it.
            rungs = {pruned[r] for r in run_ids if r in pruned}
            checkpoints.prune(_epochs_to_keep(results, bucket, checkpoints.epochs()) | rungs)
            progress.trained(bucket, num_epochs, seconds, len(set(axis)))
    finally:
        checkpoints.close()
    return results


def _resume(checkpoints, bucket, state, runs, start_epoch, pruned, mesh):
    """The stack that trains on from ``start_epoch``: ``(epoch, state, runs, axis)``.

    ``state`` and ``runs`` are the initial stacks of all the bucket's runs (``bucket_inputs``);
    the state comes from the latest readable checkpoint (the epoch may fall back), and the runs
    pruned by then leave it (compaction). ``axis``: the run positions of the stack
    (:func:`coordjax.sweep.pruning.model_axis`).
    """
    run_ids = [r["run_id"] for r in bucket.runs]
    devices = 1 if mesh is None else mesh.size
    initial = pruning.model_axis(run_ids, {}, 0, devices)
    axis = initial
    if start_epoch:
        # A checkpoint at epoch e stacks the runs not pruned before it.
        def stacked_at(epoch):
            return pruning.model_axis(run_ids, pruned, epoch - 1, devices)

        start_epoch, state, axis = _restore_readable(checkpoints, bucket, state, stacked_at, mesh)
    survivors = pruning.model_axis(run_ids, pruned, start_epoch, devices)
    if survivors != axis:  # compaction: the survivors' slices, in a smaller stack
        state = _gather(state, [axis.index(i) for i in survivors], mesh)
        logger.info(
            "bucket %s: %d of %d runs train on from epoch %d (model axis %d)",
            bucket.bucket_id, len(set(survivors)), len(run_ids), start_epoch, len(survivors),
        )  # fmt: skip
    if survivors != initial:  # ``runs`` is stacked as ``initial``: run i at position i
        runs = _gather(runs, survivors, mesh)
    return start_epoch, state, runs, survivors


def _gather(tree, positions: list[int], mesh):
    """The stacked ``tree``'s models at ``positions`` (a new leading axis), placed on ``mesh``."""
    host = _fetch(tree)
    index = np.asarray(positions)
    return place(jax.tree.map(lambda x: np.asarray(x)[index], host), mesh, P(MODEL_AXIS))


def _restore_readable(checkpoints: BucketCheckpoints, bucket: Bucket, state, axis_at, mesh):
    """The latest readable checkpoint: ``(epoch, state, axis)``; unreadable ones are quarantined
    with a warning, and with none readable the bucket starts over (``(0, state, axis)``).

    ``state`` is the initial stack of all the bucket's runs; ``axis_at(epoch)`` gives the run
    positions a checkpoint at ``epoch`` stacks (pruned runs leave after their rung).
    """
    initial = axis_at(1)
    for epoch in reversed(checkpoints.epochs()):
        axis = axis_at(epoch)
        target = state if axis == initial else _gather(state, axis, mesh)
        try:
            restored = checkpoints.restore(epoch, target)
        except CheckpointDamaged as err:  # a filesystem refusal is not damage: it propagates
            moved = checkpoints.quarantine(epoch, "unreadable")
            logger.warning(
                "bucket %s: checkpoint %s is unreadable (%s); moved it to %s and resuming "
                "from the one before",
                bucket.bucket_id, err.path, err.cause, moved,
            )  # fmt: skip
            continue
        logger.info("bucket %s: resumed at epoch %d", bucket.bucket_id, epoch)
        return epoch, restored, axis
    logger.warning(
        "bucket %s: no readable checkpoint; training it from the start", bucket.bucket_id
    )
    return 0, state, initial


def _epochs_to_keep(results: pd.DataFrame, bucket: Bucket, saved: list[int]) -> set[int]:
    """The latest two checkpoints and each run's best evaluation so far by the experiment's
    score (``load_run`` can load the model the summary reports as a run's peak)."""
    keep = set(saved[-2:])
    mine = results.loc[results["bucket_id"] == bucket.bucket_id] if len(results) else results
    if mine.empty:
        return keep
    scores = {r["run_id"]: bucket.experiment.score(r) for r in bucket.runs}
    for run_id, history in mine.groupby("run_id"):
        score = scores.get(run_id)
        if score is None or score.metric not in history:
            continue
        metric, larger = score
        values = history[metric].astype(float)
        if values.notna().any():
            best = values.idxmax() if larger else values.idxmin()
            keep.add(int(history.loc[best, "epoch"]))
    return keep


def _fetch(tree):
    """The stacked arrays on the host: one transfer per chunk (gathered across processes)."""
    if jax.process_count() == 1:
        return jax.device_get(tree)
    from jax.experimental import multihost_utils  # only with several processes (experimental API)

    return multihost_utils.process_allgather(tree, tiled=True)

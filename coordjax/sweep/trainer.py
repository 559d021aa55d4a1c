"""Training one bucket of a sweep, chunk by chunk: resume, lowering, train, record, checkpoint.

``jit(shard_map(vmap(train_chunk)))`` trains every model of the bucket for a chunk of
``eval_every`` epochs and evaluates it; then, on the host, the chunk's metrics come back in one
``device_get``, the results table is rewritten atomically, and the stacked state is
checkpointed. Nothing runs per step on the host. A bucket resumes from its latest readable
checkpoint (an unreadable one is quarantined for the one before), with the lowering recorded
when it started, so a resumed run equals an uninterrupted one bit for bit; runs pruned at a
rung leave its model axis (compaction).
"""

from __future__ import annotations

import dataclasses
import logging
import pathlib
import time

import jax
import numpy as np
import pandas as pd
from jax.sharding import PartitionSpec as P

from coordjax.sweep import pruning
from coordjax.sweep import workdir as wd
from coordjax.sweep.callbacks import Callback, evaluation, notify
from coordjax.sweep.checkpoints import BucketCheckpoints, CheckpointDamaged
from coordjax.sweep.options import EngineOptions
from coordjax.sweep.planner import Bucket
from coordjax.sweep.programs import (
    MODEL_AXIS,
    Mesh,
    Programs,
    bucket_inputs,
    default_strategy,
    place,
    tune_strategy,
)
from coordjax.sweep.progress import Progress

logger = logging.getLogger("coordjax.sweep")


@dataclasses.dataclass
class BucketTrainer:
    """Trains buckets of one :func:`run_sweep` call, chunk by chunk: what they share (workdir,
    options, mesh, compiled programs, progress) and one method per phase of a bucket's run
    (resume, lowering, train, record, checkpoint). ``callbacks`` hear of each evaluation once it
    is recorded and checkpointed (:mod:`coordjax.sweep.callbacks`)."""

    workdir: pathlib.Path
    options: EngineOptions
    mesh: Mesh | None
    programs: Programs
    progress: Progress
    buckets: list[Bucket]
    callbacks: tuple[Callback, ...] = ()
    map_batch_sizes: dict[str, int] = dataclasses.field(default_factory=dict)
    """bucket_id -> the map batch its memory plan picked (default: ``options.map_batch_size``)."""
    # Buckets found finished on arrival: said once, although a sweep with rungs visits every
    # bucket once per stage.
    found_finished: set[str] = dataclasses.field(default_factory=set)

    @property
    def devices(self) -> int:
        return 1 if self.mesh is None else self.mesh.size

    def train(self, index, results, until=None, pruned=None, claim=None) -> pd.DataFrame:
        """Trains bucket ``index`` from its latest checkpoint to epoch ``until`` (default: its
        end), the runs ``pruned`` (run_id -> rung) out of its model axis after their rungs;
        returns the results with its rows.

        ``claim``: the fan-out claim this process holds on the bucket
        (:mod:`coordjax.sweep.fanout`); checked before every write, and the bucket's rows are
        merged into ``results.csv`` rather than the whole table written."""
        bucket = self.buckets[index]
        self.progress.start(index, len(self.buckets), bucket)
        checkpoints = BucketCheckpoints(self.workdir / wd.CHECKPOINTS / bucket.bucket_id)
        try:
            return self._train(bucket, checkpoints, results, until, pruned or {}, claim)
        except KeyboardInterrupt as err:
            raise SweepInterrupted(
                self.progress.epoch, bucket.bucket_id, index, len(self.buckets)
            ) from err
        finally:
            checkpoints.close()

    def _train(self, bucket, checkpoints, results, until, pruned, claim) -> pd.DataFrame:
        run_ids = [r["run_id"] for r in bucket.runs]
        last = bucket.static["epochs"]
        end = last if until is None else min(until, last)
        saved = checkpoints.epochs()
        start_epoch = saved[-1] if saved else 0
        if start_epoch and wd.rows_missing(results, bucket, start_epoch, pruned):
            # Every number derives from the runs' seeds: retraining reproduces the lost rows.
            logger.warning(
                "bucket %s: %s lacks its rows up to epoch %d although checkpoints remain; "
                "retraining the bucket from the start (this reproduces them exactly)",
                bucket.bucket_id, self.workdir / wd.RESULTS, start_epoch,
            )  # fmt: skip
            for epoch in saved:
                checkpoints.quarantine(epoch, "results rows missing")
            start_epoch = 0
        if start_epoch >= last:
            if bucket.bucket_id not in self.found_finished:
                self.found_finished.add(bucket.bucket_id)
                self.progress.restored(bucket, start_epoch)
                logger.info("bucket %s: finished, nothing to do", bucket.bucket_id)
            return results
        if start_epoch >= end:
            return results  # at this rung already
        if not pruning.model_axis(run_ids, pruned, start_epoch, self.devices):
            logger.info("bucket %s: every run pruned by epoch %d", bucket.bucket_id, start_epoch)
            return results
        self.progress.phase("initialising")
        inputs = bucket_inputs(bucket, self.mesh, self.options.lowering, self.programs)
        start_epoch, state, runs, axis = self._resume(
            checkpoints, bucket, inputs.states, inputs.runs, start_epoch, pruned
        )
        self.progress.epoch = start_epoch
        self.progress.restored(bucket, start_epoch)
        # Totals as they were at the checkpoint (rows past it are kept until rewritten).
        wall = wd.bucket_wall_time(results, bucket.bucket_id, through=start_epoch)
        model_steps = int(
            wd.bucket_total(results, bucket.bucket_id, "bucket_model_steps", through=start_epoch)
        )
        recipe = bucket.experiment.recipe
        epoch, strategy = 0, None
        for num_epochs in bucket.chunks:
            epoch += num_epochs
            if epoch <= start_epoch:
                continue
            if epoch > end:
                break
            if strategy is None:
                self.progress.phase("choosing a strategy")
                strategy = self.strategy(bucket, inputs.setup, inputs.data, runs, state)
            program = self.programs.chunk(inputs.setup, num_epochs, *strategy, self.mesh, recipe)
            self._compile(program, len(axis), inputs.data, runs, state)
            self.progress.phase(f"training + evaluating epochs {epoch - num_epochs + 1}-{epoch}")
            tick = time.perf_counter()
            state, metrics = program(inputs.data, runs, state)
            metrics, epochs, steps = _fetch((metrics, state.epoch, state.step))
            self.progress.epoch = epoch  # trained; a Ctrl-C from here on reports this epoch
            seconds = time.perf_counter() - tick
            wall += seconds
            model_steps += len(axis) * num_epochs * bucket.steps_per_epoch
            self.progress.phase("checkpointing")
            rows = wd.result_rows(bucket, axis, metrics, epochs, steps, wall,
                                  inputs.param_counts, strategy[0], model_steps)  # fmt: skip
            results = wd.with_status(wd.replace_rows(results, rows), pruned)
            self._record(bucket, results, pruned, claim)
            if claim is not None:
                claim.check()
            checkpoints.save(epoch, state)
            # A pruned run's last checkpoint (its rung's) is kept too: load_run reads it.
            rungs = {pruned[r] for r in run_ids if r in pruned}
            checkpoints.prune(_epochs_to_keep(results, bucket, checkpoints.epochs()) | rungs)
            self.progress.trained(bucket, num_epochs, seconds, len(set(axis)))
            if self.callbacks:  # host numbers already recorded: nothing flows back
                recorded = wd.with_status(pd.DataFrame(rows), pruned).to_dict("records")
                event = evaluation(bucket.bucket_id, recorded, list(metrics))
                notify(self.callbacks, "on_evaluation", event)
        return results

    def _compile(self, program, models: int, data, runs, state) -> None:
        """Compiles ahead of the call (jit reuses it) when the bar shows, so it can say so."""
        if self.progress.bar is not None and (program, models) not in self.progress.compiled:
            self.progress.phase("compiling")
            program.lower(data, runs, state).compile()
            self.progress.compiled.add((program, models))

    def _record(self, bucket, results, pruned, claim) -> None:
        if claim is not None:
            claim.check()
            wd.merge_bucket_rows(self.workdir, results, bucket.bucket_id, pruned)
        elif jax.process_index() == 0:
            wd.write_results(self.workdir, results)

    def strategy(self, bucket, setup, data, runs, state) -> tuple[str, int]:
        """The bucket's lowering: the one recorded in the workdir if any, else chosen and
        recorded.

        A resumed bucket always continues with the lowering it started with, whatever the
        options say now, so that an interrupted run computes exactly what an uninterrupted one
        does.
        """
        options = self.options
        recorded = wd.read_strategies(self.workdir).get(bucket.bucket_id)
        if recorded is not None:
            choice = (recorded["strategy"], int(recorded["map_batch_size"]))
            if options.strategy in ("vmap", "map") and options.strategy != choice[0]:
                logger.info(
                    "bucket %s: keeping its recorded strategy %s (not %s) so resumed numbers "
                    "equal an uninterrupted run's",
                    bucket.bucket_id, choice[0], options.strategy,
                )  # fmt: skip
            return choice
        per_device = -(-bucket.num_models // self.devices)
        map_batch = self.map_batch_sizes.get(bucket.bucket_id, options.map_batch_size)
        if options.strategy in ("vmap", "map"):
            choice, source = (options.strategy, map_batch), "option"
        elif options.strategy == "tune" and jax.process_count() == 1:
            choice = tune_strategy(setup, data, runs, state, self.mesh, map_batch,
                                   self.programs, bucket.experiment.recipe)  # fmt: skip
            source = "tune"
        else:  # processes must agree on the program, and timings differ between hosts
            platform = jax.devices()[0].platform
            choice = default_strategy(platform, per_device, map_batch)
            source = "rule"
        if jax.process_index() == 0:
            wd.record_strategy(
                self.workdir,
                bucket.bucket_id,
                {"strategy": choice[0], "map_batch_size": choice[1], "source": source,
                 "models_per_device": per_device},
            )  # fmt: skip
        return choice

    def _resume(self, checkpoints, bucket, state, runs, start_epoch, pruned):
        """The stack that trains on from ``start_epoch``: ``(epoch, state, runs, axis)``.

        ``state`` and ``runs`` are the initial stacks of all the bucket's runs
        (``bucket_inputs``); the state comes from the latest readable checkpoint (the epoch may
        fall back), and the runs pruned by then leave it (compaction). ``axis``: the run
        positions of the stack (:func:`coordjax.sweep.pruning.model_axis`).
        """
        run_ids = [r["run_id"] for r in bucket.runs]
        initial = pruning.model_axis(run_ids, {}, 0, self.devices)
        axis = initial
        if start_epoch:
            start_epoch, state, axis = self._restore_readable(
                checkpoints, bucket, state, run_ids, pruned
            )
        survivors = pruning.model_axis(run_ids, pruned, start_epoch, self.devices)
        if survivors != axis:  # compaction: the survivors' slices, in a smaller stack
            state = _gather(state, [axis.index(i) for i in survivors], self.mesh)
            logger.info(
                "bucket %s: %d of %d runs train on from epoch %d (model axis %d)",
                bucket.bucket_id, len(set(survivors)), len(run_ids), start_epoch, len(survivors),
            )  # fmt: skip
        if survivors != initial:  # ``runs`` is stacked as ``initial``: run i at position i
            runs = _gather(runs, survivors, self.mesh)
        return start_epoch, state, runs, survivors

    def _restore_readable(self, checkpoints, bucket, state, run_ids, pruned):
        """The latest readable checkpoint: ``(epoch, state, axis)``; unreadable ones are
        quarantined with a warning, and with none readable the bucket starts over
        (``(0, state, axis)``).

        ``state`` is the initial stack of all the bucket's runs; a checkpoint at epoch ``e``
        stacks the runs not pruned before it.
        """

        def axis_at(epoch):
            return pruning.model_axis(run_ids, pruned, epoch - 1, self.devices)

        initial = axis_at(1)
        for epoch in reversed(checkpoints.epochs()):
            axis = axis_at(epoch)
            target = state if axis == initial else _gather(state, axis, self.mesh)
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


class SweepInterrupted(KeyboardInterrupt):
    """Ctrl-C during a sweep; says where it stopped. Everything checkpointed is kept."""

    def __init__(self, epoch: int, bucket_id: str, index: int, num_buckets: int):
        super().__init__(
            f"interrupted at epoch {epoch} of bucket {bucket_id} ({index + 1} of {num_buckets}); "
            "rerun the same command to resume"
        )
        self.epoch, self.bucket_id = epoch, bucket_id


def _gather(tree, positions: list[int], mesh):
    """The stacked ``tree``'s models at ``positions`` (a new leading axis), placed on ``mesh``."""
    host = _fetch(tree)
    index = np.asarray(positions)
    return place(jax.tree.map(lambda x: np.asarray(x)[index], host), mesh, P(MODEL_AXIS))


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

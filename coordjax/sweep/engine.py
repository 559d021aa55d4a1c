"""The sweep engine: every bucket of a sweep trained, rung by rung, resumably.

Each bucket (one compiled program) trains chunk by chunk (:mod:`coordjax.sweep.trainer`):
``jit(shard_map(vmap(train_chunk)))`` trains every model of the bucket for ``eval_every`` epochs
and evaluates it; then, on the host, the metrics are recorded and the stacked state is
checkpointed. Nothing runs per step on the host.

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
shared by independent processes over one workdir (:mod:`coordjax.sweep.fanout`). With
``extend=True`` (``--extend``) an edited sweep that adds runs trains them next to the workdir's,
which stay untouched (:mod:`coordjax.sweep.growth`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import pathlib
from collections.abc import Sequence

import jax
import pandas as pd

from coordjax import conv
from coordjax.sweep import fanout, growth, memory, pruning
from coordjax.sweep import workdir as wd
from coordjax.sweep.callbacks import Callback, SweepStart, check_callbacks, notify
from coordjax.sweep.callbacks import rung as rung_event
from coordjax.sweep.grid import Sweep
from coordjax.sweep.options import EngineOptions
from coordjax.sweep.planner import plan
from coordjax.sweep.programs import Programs, make_mesh
from coordjax.sweep.progress import logs_through, make_progress
from coordjax.sweep.rates import estimate_seconds
from coordjax.sweep.trainer import BucketTrainer

logger = logging.getLogger("coordjax.sweep")


def run_sweep(
    sweep: Sweep,
    workdir: str | pathlib.Path,
    *,
    preset: str = "",
    options: EngineOptions | None = None,
    restart: bool = False,
    extend: bool = False,
    programs: Programs | None = None,
    task: fanout.TaskSlot | None = None,
    stale_after: float = fanout.DEFAULT_STALE_AFTER_S,
    callbacks: Sequence[Callback] = (),
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
      extend: the sweep was edited to add runs (more seeds, values, grids): train the new runs
        next to the workdir's, which stay untouched (:mod:`coordjax.sweep.growth`); an edit that
        changes what recorded runs depend on is refused (WorkdirError naming it).
      programs: compiled programs to reuse and add to (e.g. across the sweeps of one process);
        by default this call builds its own and drops them when it returns.
      task: this process's share of a sweep fanned out over independent processes sharing
        ``workdir`` (:mod:`coordjax.sweep.fanout`); None (default): this process trains every
        bucket (with ``jax.distributed``, all processes together).
      stale_after: with ``task``, seconds after which another process's claim on a bucket may
        be taken over (its heartbeat stopped: the process died or hangs).
      callbacks: host hooks (:class:`~coordjax.sweep.Callback`: TensorBoard, W&B, your own)
        called between compiled chunks: at the start, after each evaluation and each rung's
        decision, at the end; they never change what is trained. With several processes
        (``jax.distributed``), process 0 alone calls them.

    Returns:
      The results table (also in ``workdir/results.csv``): one row per model per evaluation,
      with each run's ``status`` (running / pruned / finished / diverged). With ``task``, the
      whole sweep's table once every bucket is done.
    """
    options = options or EngineOptions()
    workdir = pathlib.Path(workdir)
    callbacks = check_callbacks(callbacks)
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
    if extend and restart:
        raise ValueError("extend (keep the workdir's runs) cannot be combined with restart")
    if extend and jax.process_count() > 1:
        raise ValueError("extend is not supported with jax.distributed; extend in one process")
    claims = None if task is None else fanout.Claims(workdir, task, stale_after)
    # Everything is validated before anything is written: a bad grid never leaves a workdir.
    runs = sweep.expand()
    experiment = sweep.experiment
    buckets = plan(runs, experiment=experiment, max_models=options.max_models, pad=options.pad)
    rules = check_rules(sweep, runs)
    wd.check_usable(workdir)
    map_batch_sizes = {}
    fit_to_memory = None
    if options.device_memory is not None:  # compiles each bucket's program twice to measure it
        devices = len(jax.devices()) if options.shard else 1

        def fit_to_memory(unsplit: list) -> list:
            fits = memory.fit(unsplit, options.device_memory, options, devices=devices)
            map_batch_sizes.update(
                {b.bucket_id: f.map_batch_size for f in fits for b in f.buckets()}
            )
            return memory.fitted_buckets(fits)

        buckets = fit_to_memory(plan(runs, experiment=experiment, pad=options.pad))
    identity = {"sweep": sweep.name, "preset": preset, "definition": sweep.to_json()}
    if options.max_models is not None or options.pad or options.device_memory is not None:
        # They change the buckets, hence the checkpoints' layout: part of the workdir's identity.
        identity["planning"] = {"max_models": options.max_models, "pad": list(options.pad)}
        if options.device_memory is not None:
            identity["planning"]["device_memory"] = options.device_memory
    # With several processes (jax.distributed), process 0 alone owns the workdir's files; orbax
    # coordinates the checkpoint writes of all processes itself.
    lead = jax.process_index() == 0
    callbacks = callbacks if lead else ()
    with contextlib.ExitStack() as owning:
        held = None
        if lead:
            owning.enter_context(wd.locked(workdir, shared=task is not None))
            with wd.records_lock(workdir):
                held = wd.read_config(workdir)
                same = held is None or held.get("identity") == json.loads(
                    json.dumps(identity, default=str)
                )
                if extend and not same:
                    growth.check_growth(workdir, held, identity, runs)
                else:
                    wd.check_same_sweep(workdir, identity, restart=restart)
                    held = wd.read_config(workdir)  # None once moved aside
        elif workdir.joinpath(wd.CONFIG).exists():  # its plan never changes under these
            held = wd.read_config(workdir)
        buckets = growth.layout(held, runs, buckets, experiment=experiment,
                                max_models=options.max_models, pad=options.pad,
                                fit=fit_to_memory)  # fmt: skip
        added = growth.added_runs(held, runs) if held is not None else 0
        if extend and added:
            logger.info(
                "extending %s: %d new runs; its %d recorded runs stay as they are",
                workdir, added, len(runs) - added,
            )  # fmt: skip
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
        programs = Programs() if programs is None else programs
        trainer = BucketTrainer(workdir, options, make_mesh(options.shard), programs,
                                make_progress(buckets, options.progress), buckets,
                                callbacks, map_batch_sizes)  # fmt: skip
        progress = trainer.progress
        with logs_through(progress.bar):
            try:
                if callbacks:
                    notify(callbacks, "on_start", _start(sweep, workdir, runs, results, task))
                # Without rungs this is one pass over the buckets, each trained to its end.
                for stop in [*pruning.rung_epochs(rules, runs), None]:
                    if claims is None:
                        for index in range(len(buckets)):
                            results = trainer.train(index, results, stop, pruned)
                    else:
                        stages = [b.static["epochs"] if stop is None
                                  else min(stop, b.static["epochs"]) for b in buckets]  # fmt: skip

                        def train(index, claim, stop=stop, pruned=pruned):
                            # Other processes write rows too: each bucket starts from a fresh
                            # view of the table.
                            fresh = wd.read_results(workdir)
                            trainer.train(index, fresh, stop, pruned, claim=claim)

                        ids = [b.bucket_id for b in buckets]
                        fanout.run_stage(claims, ids, stages, order, train)
                        results = wd.read_results(workdir)
                    if stop is not None:
                        before = set(pruned)
                        results, pruned = _take_rung(
                            workdir, results, stop, rules, runs, pruned, experiment,
                            shared=task is not None, buckets=buckets, callbacks=callbacks,
                        )  # fmt: skip
                        for bucket in buckets:
                            gone = [
                                r
                                for r in bucket.runs
                                if r["run_id"] in pruned and r["run_id"] not in before
                            ]
                            progress.pruned(bucket, len(gone), stop)  # fmt: skip
                notify(callbacks, "on_end", results)
            finally:
                if progress.bar is not None:
                    progress.bar.close()
                for callback in callbacks:
                    callback.close()
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
    estimate = estimate_seconds(sweep, options, buckets=buckets)
    seconds = {b.bucket_id: b.train_s + b.eval_s for b in estimate.buckets}
    owners = fanout.assign([seconds[b.bucket_id] for b in buckets], task.count)
    logger.info(
        "task %d of %d: %d of %d buckets assigned",
        task.index, task.count, owners.count(task.index), len(buckets),
    )  # fmt: skip
    return fanout.work_order(owners, task.index)


def _start(sweep, workdir, runs, results, task) -> SweepStart:
    experiment = sweep.experiment
    metrics = {f"{side}_{m}": larger for side in ("train", "test")
               for m, larger in experiment.metrics.items()}  # fmt: skip
    return SweepStart(sweep=sweep.name, workdir=workdir, experiment=experiment.name,
                      runs=tuple(runs), keys=tuple(experiment.keys), metrics=metrics,
                      results=results.copy(), shared=task is not None)  # fmt: skip


def _take_rung(workdir, results, rung, rules, runs, pruned, experiment, shared=False, buckets=(),
               callbacks=()):  # fmt: skip
    """The rung's decisions: replayed where recorded, else taken from the results and recorded
    before anything acts on them. Returns the results with their status, and who is pruned.

    One decision per extension of the sweep (:mod:`coordjax.sweep.growth`: the runs a growth
    added are ranked among themselves; a decision recorded for earlier runs is never retaken).
    ``shared``: other processes (a fan-out) write the workdir too; the first decision recorded
    is the one every process takes (they compute the same one from the same rows).
    ``callbacks`` hear of each decision once it is recorded."""
    cohort = {r["run_id"]: b.extension for b in buckets for r in b.runs}
    recorded = {(d["epoch"], d.get("extension", 0)): d for d in wd.read_pruning(workdir)}
    events = []
    for extension in sorted(set(cohort.values()) or {0}):
        decision = recorded.get((rung, extension))
        replayed = decision is not None
        if decision is None:
            members = [r for r in runs if cohort.get(r["run_id"], 0) == extension]
            decision = pruning.decide(results, rung, rules, members, pruned, experiment)
            if extension:
                decision["extension"] = extension
            if jax.process_index() == 0:
                decision = wd.record_pruning(workdir, decision)
            kept = sum(r["kept"] for g in decision["groups"] for r in g["runs"])
            total = sum(g["n"] for g in decision["groups"])
            logger.info(
                "rung at epoch %d%s: %d of %d runs train on (%d groups; decision in %s)",
                rung, f" (runs of extension {extension})" if extension else "", kept, total,
                len(decision["groups"]), workdir / wd.PRUNING,
            )  # fmt: skip
        pruned = {**pruned, **pruning.pruned_epochs([decision])}
        events.append(rung_event(decision, replayed))
    if shared:
        results = wd.restatus_results(workdir, pruned)
    else:
        results = wd.with_status(results, pruned)
        if jax.process_index() == 0:
            wd.write_results(workdir, results)
    for event in events:
        notify(callbacks, "on_rung", event)
    return results, pruned


def _lowering(options: EngineOptions, workdir: pathlib.Path) -> str:
    """The concrete lowering: the one this workdir recorded, else as asked, else the rule.

    A lowering changes the numbers (float rounding), so a workdir keeps the one it started
    with: asking for another on resume is refused (WorkdirError naming the recorded one).
    """
    recorded = (wd.read_config(workdir) or {}).get("lowering")
    if recorded in conv.LOWERINGS and recorded != "auto":
        if options.lowering not in ("auto", recorded):
            raise wd.WorkdirError(
                f"lowering {options.lowering!r} differs from {recorded!r}, which this workdir "
                f"was started with (it changes the numbers); resume with {recorded!r} or 'auto', "
                "or use another workdir"
            )
        return recorded
    if options.lowering != "auto":
        return options.lowering
    return conv.resolve_lowering("auto", vmapped=True)  # the model axis is vmapped

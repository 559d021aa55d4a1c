"""Optuna's ask/tell a batch at a time: a study proposes ``batch_size`` configurations, the sweep
engine trains them together (one vmapped program per shape), and the study is told their scores.

Works for any :class:`~coordjax.sweep.Experiment`; needs the ``optuna`` extra
(``pip install "coordjax[optuna]"``). The loop's workdir::

    workdir/
      study.json        the loop's identity (experiment, space, base, batch size, seed, sampler)
      study.journal     the Optuna study (default storage: Optuna's journal file)
      batch-000.json    batch 0's trials: number, run id, params (written once all are asked)
      batch-000/        batch 0's sweep workdir (config.json, results.csv, checkpoints/)
      batch-001.json, batch-001/, ...
      .lock             held while the loop runs (one process per workdir)

Each batch is an ordinary sweep: one :class:`~coordjax.sweep.Grid` per trial (named
``trial-<number>``, its base the loop's ``base`` plus the trial's params), trained to the end by
:func:`~coordjax.sweep.run_sweep`. Each trial is then told its run's score (the experiment's,
at the last evaluation); a run that diverged is told ``FAIL``.

No pruning: the models of a batch train in lockstep in one compiled program, so stopping one
early saves nothing unless it leaves the model axis, and Optuna's pruners decide trial by trial
as values arrive, which a batch never lets them do. Each batch trains to the end and the study
sees final scores only; the sampler learns between batches.

Resuming (rerun the same call; raise ``batches`` to go on). The study's storage says which
trials are told, the workdir which trials form which batch. At each crash point:

* during the asks (trials asked, ``batch-NNN.json`` not yet written): the asked trials belong
  to no batch. The rerun tells them ``FAIL`` (each trial is told once, these as failed) and asks
  the batch again. The sampler of batch ``b`` is built afresh from a seed derived from
  ``(seed, b)``, and no sampler reads failed trials, so the batch asked again is the one an
  uninterrupted loop asks;
* after ``batch-NNN.json``, during training: the batch's sweep resumes from its checkpoints
  (finished buckets are not retrained, bit for bit as uninterrupted);
* during the tells: only trials still running are told; a tell is one write to the storage;
* after the tells: the batch is done; the rerun goes on with the next one.

The study belongs to the loop: a running trial that no batch lists is taken for one asked before
an interruption and failed. Finished trials added by hand (``study.add_trial``) inform the
sampler; trials queued with ``study.enqueue_trial`` are asked first, into the next batch (an
interruption while that batch is asked fails them: queue them again).
"""

from __future__ import annotations

import json
import logging
import math
import pathlib
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from coordjax._checks import positive_int
from coordjax.sweep import workdir as wd
from coordjax.sweep.engine import run_sweep
from coordjax.sweep.experiment import Experiment, Score, check_experiment
from coordjax.sweep.grid import Grid, run_id, union
from coordjax.sweep.options import EngineOptions
from coordjax.sweep.planner import plan
from coordjax.sweep.programs import Programs
from coordjax.sweep.results import final_rows
from coordjax.sweep.space import Choice, LogUniform, Uniform

if TYPE_CHECKING:
    import optuna

logger = logging.getLogger("coordjax.sweep")

IDENTITY = "study.json"
JOURNAL = "study.journal"


def run_study(
    experiment: Experiment,
    space: Mapping[str, Any],
    workdir: str | pathlib.Path,
    *,
    batches: int,
    batch_size: int,
    base: Mapping[str, Any] | None = None,
    sampler: Callable[[int], optuna.samplers.BaseSampler] | None = None,
    seed: int = 0,
    storage: str | optuna.storages.BaseStorage | None = None,
    study_name: str = "coordjax",
    options: EngineOptions | None = None,
    programs: Programs | None = None,
) -> optuna.Study:
    """Asks ``batches`` batches of ``batch_size`` trials, trains each batch as one sweep, and
    tells every trial its score; rerunning resumes (see the module docstring).

    Args:
      experiment: whose runs the trials are (e.g. from :func:`~coordjax.sweep.supervised`).
      space: ``{key: distribution}`` over the experiment's keys: coordjax's
        :class:`~coordjax.sweep.LogUniform`, :class:`~coordjax.sweep.Uniform`,
        :class:`~coordjax.sweep.Choice`, or any ``optuna.distributions`` distribution. A
        static key (a shape) splits a batch into one program per value.
      workdir: the loop's directory (layout in the module docstring).
      batches: how many batches the study should have once this call returns (raise it on a
        rerun to go on).
      batch_size: trials per batch (models trained together).
      base: fixed config values (the rest are the experiment's defaults).
      sampler: ``sampler(seed) -> optuna sampler``, called once per batch with a seed derived
        from ``(seed, batch)``; default ``optuna.samplers.TPESampler(seed=seed)``.
      seed: seeds the samplers (not the models: the config's ``seed`` key does).
      storage: an Optuna storage or its URL; default ``workdir/study.journal``.
      study_name: the study's name in the storage.
      options: how each batch's sweep is executed.
      programs: compiled programs to reuse (the batches share one by default, so batches of
        one size compile once).

    Returns:
      The study: ``batches * batch_size`` trials told by this loop, plus any asked before an
      interruption (told ``FAIL``). Each told trial's user attrs hold its ``run_id`` and
      ``batch``; ``workdir/batch-NNN/results.csv`` holds its curves.

    Raises:
      ValueError: (one line, before anything is written) a key the experiment lacks, a
        distribution whose bounds or values the key refuses, a key both in ``space`` and in
        ``base``, a base config the experiment cannot train, or bad counts.
      WorkdirError: the workdir holds another loop (its ``study.json`` differs) or is in use.
    """
    optuna = _optuna()
    experiment = check_experiment(experiment)
    batches = positive_int("batches", batches)
    batch_size = positive_int("batch_size", batch_size)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be an int >= 0; got {seed!r}")
    if not isinstance(study_name, str) or not study_name:
        raise ValueError(f"study_name must be a non-empty str; got {study_name!r}")
    base = dict(base or {})
    distributions = _distributions(space, experiment, base)
    fixed = {**experiment.defaults(), **base}
    for key in base:
        experiment.check_key(key, base[key])
    score = experiment.score(fixed)
    # A base that cannot train (a model that does not build, a batch larger than the data) is
    # refused now, not once a batch has been asked.
    plan(Grid("base", base=base).expand(experiment), experiment=experiment)
    make_sampler = sampler or (lambda s: optuna.samplers.TPESampler(seed=s))
    workdir = pathlib.Path(workdir)
    wd.check_usable(workdir)
    identity = {
        "experiment": experiment.name,
        "study_name": study_name,
        "storage": JOURNAL if storage is None else _describe(storage),
        "space": {k: json.loads(optuna.distributions.distribution_to_json(d))
                  for k, d in distributions.items()},  # fmt: skip
        "base": base,
        "batch_size": batch_size,
        "seed": seed,
        "sampler": type(make_sampler(_batch_seed(seed, 0))).__name__,
        "score": list(score),
    }
    programs = Programs() if programs is None else programs
    with wd.locked(workdir):
        _check_identity(workdir, identity)
        if storage is None:
            storage = optuna.storages.JournalStorage(
                optuna.storages.journal.JournalFileBackend(str(workdir / JOURNAL))
            )
        storage = optuna.storages.get_storage(storage)
        study = optuna.create_study(
            storage=storage, study_name=study_name, load_if_exists=True,
            direction="maximize" if score.larger_is_better else "minimize",
        )  # fmt: skip
        _check_direction(study, score)
        for batch in range(batches):
            # A fresh sampler per batch, seeded by the batch: what it asks depends on the told
            # trials alone, not on how many batches this process asked before.
            study.sampler = make_sampler(_batch_seed(seed, batch))
            trials = _read_batch(workdir, batch)
            if trials is None:
                _fail_orphans(study, workdir)
                trials = _ask(study, distributions, fixed, experiment, score, batch, batch_size)
                _write_batch(workdir, batch, trials)
                trials = _read_batch(workdir, batch)  # the batch as a rerun will see it
            running = {t.number for t in _running(study)}
            pending = [t for t in trials if t["number"] in running]
            if not pending:
                continue
            logger.info(
                "batch %d of %d: %d trials to train and tell in %s",
                batch + 1, batches, len(pending), _batch_dir(workdir, batch),
            )  # fmt: skip
            sweep = _batch_sweep(experiment, study_name, batch, base, trials)
            run_sweep(sweep, _batch_dir(workdir, batch), options=options, programs=programs)
            _tell(study, pending, wd.read_results(_batch_dir(workdir, batch)), score)
    return study


def _optuna():
    try:
        import optuna
    except ImportError:
        raise ImportError(
            'coordjax.sweep.run_study needs Optuna: pip install "coordjax[optuna]"'
        ) from None
    return optuna


def _batch_seed(seed: int, batch: int) -> int:
    """The sampler seed of batch ``batch``: independent of every other batch's, the same on
    every rerun."""
    return int(np.random.SeedSequence([seed, batch]).generate_state(1)[0])


def _batch_dir(workdir: pathlib.Path, batch: int) -> pathlib.Path:
    return workdir / f"batch-{batch:03d}"


def _distributions(space, experiment: Experiment, base: Mapping[str, Any]) -> dict:
    """``space`` as Optuna distributions, each checked against its key (ValueError)."""
    optuna = _optuna()
    dists = optuna.distributions
    if not isinstance(space, Mapping) or not space:
        raise ValueError(f"space must be a non-empty dict of key -> distribution; got {space!r}")
    out = {}
    for key, value in space.items():
        if key not in experiment.keys:
            raise ValueError(f"unknown key {key!r} in space; allowed: {sorted(experiment.keys)}")
        if key in base:
            raise ValueError(f"key {key!r} is both in space and in base; give it in one")
        if isinstance(value, LogUniform):
            value = dists.FloatDistribution(value.low, value.high, log=True)
        elif isinstance(value, Uniform):
            value = dists.FloatDistribution(value.low, value.high)
        elif isinstance(value, Choice):
            value = dists.CategoricalDistribution(value.values)
        elif not isinstance(value, dists.BaseDistribution):
            raise ValueError(
                f"space[{key!r}] must be coordjax.sweep.LogUniform, Uniform, Choice or an "
                f"optuna distribution; got {value!r}"
            )
        if isinstance(value, dists.CategoricalDistribution):
            edges = value.choices
        else:
            edges = (value.low, value.high)
        for edge in edges:
            experiment.check_key(key, edge)
        out[key] = value
    return out


def _describe(storage) -> str:
    return storage if isinstance(storage, str) else type(storage).__name__


def _check_identity(workdir: pathlib.Path, identity: dict) -> None:
    """Records the loop's identity, or refuses (WorkdirError) a workdir holding another loop."""
    path = workdir / IDENTITY
    identity = json.loads(json.dumps(identity))
    if not path.exists():
        wd.atomic_write_text(path, json.dumps(identity, indent=2))
        return
    held = json.loads(path.read_text())
    if held != identity:
        changes = wd.differences(held, identity)
        raise wd.WorkdirError(
            f"workdir {workdir} holds another study loop (differs in {'; '.join(changes[:3])}); "
            "choose another workdir"
        )


def _check_direction(study, score: Score) -> None:
    want = "MAXIMIZE" if score.larger_is_better else "MINIMIZE"
    if study.direction.name != want:
        raise ValueError(
            f"study {study.study_name!r} in this storage is {study.direction.name.lower()}d, but "
            f"the score {score.metric} is to {want.lower()}; use another study_name"
        )


def _running(study) -> list:
    state = _optuna().trial.TrialState.RUNNING
    return study.get_trials(deepcopy=False, states=(state,))


def _read_batch(workdir: pathlib.Path, batch: int) -> list[dict] | None:
    path = workdir / f"batch-{batch:03d}.json"
    return json.loads(path.read_text())["trials"] if path.exists() else None


def _write_batch(workdir: pathlib.Path, batch: int, trials: list[dict]) -> None:
    text = json.dumps({"batch": batch, "trials": trials}, indent=2)
    wd.atomic_write_text(workdir / f"batch-{batch:03d}.json", text)


def _fail_orphans(study, workdir: pathlib.Path) -> None:
    """Tells ``FAIL`` to running trials that no batch lists: asked before an interruption, before
    their batch was recorded (the batch is asked again)."""
    listed = set()
    for path in workdir.glob("batch-*.json"):
        listed |= {t["number"] for t in json.loads(path.read_text())["trials"]}
    orphans = [t.number for t in _running(study) if t.number not in listed]
    if orphans:
        logger.warning("trials %s were asked before an interruption and belong to no batch: "
                       "told FAIL, their batch is asked again", orphans)  # fmt: skip
    for number in orphans:
        study.tell(number, state=_optuna().trial.TrialState.FAIL)


def _ask(study, distributions, fixed, experiment, score, batch, batch_size) -> list[dict]:
    """Asks ``batch_size`` trials; each config is validated and its run id recorded on it."""
    trials = []
    for _ in range(batch_size):
        trial = study.ask(distributions)
        params = {k: trial.params[k] for k in distributions}
        config = {**fixed, **params}
        experiment.validate(config)
        if experiment.score(config) != score:
            raise ValueError(
                f"trial {trial.number}'s config {params} is scored by "
                f"{experiment.score(config).metric}, not {score.metric}: the space must not "
                "change the experiment's score"
            )
        rid = run_id(config, experiment)
        trial.set_user_attr("run_id", rid)
        trial.set_user_attr("batch", batch)
        trials.append({"number": trial.number, "run_id": rid, "params": params})
    return trials


def _batch_sweep(experiment, study_name, batch, base, trials):
    """The batch as a sweep: one single-run grid per trial (two trials with the same config
    share one run)."""
    grids = [Grid(f"trial-{t['number']}", base={**base, **t["params"]}) for t in trials]
    return union(f"{study_name}-batch-{batch:03d}", grids,
                 f"batch {batch} of study {study_name!r}", experiment=experiment)  # fmt: skip


def _tell(study, pending: list[dict], results, score: Score) -> None:
    """Tells each pending trial its run's score at the last evaluation (FAIL if it diverged)."""
    fail = _optuna().trial.TrialState.FAIL
    final = final_rows(results).set_index("run_id")
    for trial in pending:
        row = final.loc[trial["run_id"]]
        value = float(row[score.metric])
        if row["status"] != "finished" or bool(row["diverged"]) or not math.isfinite(value):
            study.tell(trial["number"], state=fail)
        else:
            study.tell(trial["number"], value)

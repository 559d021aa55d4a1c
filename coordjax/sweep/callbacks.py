"""Host callbacks: what a running sweep tells trackers, between its compiled chunks.

A :class:`Callback` is a host object whose methods the engine calls between compiled chunks,
never inside ``jit`` or ``vmap`` (an ``io_callback`` under ``vmap`` runs once per model, one after
the other): when a sweep starts, after each evaluation of a bucket (with the bucket's run ids and
``[M]`` arrays of its metrics), after each rung's decision (successive halving), at the end, and
when the call returns or fails (``close``). Callbacks only read: the engine hands them copies of
host numbers it has already recorded in the workdir, so a sweep with callbacks trains and records
exactly what one without does.

An evaluation is reported once it is recorded (``results.csv``) and checkpointed; a process killed
just before a callback ran leaves the evaluation in ``results.csv`` only, so a tracker that must
not miss points reads the table it is given at the start (:attr:`SweepStart.results`; that is what
:class:`coordjax.sweep.tensorboard.TensorBoard` does).

>>> class Count(Callback):
...     def __init__(self):
...         self.rows = 0
...     def on_evaluation(self, evaluation):
...         self.rows += len(evaluation.run_ids)
>>> Count().rows
0
"""

from __future__ import annotations

import pathlib
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
import pandas as pd


class SweepStart(NamedTuple):
    """What a sweep is, as a call to ``run_sweep`` starts it.

    Attributes:
      sweep: the sweep's name.
      workdir: its workdir.
      experiment: the experiment's name.
      runs: every run's config (``Sweep.expand()``: the experiment's keys, ``grid``, ``run_id``).
      keys: the experiment's config keys, in order.
      metrics: ``{results column: larger is better}`` for every ``train_<m>`` / ``test_<m>``.
      results: the results table as this process found it (empty for a new workdir); rows in it
        are not reported again unless retraining recomputes them (the same numbers).
      shared: True in a fanned-out sweep (other processes train and report other buckets).
    """

    sweep: str
    workdir: pathlib.Path
    experiment: str
    runs: tuple[dict[str, Any], ...]
    keys: tuple[str, ...]
    metrics: Mapping[str, bool]
    results: pd.DataFrame
    shared: bool = False


class Evaluation(NamedTuple):
    """One evaluation of a bucket: its ``M`` runs at one epoch (padding copies dropped).

    Attributes:
      bucket_id: the bucket.
      epoch: the epoch evaluated (every run of the bucket is at it).
      run_ids: ``(M,)`` the runs evaluated, in model-axis order.
      metrics: ``{results column: (M,) array}``: every metric the experiment reports
        (``train_<m>``, ``test_<m>``, ``epoch_train_loss``, ``diverged``, ...), as recorded.
      status: ``(M,)`` each run's status after this evaluation (``running``, ``finished`` or
        ``diverged``; a rung's decision comes after its evaluation).
    """

    bucket_id: str
    epoch: int
    run_ids: tuple[str, ...]
    metrics: Mapping[str, np.ndarray]
    status: np.ndarray


class Rung(NamedTuple):
    """A rung's decision (successive halving) over every run it ranked.

    Attributes:
      epoch: the rung's epoch.
      run_ids: ``(M,)`` the runs ranked (every group, best first within each).
      metric: ``(M,)`` the column each run was ranked by.
      values: ``(M,)`` float, each run's value of it at the rung (NaN where not finite).
      kept: ``(M,)`` bool, whether the run trains on.
      replayed: the decision was recorded before this call (a resumed sweep replays it).
    """

    epoch: int
    run_ids: tuple[str, ...]
    metric: np.ndarray
    values: np.ndarray
    kept: np.ndarray
    replayed: bool


class Callback:
    """Host hooks of a sweep; every method does nothing unless overridden.

    Subclass it and pass instances to ``run_sweep(..., callbacks=[...])``. A method that raises
    stops the sweep there; everything it recorded so far is kept and a rerun resumes.
    """

    def on_start(self, start: SweepStart) -> None:
        """The sweep starts (or resumes) in this process."""

    def on_evaluation(self, evaluation: Evaluation) -> None:
        """A bucket was evaluated, recorded and checkpointed."""

    def on_rung(self, rung: Rung) -> None:
        """A rung's decision was taken (or replayed) and recorded."""

    def on_end(self, results: pd.DataFrame) -> None:
        """Every run of the sweep is done; ``results`` is the whole table."""

    def close(self) -> None:
        """The call returns or fails (also after a Ctrl-C): flush and release what is held."""


def check_callbacks(callbacks: Sequence[Any]) -> tuple[Callback, ...]:
    """``callbacks`` as a tuple; ValueError (one line) for an entry that is not a Callback."""
    if isinstance(callbacks, Callback):
        callbacks = (callbacks,)
    callbacks = tuple(callbacks)
    for callback in callbacks:
        if not isinstance(callback, Callback):
            raise ValueError(
                "callbacks must be coordjax.sweep.Callback instances (subclass it); got "
                f"{type(callback).__name__}"
            )
    return callbacks


def evaluation(bucket_id: str, rows: Sequence[Mapping[str, Any]],
               columns: Sequence[str]) -> Evaluation:  # fmt: skip
    """The :class:`Evaluation` of a bucket's results rows at one epoch (with ``status``);
    ``columns``: the metric columns."""
    return Evaluation(
        bucket_id=bucket_id,
        epoch=int(rows[0]["epoch"]),
        run_ids=tuple(row["run_id"] for row in rows),
        metrics={c: np.asarray([row[c] for row in rows]) for c in columns},
        status=np.asarray([row.get("status", "running") for row in rows], dtype=object),
    )


def rung(decision: Mapping[str, Any], replayed: bool) -> Rung:
    """The :class:`Rung` of a recorded decision (:func:`coordjax.sweep.pruning.decide`)."""
    ranked = [(group["metric"], run) for group in decision["groups"] for run in group["runs"]]
    values = [np.nan if run["value"] is None else run["value"] for _, run in ranked]
    return Rung(
        epoch=int(decision["epoch"]),
        run_ids=tuple(run["run_id"] for _, run in ranked),
        metric=np.asarray([metric for metric, _ in ranked], dtype=object),
        values=np.asarray(values, dtype=np.float64),
        kept=np.asarray([bool(run["kept"]) for _, run in ranked], dtype=bool),
        replayed=replayed,
    )


def notify(callbacks: Sequence[Callback], method: str, event: Any) -> None:
    """Calls ``method`` of each callback with ``event``, in order."""
    for callback in callbacks:
        getattr(callback, method)(event)

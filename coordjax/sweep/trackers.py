"""Trackers as :class:`~coordjax.sweep.Callback` s: one TensorBoard run, or one W&B run, per model.

One process trains M models at once, so a tracker that follows the process would see one run;
these split it, one run per model, named by its run id, its config keys as hyperparameters.

* :class:`TensorBoard` ``(logdir)`` (``pip install 'coordjax[tensorboard]'``: tensorboardX):
  ``logdir/<run_id>/`` holds the run's scalars (every ``train_*`` / ``test_*`` metric and
  ``epoch_train_loss`` at every evaluation, the step being the epoch), its config as hparams for
  the HParams tab, a ``pruned`` scalar (1 pruned, 0 kept) at each rung that ranked it, and the
  session's end (failure when diverged, else success). It writes what ``results.csv`` holds
  and it has not written yet (a small ``coordjax.json`` beside the events remembers how far it
  got), so a resumed sweep adds no duplicate points, and pointing it at a finished workdir
  writes the whole history.
* :class:`WandB` ``(project)`` (``pip install 'coordjax[wandb]'``): one W&B run per model
  (``reinit="create_new"``), grouped by the sweep, ``config`` = the run's keys; evaluations
  already in ``results.csv`` when the process starts are not logged again.

tensorboardX and wandb are imported when a tracker is made, never by the engine.
"""

from __future__ import annotations

import collections
import hashlib
import json
import os
import pathlib
import re
import time
from typing import Any

import numpy as np

from coordjax.sweep.callbacks import Callback, Evaluation, Rung, SweepStart

MARKER = "coordjax.json"
"""Per run directory: the last epoch written and the rungs marked (what a resumed sweep skips)."""

MAX_OPEN_WRITERS = 128  # event files kept open at once; the least recent is closed past it
# The session ends TensorBoard's HParams tab knows (it has no "stopped early"; the pruned scalar
# says that).
END_STATUSES = {"finished": "STATUS_SUCCESS", "diverged": "STATUS_FAILURE",
                "pruned": "STATUS_SUCCESS"}  # fmt: skip


def _missing(package: str, extra: str) -> ImportError:
    return ImportError(
        f"{package} is not installed; `pip install 'coordjax[{extra}]'` (or `pip install "
        f"{package}`) to use this tracker"
    )


def hparams_of(config: dict[str, Any], keys) -> dict[str, Any]:
    """A run's config keys (and grid) as plain str / int / float / bool values."""
    out = {}
    for key in ("grid", *keys):
        if key in config:
            value = config[key]
            out[key] = value.item() if isinstance(value, np.generic) else value
    return out


def metric_tags(start: SweepStart) -> list[str]:
    """The scalar tags written per evaluation: the experiment's metric columns, then the last
    epoch's training loss."""
    return [*start.metrics, "epoch_train_loss"]


class TensorBoard(Callback):
    """One TensorBoard run per model under ``logdir`` (see the module docstring).

    Args:
      logdir: the directory TensorBoard is pointed at (``tensorboard --logdir DIR``).

    In a fanned-out sweep each process writes the runs it trains (and marks, at a rung, the runs
    whose rung evaluation it wrote); it writes no history at its start.
    """

    def __init__(self, logdir: str | pathlib.Path):
        try:
            import tensorboardX  # noqa: F401  (optional: the tensorboard extra)
        except ImportError as err:
            raise _missing("tensorboardX", "tensorboard") from err
        self.logdir = pathlib.Path(logdir)
        if self.logdir.exists() and not self.logdir.is_dir():
            raise ValueError(f"logdir {self.logdir} is a file, not a directory")
        self._writers: collections.OrderedDict[str, Any] = collections.OrderedDict()
        self._marks: dict[str, dict[str, Any]] = {}
        self._configs: dict[str, dict[str, Any]] = {}
        self._tags: list[str] = []
        self._written_here: dict[str, int] = {}  # run_id -> last epoch this process wrote
        self._shared = False

    # -- the callback ---------------------------------------------------------------------------

    def on_start(self, start: SweepStart) -> None:
        self.logdir.mkdir(parents=True, exist_ok=True)
        self._configs = {r["run_id"]: hparams_of(r, start.keys) for r in start.runs}
        self._tags = metric_tags(start)
        self._shared = start.shared
        if start.shared or start.results.empty:
            return
        # What results.csv holds and this directory lacks: a resume adds only the new points.
        results = start.results.sort_values("epoch")
        for run_id, history in results.groupby("run_id", sort=False):
            done = self._mark(run_id)["epoch"]
            for _, row in history.loc[history["epoch"].astype(int) > done].iterrows():
                values = {t: row[t] for t in self._tags if t in row}
                self._write_evaluation(run_id, int(row["epoch"]), values, row.get("status"))
        self._flush_all()

    def on_evaluation(self, evaluation: Evaluation) -> None:
        for i, run_id in enumerate(evaluation.run_ids):
            if evaluation.epoch <= self._mark(run_id)["epoch"]:
                continue  # written before (a resumed bucket recomputes its rows past a checkpoint)
            values = {t: evaluation.metrics[t][i] for t in self._tags if t in evaluation.metrics}
            self._write_evaluation(run_id, evaluation.epoch, values, evaluation.status[i])
            self._written_here[run_id] = evaluation.epoch
        self._flush_all()

    def on_rung(self, rung: Rung) -> None:
        for run_id, kept in zip(rung.run_ids, rung.kept, strict=True):
            mark = self._mark(run_id)
            if rung.epoch in mark["rungs"]:
                continue
            if self._shared and self._written_here.get(run_id) != rung.epoch:
                continue  # another process wrote this run's rung evaluation
            writer = self._writer(run_id)
            writer.write_event(self._event(_scalar("pruned", 0.0 if kept else 1.0), rung.epoch))
            mark["rungs"].append(rung.epoch)
            mark["dirty"] = True
            if not kept:
                self._end(run_id, "pruned")
        self._flush_all()

    def close(self) -> None:
        for writer in self._writers.values():
            writer.close()
        self._writers.clear()

    # -- writing --------------------------------------------------------------------------------

    def _write_evaluation(self, run_id, epoch, values, status) -> None:
        writer = self._writer(run_id)
        for tag, value in values.items():
            writer.write_event(self._event(_scalar(tag, _float(value)), epoch))
        mark = self._mark(run_id)
        mark.update(epoch=epoch, dirty=True)
        if status in ("finished", "diverged"):
            self._end(run_id, status)

    def _end(self, run_id, status) -> None:
        mark = self._mark(run_id)
        if mark.get("ended"):
            return
        from tensorboardX.proto.api_pb2 import Status
        from tensorboardX.proto.plugin_hparams_pb2 import HParamsPluginData, SessionEndInfo

        info = SessionEndInfo(status=Status.Value(END_STATUSES[status]))
        content = HParamsPluginData(session_end_info=info, version=0)
        summary = _plugin_summary("_hparams_/session_end_info", content)
        self._writer(run_id).write_event(self._event(summary, mark["epoch"]))
        mark.update(ended=status, dirty=True)

    def _writer(self, run_id):
        """The run's open events file (a new file when it was closed: each name sorts after the
        run's earlier files, so TensorBoard reads the points in the order they were written)."""
        if run_id in self._writers:
            self._writers.move_to_end(run_id)
            return self._writers[run_id]
        from tensorboardX.event_file_writer import EventsWriter

        directory = self.logdir / run_id
        directory.mkdir(parents=True, exist_ok=True)
        writer = EventsWriter(str(directory / "events"), f".{time.time_ns():020d}.{os.getpid()}")
        self._writers[run_id] = writer
        mark = self._mark(run_id)
        if not mark.get("hparams"):
            from tensorboardX.summary import hparams

            # The session's hparams alone: TensorBoard infers the experiment from all sessions
            # (which hparams differ, every scalar tag as a metric).
            _, start, _ = hparams(self._configs.get(run_id, {}), {})
            writer.write_event(self._event(start, 0))
            mark.update(hparams=True, dirty=True)
        while len(self._writers) > MAX_OPEN_WRITERS:
            _, oldest = self._writers.popitem(last=False)
            oldest.close()
        return writer

    def _event(self, summary, step: int):
        from tensorboardX.proto.event_pb2 import Event

        return Event(summary=summary, step=int(step), wall_time=time.time())

    def _flush_all(self) -> None:
        """Events first, then the markers: a process killed in between rewrites the points
        after the marker (the same numbers), it never skips one."""
        for writer in self._writers.values():
            writer.flush()
        for run_id in list(self._marks):
            if self._marks[run_id].get("dirty"):
                self._save_mark(run_id)

    # -- the per-run marker ---------------------------------------------------------------------

    def _mark(self, run_id) -> dict[str, Any]:
        if run_id not in self._marks:
            path = self.logdir / run_id / MARKER
            mark = json.loads(path.read_text()) if path.is_file() else {}
            self._marks[run_id] = {"epoch": 0, "rungs": [], **mark}
        return self._marks[run_id]

    def _save_mark(self, run_id) -> None:
        from coordjax.sweep.workdir import atomic_write_text

        mark = {k: v for k, v in self._marks[run_id].items() if k != "dirty"}
        atomic_write_text(self.logdir / run_id / MARKER, json.dumps(mark))
        self._marks[run_id]["dirty"] = False


def _float(value) -> float:
    return float(np.asarray(value, dtype=np.float64))


def _scalar(tag: str, value: float):
    from tensorboardX.summary import scalar

    return scalar(tag, value)


def _plugin_summary(tag, content):
    from tensorboardX.proto.summary_pb2 import Summary, SummaryMetadata

    metadata = SummaryMetadata(plugin_data=SummaryMetadata.PluginData(
        plugin_name="hparams", content=content.SerializeToString()))  # fmt: skip
    return Summary(value=[Summary.Value(tag=tag, metadata=metadata)])


# -- W&B -------------------------------------------------------------------------------------------


class WandB(Callback):
    """One W&B run per model, grouped by the sweep (see the module docstring).

    Args:
      project: the W&B project.
      group: the runs' group (default: the sweep's name).
      mode: ``"online"``, ``"offline"`` or ``"disabled"`` (default: wandb's own, e.g.
        ``$WANDB_MODE``).
      **init: more ``wandb.init`` arguments (``entity``, ``dir``, ``tags``, ...).

    Each model's W&B run id derives from its run id and the workdir, so a resumed sweep logs
    into the same runs (``resume="allow"``). Needs wandb >= 0.19.10 (``reinit="create_new"``).
    """

    def __init__(self, project: str, *, group: str | None = None, mode: str | None = None,
                 **init: Any):  # fmt: skip
        try:
            import wandb
        except ImportError as err:
            raise _missing("wandb", "wandb") from err
        self._wandb = wandb
        self.project, self.group, self.mode, self.init = project, group, mode, init
        self._runs: dict[str, Any] = {}
        self._configs: dict[str, dict[str, Any]] = {}
        self._logged: set[tuple[str, int]] = set()
        self._tags: list[str] = []
        self._group = group
        self._workdir_hash = ""

    def on_start(self, start: SweepStart) -> None:
        self._configs = {r["run_id"]: hparams_of(r, start.keys) for r in start.runs}
        self._tags = metric_tags(start)
        self._group = self.group or start.sweep
        self._workdir_hash = hashlib.sha1(str(start.workdir.absolute()).encode()).hexdigest()[:8]
        if not start.results.empty:
            self._logged = set(zip(start.results["run_id"], start.results["epoch"].astype(int),
                                   strict=True))  # fmt: skip

    def on_evaluation(self, evaluation: Evaluation) -> None:
        for i, run_id in enumerate(evaluation.run_ids):
            if (run_id, evaluation.epoch) in self._logged:
                continue
            values = {t: _float(evaluation.metrics[t][i]) for t in self._tags
                      if t in evaluation.metrics}  # fmt: skip
            run = self._run(run_id)
            run.log(values, step=evaluation.epoch)
            self._logged.add((run_id, evaluation.epoch))
            if evaluation.status[i] in ("finished", "diverged"):
                self._finish(run_id, evaluation.status[i])

    def on_rung(self, rung: Rung) -> None:
        if rung.replayed:
            return
        for run_id, kept in zip(rung.run_ids, rung.kept, strict=True):
            if not kept:
                run = self._run(run_id)
                run.log({"pruned": 1.0}, step=rung.epoch)
                self._finish(run_id, "pruned")

    def close(self) -> None:
        for run_id in list(self._runs):
            self._runs.pop(run_id).finish()

    def _run(self, run_id):
        if run_id not in self._runs:
            run_key = re.sub(r"[^A-Za-z0-9_-]", "-", run_id)
            self._runs[run_id] = self._wandb.init(
                project=self.project, group=self._group, name=run_id,
                id=f"{run_key}-{self._workdir_hash}", config=self._configs.get(run_id, {}),
                reinit="create_new", resume="allow", mode=self.mode, **self.init,
            )  # fmt: skip
        return self._runs[run_id]

    def _finish(self, run_id, status) -> None:
        run = self._runs.pop(run_id, None)
        if run is not None:
            run.summary["status"] = status
            run.finish()

"""One trained model out of a sweep's workdir, in a standard format: ``coordjax export``.

:func:`export_model` writes a directory holding

* ``variables.msgpack``: the model's Flax variables (``{"params": ...}``, plus ``"batch_stats"``
  when the model has statistics) at its own shapes (cut out of a padded bucket), serialised by
  ``flax.serialization.msgpack_serialize``;
* ``config.json``: its run id, sweep, experiment, the epoch exported, its config keys and its
  recorded metrics at that epoch.

:func:`load_export` reads both back; the experiment's model applies the variables directly
(``model.apply(variables, x)``). :func:`best_finished_run` picks a run by a metric, in the
direction the experiment gives it.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import tempfile
from typing import Any

import numpy as np
import pandas as pd

from coordjax.sweep import workdir as wd
from coordjax.sweep.results import final_rows

VARIABLES = "variables.msgpack"
CONFIG = "config.json"

# Results columns that are not a run's config keys (for workdirs that did not record their keys).
_ENGINE_COLUMNS = {"bucket_id", "param_count", "strategy", "epoch", "step", "wall_time",
                   "bucket_model_steps", "status", "pruned_epoch", "epoch_train_loss",
                   "diverged", "diverged_step"}  # fmt: skip


def _workdir_records(workdir: pathlib.Path) -> tuple[dict[str, Any], pd.DataFrame]:
    config = wd.read_config(workdir) if workdir.is_dir() else None
    if config is None:
        raise ValueError(f"workdir {workdir} is not a sweep workdir (it has no {wd.CONFIG})")
    results = wd.read_results(workdir)
    if results.empty:
        raise ValueError(f"workdir {workdir} has no results yet; nothing to export")
    return config, results


def metric_directions(config: dict[str, Any]) -> dict[str, bool]:
    """``{results column: larger is better}`` from a workdir's ``config.json`` (older workdirs:
    their scores and the scores' train twins)."""
    if "metrics" in config:
        return {k: bool(v) for k, v in config["metrics"].items()}
    out = {}
    for bucket in config.get("plan", []):
        if "score" in bucket:
            column, larger = bucket["score"]
            name = column.split("_", 1)[1]
            out.update({f"train_{name}": bool(larger), f"test_{name}": bool(larger)})
    return out


def best_finished_run(workdir: str | pathlib.Path, metric: str) -> str:
    """The run id of the best run that finished (not pruned, not diverged) by ``metric`` at its
    last evaluation, larger or smaller as the experiment says; ties go to the smaller run id.

    Raises ValueError (one line) for an unknown metric or when no run has finished.
    """
    workdir = pathlib.Path(workdir)
    config, results = _workdir_records(workdir)
    directions = metric_directions(config)
    if metric not in directions or metric not in results:
        raise ValueError(f"metric {metric!r} is not one of this workdir's metrics: "
                         f"{sorted(directions)}")  # fmt: skip
    final = final_rows(results)
    done = final.loc[(final["status"] == "finished") & final[metric].notna()]
    if done.empty:
        raise ValueError(f"no run of workdir {workdir} has finished with a value of {metric}")
    larger = directions[metric]
    ranked = done.assign(_key=-done[metric] if larger else done[metric])
    return str(ranked.sort_values(["_key", "run_id"]).iloc[0]["run_id"])


def export_model(
    workdir: str | pathlib.Path,
    run_id: str,
    out: str | pathlib.Path,
    *,
    experiment: Any = None,
) -> pathlib.Path:
    """Writes run ``run_id``'s model to the new directory ``out`` (see the module docstring).

    Args:
      workdir: a sweep's workdir.
      run_id: a run that finished or was pruned (its rung's checkpoint).
      out: the directory to create; it must not exist.
      experiment: the sweep's :class:`~coordjax.sweep.Experiment`, needed only for a run trained
        padded inside a larger model of an experiment other than the paper's.

    Returns:
      ``out``. Raises ValueError (one line) for an unknown run, one still running or diverged,
      or an existing ``out``; nothing is written then.
    """
    import flax.serialization  # JAX: only when a model is exported

    workdir, out = pathlib.Path(workdir), pathlib.Path(out)
    config, results = _workdir_records(workdir)
    if out.exists():
        raise ValueError(f"out path {out} exists; choose another or remove it")
    if not out.parent.is_dir():
        raise ValueError(f"out path {out}: its folder {out.parent} does not exist")
    history = results.loc[results["run_id"] == run_id]
    if history.empty:
        known = sorted(results["run_id"].unique())
        raise ValueError(f"run id {run_id!r} is not in workdir {workdir} (it has "
                         f"{len(known)} runs, e.g. {known[:3]})")  # fmt: skip
    last = history.sort_values("epoch").iloc[-1]
    status = str(last.get("status", "running"))
    if status == "running":
        raise ValueError(f"run {run_id!r} has not finished (epoch {int(last['epoch'])} of "
                         f"{int(last['epochs'])}); resume the sweep first")  # fmt: skip
    if status == "diverged":
        raise ValueError(f"run {run_id!r} diverged (at step {int(last['diverged_step'])}); its "
                         "parameters are not finite")  # fmt: skip
    bucket = next((b for b in config["plan"] if run_id in b["run_ids"]), {})
    if bucket.get("padded") and experiment is None and config.get("experiment") != "paper":
        raise ValueError(f"run {run_id!r} trained padded inside a larger model of experiment "
                         f"{config.get('experiment')!r}; export it from Python with "
                         "export_model(..., experiment=...)")  # fmt: skip
    variables = wd.export_run(workdir, run_id, experiment=experiment)
    keys = config.get("keys") or [c for c in history.columns if c not in _ENGINE_COLUMNS
                                  and not c.startswith(("train_", "test_"))]  # fmt: skip
    record = {
        "run_id": run_id,
        "sweep": config["identity"]["sweep"],
        "preset": config["identity"].get("preset", ""),
        "experiment": config.get("experiment", "paper"),
        "epoch": int(last["epoch"]),
        "status": status,
        "config": {k: _plain(last[k]) for k in ("grid", *keys) if k in last},
        "metrics": {c: _plain(last[c]) for c in metric_directions(config) if c in last},
        "param_count": int(last["param_count"]),
        "variables": VARIABLES,
    }
    # Written beside ``out`` and renamed: an interrupted export leaves nothing at ``out``.
    staging = pathlib.Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        (staging / VARIABLES).write_bytes(flax.serialization.msgpack_serialize(variables))
        (staging / CONFIG).write_text(json.dumps(record, indent=1) + "\n")
        os.chmod(staging, 0o777 & ~wd.current_umask())  # mkdtemp makes it private (0700)
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out


def load_export(path: str | pathlib.Path) -> tuple[dict[str, Any], dict]:
    """``(config, variables)`` of a model :func:`export_model` wrote to ``path``: its
    ``config.json`` and its Flax variables (NumPy arrays), ready for ``model.apply``."""
    import flax.serialization

    path = pathlib.Path(path)
    config = json.loads((path / CONFIG).read_text())
    variables = flax.serialization.msgpack_restore((path / config["variables"]).read_bytes())
    return config, variables


def _plain(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and np.isnan(value):
        return None
    return value

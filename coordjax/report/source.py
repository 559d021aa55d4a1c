"""Reading a sweep's workdir for a report: config.json and results.csv, and how complete it is.

Only the workdir is read (the contract of ``coordjax.sweep.workdir``); nothing here imports JAX.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
from typing import Any

import pandas as pd

from coordjax import paper
from coordjax.sweep.workdir import CONFIG, RESULTS, read_pruning

REQUIRED_COLUMNS = ("run_id", "task", "model", "split", "epoch", "epochs", "param_count")
GENERIC_COLUMNS = ("run_id", "grid", "epoch", "epochs", "param_count")


class ReportError(ValueError):
    """The directory is not a sweep workdir, or holds nothing to report yet."""


@dataclasses.dataclass(frozen=True)
class SweepRecord:
    """What a workdir holds.

    Attributes:
      workdir: the directory.
      config: config.json as a dict (identity, engine, versions, devices, plan).
      results: results.csv, one row per model per evaluation, with a ``family`` column added.
      final: each run's last evaluation (a subset of ``results``' rows).
      planned: run ids in the plan (config.json), in plan order.
      finished: run ids whose last evaluation is at their configured ``epochs``.
      pruned: run ids stopped at a rung by successive halving (``status`` "pruned"): done, not
        finished.
      pruning: the rung decisions (``pruning.json``; empty without a rule).
    """

    workdir: pathlib.Path
    config: dict[str, Any]
    results: pd.DataFrame
    final: pd.DataFrame
    planned: tuple[str, ...]
    finished: tuple[str, ...]
    pruned: tuple[str, ...] = ()
    pruning: tuple[dict[str, Any], ...] = ()

    @property
    def partial(self) -> bool:
        """True while some planned run has neither finished nor been pruned (still running, or
        interrupted)."""
        return len(self.finished) + len(self.pruned) < len(self.planned)

    @property
    def not_started(self) -> tuple[str, ...]:
        seen = set(self.results["run_id"])
        return tuple(r for r in self.planned if r not in seen)

    @property
    def name(self) -> str:
        identity = self.config.get("identity", {})
        preset = identity.get("preset")
        return identity.get("sweep", "?") + (f" (preset {preset})" if preset else "")


def read(workdir: str | pathlib.Path) -> SweepRecord:
    """Reads a sweep's workdir.

    Raises:
      ReportError: not a directory, no (or an unreadable) config.json or results.csv, no
        evaluation yet, or a results table without the columns a sweep writes.
    """
    workdir = pathlib.Path(workdir)
    if not workdir.is_dir():
        raise ReportError(f"{workdir} is not a directory")
    config_path = workdir / CONFIG
    if not config_path.is_file():
        raise ReportError(f"{workdir} is not a sweep workdir (it has no {CONFIG})")
    try:
        config = json.loads(config_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ReportError(f"{config_path} is not readable JSON ({err})") from None
    if not isinstance(config, dict) or "plan" not in config or "identity" not in config:
        raise ReportError(f"{config_path} is not a coordjax sweep config (no plan or identity)")
    results_path = workdir / RESULTS
    if not results_path.is_file():
        raise ReportError(f"{workdir} has no {RESULTS} yet: no model has been evaluated")
    try:
        results = pd.read_csv(results_path)
    except (OSError, UnicodeDecodeError, pd.errors.ParserError) as err:
        raise ReportError(f"{results_path} is not a readable results table ({err})") from None
    except pd.errors.EmptyDataError:
        results = pd.DataFrame()
    if results.empty:
        raise ReportError(f"{results_path} is empty: no model has been evaluated yet")
    paper_workdir = config.get("experiment", "paper") == "paper"
    required = REQUIRED_COLUMNS if paper_workdir else GENERIC_COLUMNS
    missing = [c for c in required if c not in results.columns]
    if missing:
        raise ReportError(f"{results_path} is not a coordjax results table (no {missing})")
    if "diverged" not in results:
        results["diverged"] = False
    results["diverged"] = results["diverged"].astype(bool)
    results["family"] = paper.family_of(results) if paper_workdir else results["grid"].astype(str)
    last = results.groupby("run_id")["epoch"].transform("max")
    final = results.loc[results["epoch"] == last]
    planned = tuple(r for bucket in config["plan"] for r in bucket.get("run_ids", ()))
    finished = tuple(final.loc[final["epoch"] >= final["epochs"], "run_id"])
    pruned = ()
    if "status" in final:
        pruned = tuple(final.loc[final["status"] == "pruned", "run_id"])
    if not planned:  # an old or hand-written config: the results are the plan
        planned = tuple(final["run_id"])
    decisions = tuple(read_pruning(workdir))
    return SweepRecord(workdir, config, results, final, planned, finished, pruned, decisions)

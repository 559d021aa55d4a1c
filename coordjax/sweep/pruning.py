"""Successive halving inside vmapped buckets: the rule, its decisions, and who trains on.

A :class:`Prune` rule names rung epochs. At each rung, the runs it governs are ranked within
their groups (by default the experiment's: the paper's task x model family x split, so CoordConv
and deconv never compete) by a metric at that epoch (by default the experiment's score on the
*train* split, so pruning never selects on the test set); each group keeps its top
``ceil(keep * n)`` runs, ties broken by run id, and a diverged run is always pruned.
:func:`decide` is a pure function of the results table, and its decision is written to the
workdir (``pruning.json``) before the engine acts on it; a resumed sweep replays the recorded
decision.

Pruned runs leave their bucket's model axis (:func:`model_axis`): between chunks the survivors
are gathered into a smaller stack whose size is the next rung of :data:`LADDER` (padded with
copies of the last survivor, whose results are dropped), so a bucket compiles at most one
program per ladder size it passes through, whatever the number of rungs.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from coordjax.sweep.experiment import Experiment, default_experiment

# Columns a rule may group by besides the run config's keys.
EXTRA_GROUP_KEYS = ("family", "grid")
DEFAULT_GROUP_BY = None  # the experiment's groups (the paper's: task x family x split)


def metric_names(experiment: Experiment | None = None) -> list[str]:
    """Every metric a rule may name for ``experiment`` (the paper's by default):
    ``train_<m>`` and ``test_<m>``."""
    metrics = (experiment or default_experiment()).metrics
    return [f"{side}_{m}" for side in ("train", "test") for m in metrics]


@dataclasses.dataclass(frozen=True)
class Prune:
    """A successive-halving rule: where to prune, how many to keep, by what, within which groups.

    Attributes:
      at: rung epochs, increasing; each must be an evaluation epoch of every run that reaches it
        (a rung at or past a run's last epoch does not apply to that run).
      keep: the fraction of each group kept at each rung, in (0, 1]; a group of ``n`` keeps its
        top ``ceil(keep * n)``.
      metric: a results column (``train_accuracy``, ``test_iou``, ...); None (default): the
        experiment's score on the train split. A test metric selects on the test set: the
        report says so.
      group_by: results columns ranked separately (run config keys, ``family``, ``grid``);
        None (default): the experiment's groups (the paper's: task x family x split).

    >>> Prune(at=(10, 20), keep=0.5).to_json()["at"]
    [10, 20]
    """

    at: tuple[int, ...]
    keep: float = 1 / 3
    metric: str | None = None
    group_by: tuple[str, ...] | None = DEFAULT_GROUP_BY

    def __post_init__(self):
        at = self.at
        if isinstance(at, (int, np.integer)) and not isinstance(at, bool):
            at = (at,)
        if isinstance(at, (str, bytes)) or not isinstance(at, Sequence) or not at:
            raise ValueError(f"prune.at must be a non-empty list of epochs; got {self.at!r}")
        if any(isinstance(e, bool) or not isinstance(e, (int, np.integer)) or e < 1 for e in at):
            raise ValueError(f"prune.at must hold positive int epochs; got {list(at)!r}")
        at = tuple(int(e) for e in at)
        if list(at) != sorted(set(at)):
            raise ValueError(f"prune.at must be strictly increasing; got {list(at)!r}")
        if isinstance(self.keep, bool) or not isinstance(self.keep, (int, float, np.floating)):
            raise ValueError(f"prune.keep must be a number in (0, 1]; got {self.keep!r}")
        if not 0 < self.keep <= 1:
            raise ValueError(f"prune.keep must be in (0, 1]; got {self.keep!r}")
        if self.metric is not None and not isinstance(self.metric, str):
            raise ValueError(f"prune.metric must be a results column name; got {self.metric!r}")
        group_by = self.group_by
        if isinstance(group_by, str):
            group_by = (group_by,)
        if group_by is not None:
            if not all(isinstance(k, str) for k in group_by):
                raise ValueError(f"prune.group_by must name results columns; got {group_by!r}")
            group_by = tuple(group_by)
        object.__setattr__(self, "at", at)
        object.__setattr__(self, "keep", float(self.keep))
        object.__setattr__(self, "group_by", group_by)

    def check(self, experiment: Experiment) -> None:
        """Raises ValueError naming ``prune.metric`` / ``prune.group_by`` when ``experiment``
        reports no such metric or has no such column."""
        if self.metric is not None and self.metric not in metric_names(experiment):
            raise ValueError(
                f"prune.metric must be one of {metric_names(experiment)} (or None: the "
                f"experiment's score on the train split); got {self.metric!r}"
            )
        allowed = sorted({*experiment.keys, *EXTRA_GROUP_KEYS})
        for key in self.groups(experiment):
            if key not in allowed:
                raise ValueError(f"prune.group_by may name {allowed}; got {key!r}")

    def groups(self, experiment: Experiment) -> tuple[str, ...]:
        """The columns ranked within (``group_by``, else the experiment's)."""
        return experiment.group_by if self.group_by is None else self.group_by

    def metric_for(self, experiment: Experiment, config: Mapping[str, Any]) -> tuple[str, bool]:
        """The column ranked for the run ``config`` and whether larger is better."""
        name = self.metric or experiment.score(config).on("train")
        return name, experiment.metrics[name.split("_", 1)[1]]

    def kept(self, n: int) -> int:
        """How many of a group of ``n`` survive a rung (before diverged runs are removed)."""
        # The epsilon keeps keep=1/3 of 3 at exactly 1 despite float rounding.
        return min(n, math.ceil(self.keep * n - 1e-9))

    def to_json(self, default_group_by: Sequence[str] = ()) -> dict[str, Any]:
        """The rule as JSON; ``group_by`` resolved (None: ``default_group_by``, the sweep's
        experiment's)."""
        groups = default_group_by if self.group_by is None else self.group_by
        return {"at": list(self.at), "keep": self.keep, "metric": self.metric,
                "group_by": list(groups)}  # fmt: skip

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Prune:
        return cls(at=tuple(data["at"]), keep=data["keep"], metric=data["metric"],
                   group_by=tuple(data["group_by"]))  # fmt: skip


def applies(rule: Prune, rung: int, config: Mapping[str, Any]) -> bool:
    """Whether ``rung`` prunes the run ``config`` (it is a rung of the rule before its end)."""
    return rung in rule.at and rung < config["epochs"]


def check_rule(
    rule: Prune, runs: Sequence[Mapping[str, Any]], where: str, experiment: Experiment
) -> None:
    """Raises ValueError naming ``prune.at`` when a rung is not an evaluation epoch of a run
    that reaches it, or applies to no run, and ``prune.metric`` / ``prune.group_by`` when the
    experiment has no such metric or column."""
    from coordjax.train import chunk_lengths  # JAX: loads only when a rule is checked

    rule.check(experiment)
    for rung in rule.at:
        reached = [r for r in runs if applies(rule, rung, r)]
        if not reached:
            raise ValueError(
                f"{where}: prune.at rung {rung} is at or past the last epoch of every run it "
                f"governs (epochs: {sorted({r['epochs'] for r in runs})}); use earlier rungs"
            )
        for run in reached:
            ends = np.cumsum(chunk_lengths(run["epochs"], run["eval_every"])).tolist()
            if rung not in ends:
                raise ValueError(
                    f"{where}: prune.at rung {rung} is not an evaluation epoch of grid "
                    f"{run['grid']!r} (eval_every={run['eval_every']}, epochs={run['epochs']}); "
                    "use multiples of eval_every"
                )
    if rule.metric is not None:
        return
    for run in runs:
        name = experiment.score(run).on("train").split("_", 1)[1]
        if name not in experiment.metrics:
            raise ValueError(
                f"{where}: the experiment's score {experiment.score(run).metric!r} is not among "
                f"its metrics {sorted(experiment.metrics)}; name prune.metric"
            )


def rung_epochs(rules: Mapping[str, Prune], runs: Sequence[Mapping[str, Any]]) -> list[int]:
    """The rungs that apply to at least one run, ascending (``rules``: run_id -> rule)."""
    epochs = set()
    for run in runs:
        rule = rules.get(run["run_id"])
        if rule is not None:
            epochs.update(e for e in rule.at if applies(rule, e, run))
    return sorted(epochs)


def decide(
    results: pd.DataFrame,
    rung: int,
    rules: Mapping[str, Prune],
    runs: Sequence[Mapping[str, Any]],
    pruned_at: Mapping[str, int],
    experiment: Experiment | None = None,
) -> dict[str, Any]:
    """The decision at ``rung``: a pure function of the results table.

    Args:
      results: the results table (rows at epoch ``rung`` of every candidate are required).
      rung: the rung epoch.
      rules: run_id -> its rule (runs without a rule are never pruned).
      runs: the sweep's run configs (``Sweep.expand``).
      pruned_at: run_id -> the rung that pruned it, for earlier rungs.
      experiment: the runs' experiment (scores, families, groups; default: the paper's).

    Returns:
      ``{"epoch": rung, "groups": [...]}``; each group: its key values, the ranked metric, the
      number kept, and per run (best first) ``run_id``, ``value``, ``diverged``, ``kept``.
    """
    candidates = [
        r for r in runs
        if r["run_id"] in rules and r["run_id"] not in pruned_at
        and applies(rules[r["run_id"]], rung, r)
    ]  # fmt: skip
    if not candidates:
        return {"epoch": rung, "groups": []}
    ids = [r["run_id"] for r in candidates]
    at_rung = results.loc[(results["epoch"] == rung) & results["run_id"].isin(ids)]
    at_rung = at_rung.drop_duplicates("run_id", keep="last").set_index("run_id")
    missing = sorted(set(ids) - set(at_rung.index))
    if missing:
        raise RuntimeError(f"no results at rung epoch {rung} for runs {missing[:3]}...")
    experiment = experiment or default_experiment()
    table = pd.DataFrame(candidates).set_index("run_id", drop=False)
    table["family"] = experiment.families(table)
    table = table.drop(columns="run_id")
    # One rule's runs are ranked together; runs under different rules never meet.
    table["_rule"] = [rules[i] for i in table.index]  # rules are frozen: hashable
    groups = []
    for _, by_rule in table.groupby("_rule", sort=False):
        rule = rules[by_rule.index[0]]
        columns = list(rule.groups(experiment))
        for key, group in by_rule.groupby(columns, sort=True):
            key = key if isinstance(key, tuple) else (key,)
            where = dict(zip(columns, key, strict=True))
            groups.append(_rank_group(rule, rung, group, at_rung, where, experiment))
    return {"epoch": rung, "groups": groups}


def _rank_group(rule, rung, group, at_rung, key, experiment) -> dict[str, Any]:
    ranked_by = {rule.metric_for(experiment, row) for _, row in group.iterrows()}
    if len(ranked_by) > 1:
        raise ValueError(
            f"prune.group_by {list(rule.groups(experiment))} puts runs ranked by different "
            f"metrics {sorted(m for m, _ in ranked_by)} in one group at rung {rung}; group by "
            "the key that sets the metric (e.g. task) too"
        )
    metric, larger = ranked_by.pop()
    rows = at_rung.loc[group.index]
    values = rows[metric].astype(float).to_numpy()
    diverged = rows["diverged"].astype(bool).to_numpy()
    # Rank: finite values best first (NaN last), ties by run id; diverged runs never kept.
    score = np.where(np.isfinite(values), values if larger else -values, -np.inf)
    order = sorted(range(len(values)), key=lambda i: (-score[i], group.index[i]))
    n_kept = rule.kept(len(order))
    ranked = []
    for rank, i in enumerate(order):
        kept = rank < n_kept and not diverged[i]
        value = float(values[i]) if np.isfinite(values[i]) else None
        ranked.append({"run_id": group.index[i], "value": value,
                       "diverged": bool(diverged[i]), "kept": bool(kept)})  # fmt: skip
    return {"key": {k: _plain(v) for k, v in key.items()}, "metric": metric,
            "larger_is_better": larger, "n": len(order), "kept": n_kept,
            "runs": ranked}  # fmt: skip


def _plain(value):
    return value.item() if isinstance(value, np.generic) else value


def pruned_epochs(decisions: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """run_id -> the rung that pruned it, from the recorded decisions."""
    out = {}
    for decision in decisions:
        for group in decision["groups"]:
            for run in group["runs"]:
                if not run["kept"]:
                    out.setdefault(run["run_id"], int(decision["epoch"]))
    return out


# -- the model axis after compaction ---------------------------------------------------------------


# Model-axis sizes after compaction: 1, 2, 3, 4, 6, 8, 12, 16, 24, ... (2^k and 3 * 2^(k-1)):
# at most a third of a compacted stack is padding, and a bucket compiles once per size it passes.
def ladder_size(n: int, multiple: int = 1) -> int:
    """The smallest ladder size >= ``n`` that is a multiple of ``multiple`` (the device count).

    >>> [ladder_size(n) for n in (1, 2, 3, 5, 7, 9, 13, 17)]
    [1, 2, 3, 6, 8, 12, 16, 24]
    """
    if n < 1:
        return 0
    size = 1
    while True:
        for candidate in (size, 3 * size // 2):
            if candidate >= n and candidate % multiple == 0:
                return candidate
        size *= 2


def members(run_ids: Sequence[str], pruned_at: Mapping[str, int], epoch: int) -> list[int]:
    """Positions (in the bucket's run order) of the runs in the bucket's state at ``epoch``:
    those not pruned before it (a run pruned at a rung is in the checkpoint of that rung)."""
    return [i for i, r in enumerate(run_ids) if pruned_at.get(r, epoch) >= epoch]


def model_axis(
    run_ids: Sequence[str], pruned_at: Mapping[str, int], epoch: int, devices: int
) -> list[int]:
    """The bucket's stacked models from ``epoch`` on: run positions, padded with copies of the
    last one to the model-axis size (``[]`` when every run is pruned).

    Before any pruning the size is the run count rounded up to the device count (as the
    engine always did); after, the ladder size (:func:`ladder_size`).
    """
    alive = [i for i, r in enumerate(run_ids) if pruned_at.get(r, epoch + 1) > epoch]
    if not alive:
        return []
    if len(alive) == len(run_ids):
        size = -(-len(alive) // devices) * devices
    else:
        size = ladder_size(len(alive), devices)
    return alive + [alive[-1]] * (size - len(alive))


# -- planning: the rule's arithmetic ---------------------------------------------------------------


def expected_fractions(
    rules: Mapping[str, Prune],
    runs: Sequence[Mapping[str, Any]],
    experiment: Experiment | None = None,
) -> dict[str, list[tuple[int, int, float]]]:
    """run_id -> ``[(start, end, fraction), ...]``: the share of the run's group that trains
    each segment between rungs, if no run diverges (what the dry run plans with)."""
    experiment = experiment or default_experiment()
    table = pd.DataFrame(list(runs)).set_index("run_id", drop=False)
    table["family"] = experiment.families(table)
    out = {}
    for run in runs:
        rule = rules.get(run["run_id"])
        if rule is None:
            out[run["run_id"]] = [(0, run["epochs"], 1.0)]
    governed = [r["run_id"] for r in runs if r["run_id"] in rules]
    if not governed:
        return out
    sub = table.loc[governed].copy()
    sub["_rule"] = [rules[i] for i in sub.index]
    for _, by_rule in sub.groupby("_rule", sort=False):
        rule = rules[by_rule.index[0]]
        for _, group in by_rule.groupby(list(rule.groups(experiment))):
            for run_id, run in group.iterrows():
                segments, start, n = [], 0, len(group)
                alive = n
                for rung in rule.at:
                    if not applies(rule, rung, run):
                        continue
                    segments.append((start, rung, alive / n))
                    # Runs of the group that reach this rung are ranked together.
                    alive = rule.kept(alive)
                    start = rung
                segments.append((start, int(run["epochs"]), alive / n))
                out[run_id] = segments
    return out

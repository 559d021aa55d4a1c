"""A sweep that grows: new runs trained into a workdir whose runs stay exactly as they are.

``run_sweep(..., extend=True)`` (``coordjax sweep ... --extend``) accepts an edited sweep on a
workdir that holds an earlier version of it, when the edit only *adds* runs (more seeds, more
values on an axis, another grid). What the workdir holds is untouched bit for bit: the recorded
buckets keep their runs, rows, checkpoints, lowering and pruning decisions. The new runs form
buckets of their own, ``<bucket_id>-x<n>`` for the workdir's ``n``-th extension, even where
they share a static config with a recorded bucket (a bucket's checkpoints stack its runs: adding
models to it would change them).

An edit that changes what recorded runs depend on is refused (:class:`WorkdirError`, one line
naming the difference): a recorded run that is not in the edited sweep (a base key changed, a
value removed), another pruning rule for recorded grids, another sweep or preset name, other
planning options.

Successive halving: an extension's runs are ranked among themselves. Each rung's decision is
taken per extension (``"extension": n`` in ``pruning.json``; the original runs are extension
0), so a rung already decided for the recorded runs is never retaken or reopened, and the new
runs' rung is decided as the same rule would decide it on a sweep of only them (their groups,
their ``keep`` fraction).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Sequence
from typing import Any

from coordjax.sweep.planner import Bucket, plan
from coordjax.sweep.workdir import WorkdirError, differences


def _shown(changes: list[str]) -> str:
    return "; ".join(changes[:3]) + (f"; and {len(changes) - 3} more" if len(changes) > 3 else "")


def _recorded_runs(held: dict[str, Any]) -> list[str]:
    return [r for bucket in held.get("plan", []) for r in bucket.get("run_ids", [])]


def check_growth(
    workdir, held: dict[str, Any], identity: dict[str, Any], runs: Sequence[dict[str, Any]]
) -> None:
    """Refuses (WorkdirError, one line) an edit that is not a pure addition of runs.

    Args:
      workdir: the workdir (named in the message).
      held: its ``config.json``.
      identity: the edited sweep's identity (as ``run_sweep`` builds it).
      runs: the edited sweep's runs (``Sweep.expand``).
    """
    old = held.get("identity", {})
    new = json.loads(json.dumps(identity, default=str))
    changes = differences(old, new)

    def refuse(why: str) -> None:
        raise WorkdirError(
            f"--extend only adds runs to workdir {workdir}: {why} (the sweep differs in "
            f"{_shown(changes)}); undo that change, or pass --restart to start over"
        )

    for key in ("sweep", "preset", "planning"):
        if old.get(key) != new.get(key):
            refuse(f"{key} {old.get(key)!r} -> {new.get(key)!r}")
    old_def, new_def = old.get("definition", {}), new.get("definition", {})
    for key in ("experiment", "prune"):
        if old_def.get(key) != new_def.get(key):
            refuse(f"the sweep's {key} changed")
    new_grids = {g["name"]: g for g in new_def.get("grids", [])}
    for grid in old_def.get("grids", []):
        if grid["name"] not in new_grids:
            refuse(f"grid {grid['name']!r} was removed")
        if grid.get("prune") != new_grids[grid["name"]].get("prune"):
            refuse(f"the pruning rule of grid {grid['name']!r} changed")
    present = {r["run_id"] for r in runs}
    gone = [r for r in _recorded_runs(held) if r not in present]
    if gone:
        refuse(
            f"{len(gone)} of its {len(_recorded_runs(held))} runs (e.g. {gone[0]}) are not in the "
            "edited sweep; their results and checkpoints depend on every value they were run with"
        )


def extension_of(entry: dict[str, Any]) -> int:
    """The extension a recorded plan entry belongs to (0: the original sweep)."""
    return int(entry.get("extension", 0))


def layout(
    held: dict[str, Any] | None,
    runs: Sequence[dict[str, Any]],
    fresh: list[Bucket],
    *,
    experiment,
    max_models: int | None,
    pad: Sequence[str],
    fit: Callable[[list[Bucket]], list[Bucket]] | None = None,
) -> list[Bucket]:
    """The buckets to train: ``fresh`` (the sweep planned from scratch) on a new workdir or one
    that never grew; else the recorded buckets with their runs, then the runs no recorded
    bucket holds, planned into buckets of the next extension.

    Args:
      held: the workdir's ``config.json`` (None: none yet), already checked
        (:func:`check_growth` or the same identity).
      runs: the sweep's runs; fresh: ``plan(runs, ...)``.
      fit: what fits buckets into a device's memory (``--device-memory``): given the added
        runs' unsplit buckets, already named for their extension, the buckets to train.
    """
    if not held or "plan" not in held:
        return fresh
    recorded = held["plan"]
    recorded_ids = set(_recorded_runs(held))
    grew = any(extension_of(entry) for entry in recorded)
    added = [r for r in runs if r["run_id"] not in recorded_ids]
    if not grew and not added:
        return fresh
    by_id = {r["run_id"]: r for r in runs}
    buckets = []
    for entry in recorded:
        (bucket,) = plan([by_id[r] for r in entry["run_ids"]], experiment=experiment, pad=pad)
        buckets.append(dataclasses.replace(bucket, bucket_id=entry["bucket_id"],
                                           extension=extension_of(entry)))  # fmt: skip
    if added:
        number = 1 + max((extension_of(entry) for entry in recorded), default=0)
        cap = max_models if fit is None else None  # the fit splits by memory and by the cap
        unsplit = plan(added, experiment=experiment, max_models=cap, pad=pad)
        new = [dataclasses.replace(b, bucket_id=f"{b.bucket_id}-x{number}", extension=number)
               for b in unsplit]  # fmt: skip
        buckets += new if fit is None else fit(new)
    return buckets


def added_runs(held: dict[str, Any] | None, runs: Sequence[dict[str, Any]]) -> int:
    """How many of ``runs`` the workdir's recorded plan does not hold."""
    recorded = set(_recorded_runs(held or {}))
    return sum(r["run_id"] not in recorded for r in runs)

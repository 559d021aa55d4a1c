"""Where a sweep stands, read from its workdir alone: ``coordjax status WORKDIR``.

Per bucket: ``done``, ``running`` (which task, host and pid, and how old its heartbeat is),
``stale`` (a claim whose heartbeat is older than the ``stale_after`` its holder recorded: its
process, on another machine, died or hangs), ``dead`` (a claim made on this machine whose process
no longer runs: any task takes it over at once), or ``pending``; and for the sweep: model-steps
trained against planned, and an ETA at the rate measured so far. Works while a sweep runs, in one
process or fanned out over many (:mod:`coordjax.sweep.fanout`), and in its first seconds (its
lock is held, ``config.json`` not written yet: ``starting``); reads files only (no JAX).
"""

from __future__ import annotations

import fcntl
import json
import pathlib
import time
from typing import Any

import pandas as pd

from coordjax.sweep import fanout
from coordjax.sweep import workdir as wd
from coordjax.sweep.durations import format_duration

STATES = ("done", "running", "stale", "dead", "pending")


def _lock_held(workdir: pathlib.Path, *, exclusively: bool = False) -> bool:
    """Whether a sweep process holds the workdir's lock now: any (one alone, or the tasks of a
    fan-out), or with ``exclusively`` a single-process sweep (a fan-out's tasks share it)."""
    path = workdir / wd.LOCK
    if not path.exists():
        return False
    with open(path) as handle:
        try:
            fcntl.flock(handle, (fcntl.LOCK_SH if exclusively else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
    return False
    with open(path) as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
    return False


def _newest_claim(directory: pathlib.Path) -> dict[str, Any] | None:
    """The newest claim of a stage not yet done in a bucket's claims directory (None if none;
    a taken-over claim's file stays behind, and its stage may be done)."""
    newest = None
    for entry in directory.glob("*.*.json"):
        if (directory / f"{entry.name.split('.')[0]}.done").exists():
            continue
        try:
            payload = json.loads(entry.read_text())
        except (OSError, json.JSONDecodeError):
            continue  # replaced while we read it
        key = (payload.get("stage", 0), payload.get("claimed", 0.0))
        if newest is None or key > (newest.get("stage", 0), newest.get("claimed", 0.0)):
            newest = payload
    return newest


def sweep_status(
    workdir: str | pathlib.Path,
    *,
    stale_after: float = fanout.DEFAULT_STALE_AFTER_S,
    now: float | None = None,
) -> dict[str, Any]:
    """The sweep's state (see the module docstring) as a JSON-ready dict.

    ``stale_after`` judges the claims that record no ``stale_after`` of their own (older
    versions); the others are judged by their holder's. A sweep whose lock is held but whose
    ``config.json`` is not written yet (its first seconds) has ``"starting": True`` and no buckets.

    Raises:
      wd.WorkdirError: not a sweep workdir (no readable ``config.json``, no sweep starting).
    """
    workdir = pathlib.Path(workdir)
    try:
        config = wd.read_config(workdir)
    except (OSError, json.JSONDecodeError) as err:
        raise wd.WorkdirError(f"{workdir / wd.CONFIG} is not readable ({err})") from None
    if not config or "plan" not in config:
        if workdir.is_dir() and _lock_held(workdir):
            return _starting(workdir, stale_after)
        raise wd.WorkdirError(f"{workdir} is not a sweep workdir (it has no {wd.CONFIG})")
    now = time.time() if now is None else now
    machine = fanout.this_machine()
    try:
        results = wd.read_results(workdir)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError):
        results = pd.DataFrame()
    pruned = wd.pruned_at(workdir)
    buckets = []
    for planned in config["plan"]:
        bucket_id, epochs = planned["bucket_id"], int(planned["static"]["epochs"])
        mine = results.loc[results["bucket_id"] == bucket_id] if len(results) else results
        ends = {r: pruned.get(r, epochs) for r in planned["run_ids"]}
        reached = (
            mine.groupby("run_id")["epoch"].max().to_dict() if len(mine) else {}
        )  # run_id -> last evaluated epoch
        diverged = set(mine.loc[mine["diverged"].astype(bool), "run_id"]) if len(mine) else set()
        finished = all(reached.get(r, 0) >= end or r in diverged for r, end in ends.items())
        claims_dir = workdir / fanout.CLAIMS / bucket_id
        claim = _newest_claim(claims_dir) if claims_dir.is_dir() else None
        age = None if claim is None else now - float(claim.get("heartbeat", 0.0))
        if (claims_dir / f"{epochs}.done").exists() or finished:
            state = "done"
        elif claim is not None:
            holder = fanout.holder_state(claim, now, default_stale_after=stale_after,
                                         machine=machine)  # fmt: skip
            state = {"alive": "running", "stale": "stale", "dead": "dead"}[holder]
        else:
            state = "pending"
        # Models' own steps (the stack's padding copies are not counted).
        steps = sum(reached.values()) * int(planned["steps_per_epoch"])
        planned_steps = len(planned["run_ids"]) * int(planned["steps_per_epoch"]) * epochs
        buckets.append(
            {
                "bucket_id": bucket_id,
                "state": state,
                "models": len(planned["run_ids"]),
                "epoch": int(max(reached.values(), default=0)),
                "epochs": epochs,
                "model_steps": int(steps),
                "planned_model_steps": planned_steps,
                "wall_s": wd.bucket_wall_time(mine, bucket_id) if len(mine) else 0.0,
                "task": None if claim is None or state == "done" else claim.get("task_index"),
                "host": None if claim is None or state == "done" else claim.get("host"),
                "pid": None if claim is None or state == "done" else claim.get("pid"),
                "heartbeat_age_s": None if age is None or state == "done" else round(age, 1),
            }
        )
    done_steps = sum(b["model_steps"] for b in buckets)
    planned_steps = sum(b["planned_model_steps"] for b in buckets)
    seconds = sum(b["wall_s"] for b in buckets)
    rate = done_steps / seconds if seconds > 0 else None
    running = sum(b["state"] == "running" for b in buckets)
    single = _lock_held(workdir, exclusively=True)
    left = sum(
        b["planned_model_steps"] - b["model_steps"] for b in buckets if b["state"] != "done"
    )  # pruning only shortens this
    workers = max(running, 1 if single else 0)
    eta = left / (rate * workers) if rate and workers and left > 0 else None
    return {
        "workdir": str(workdir),
        "starting": False,
        "sweep": config.get("identity", {}).get("sweep"),
        "preset": config.get("identity", {}).get("preset"),
        "single_process_running": single,
        "counts": {s: sum(b["state"] == s for b in buckets) for s in STATES},
        "model_steps": done_steps,
        "planned_model_steps": planned_steps,
        "model_steps_per_s": rate,
        "eta_s": eta,
        "pruned_runs": len(pruned),
        "stale_after_s": stale_after,
        "buckets": buckets,
    }


def _starting(workdir: pathlib.Path, stale_after: float) -> dict[str, Any]:
    return {
        "workdir": str(workdir),
        "starting": True,
        "sweep": None,
        "preset": None,
        "single_process_running": _lock_held(workdir, exclusively=True),
        "counts": dict.fromkeys(STATES, 0),
        "model_steps": 0,
        "planned_model_steps": 0,
        "model_steps_per_s": None,
        "eta_s": None,
        "pruned_runs": 0,
        "stale_after_s": stale_after,
        "buckets": [],
    }


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return format_duration(seconds)


def status_text(status: dict[str, Any]) -> str:
    """The status as a table within 100 columns."""
    if status.get("starting"):
        return (
            f"{status['workdir']}: a sweep is starting (its lock is held; config.json is not "
            "written yet); ask again in a few seconds"
        )
    counts = status["counts"]
    head = f"{status['sweep']} (preset {status['preset']}) in {status['workdir']}"
    lines = [head if len(head) <= 100 else head[:97] + "..."]
    lines.append(
        f"{len(status['buckets'])} bucket{'s' if len(status['buckets']) != 1 else ''}: "
        + ", ".join(f"{counts[s]} {s}" for s in STATES)
        + (" (a single-process sweep is running)" if status["single_process_running"] else "")
    )
    lines.append(f"{'bucket':<34} {'state':<8} {'models':>6} {'epoch':>11}  task/host/heartbeat")
    for b in status["buckets"]:
        who = ""
        if b["state"] in ("running", "stale", "dead"):
            who = f"task {b['task']} {b['host']}:{b['pid']} {_age(b['heartbeat_age_s'])} ago"
        progress = f"{b['epoch']}/{b['epochs']}"
        line = f"{b['bucket_id']:<34} {b['state']:<8} {b['models']:>6} {progress:>11}  {who}"
        lines.append(line[:100].rstrip())
    done, planned = status["model_steps"], status["planned_model_steps"]
    share = f" ({100 * done / planned:.0f} %)" if planned else ""
    tail = f"model-steps: {done:,} of {planned:,} planned{share}"
    if status["pruned_runs"]:
        tail += f"; {status['pruned_runs']} runs pruned"
    lines.append(tail)
    if status["model_steps_per_s"]:
        eta = "-" if status["eta_s"] is None else _age(status["eta_s"])
        lines.append(
            f"rate: {status['model_steps_per_s']:,.0f} model-steps/s per process; ETA {eta}"
        )
    return "\n".join(lines)

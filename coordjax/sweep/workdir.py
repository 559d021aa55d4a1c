"""The workdir: the only contract between training and reporting, and its records.

Layout::

    workdir/
      config.json          sweep definition, preset, engine options, versions, device, plan
      results.csv          one row per model per evaluation (pandas.read_csv reads it)
      strategies.json      each bucket's model-axis lowering (fixed at its start, reused)
      pruning.json         successive halving: each rung's decision, written before it acts
      checkpoints/<bucket_id>/<epoch>/   orbax checkpoints of each bucket's stacked state
      .lock                held (flock) while a sweep runs: exclusively by one process, shared
                           by the processes of a fanned-out sweep (coordjax.sweep.fanout)
      claims/, tasks/      a fanned-out sweep's bucket claims and task locks

The records are written here (results rows, ``config.json``, strategies) and read back here
(:func:`load_run`: one model's state out of its bucket's checkpoint). Every file is replaced
atomically (write to a temporary file, then ``os.replace``), so a process
killed at any moment leaves readable files; the temporary file of a process killed before its
rename is removed by the next process that holds the workdir alone (:func:`remove_debris`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import fcntl
import json
import os
import pathlib
import shutil
import tempfile
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from coordjax.sweep import pruning

if TYPE_CHECKING:
    from coordjax.sweep.planner import Bucket

CONFIG = "config.json"
RESULTS = "results.csv"
STRATEGIES = "strategies.json"
PRUNING = "pruning.json"
CHECKPOINTS = "checkpoints"
LOCK = ".lock"
RECORDS_LOCK = ".records.lock"


class WorkdirError(RuntimeError):
    """The workdir is in use, or holds a different sweep."""


def check_usable(workdir: pathlib.Path) -> None:
    """Refuses, before anything is written, a workdir that is a file or cannot be written."""
    workdir = pathlib.Path(workdir)
    if workdir.exists() and not workdir.is_dir():
        raise WorkdirError(
            f"workdir {workdir} is a file, not a directory; choose another --workdir"
        )
    existing = workdir
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise WorkdirError(f"workdir {workdir}: {existing} is a file, not a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise WorkdirError(
            f"workdir {workdir} cannot be written ({existing} is read-only or not writable by "
            "you); choose another --workdir"
        )


def _shared_soon(handle, wait_s: float = 1.0) -> None:
    """Takes the lock shared, waiting up to ``wait_s`` while another task of the fan-out holds
    it alone for the milliseconds it removes debris (BlockingIOError after that: a single-process
    run holds it)."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


@contextlib.contextmanager
def locked(workdir: pathlib.Path, *, shared: bool = False):
    """Holds the workdir's lock; refuses at once if it cannot.

    A single-process sweep holds it exclusively. The processes of a fanned-out sweep
    (:mod:`coordjax.sweep.fanout`) hold it shared: they run together, and a single-process run
    of the same workdir is refused while any of them runs (and they while it runs). flock locks
    die with their process, so a killed sweep never leaves a stale lock.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    with open(workdir / LOCK, "a") as handle:
        try:
            # Alone (no other process holds it): debris of killed writers is safe to remove.
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            remove_debris(workdir)
            if shared:
                fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                if not shared:
                    raise
                _shared_soon(handle)
            except BlockingIOError as err:
                raise WorkdirError(
                    f"workdir {workdir} is in use by another sweep (its lock is held"
                    + ("; a single-process run holds it" if shared else "")
                    + "); wait for it to finish or choose another --workdir"
                ) from err
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


TEMPORARY = "tmp*.tmp"  # atomic_write_text's temporary files


def remove_debris(workdir: pathlib.Path) -> list[pathlib.Path]:
    """Removes the temporary files a process killed between writing and renaming left in the
    workdir and its claims (only while no other process can be writing: under the workdir's
    lock, held alone); returns them."""
    workdir = pathlib.Path(workdir)
    found = [*workdir.glob(TEMPORARY), *workdir.glob(f"claims/{TEMPORARY}"),
             *workdir.glob(f"claims/*/{TEMPORARY}")]  # fmt: skip
    for path in found:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    return found


@contextlib.contextmanager
def records_lock(workdir: pathlib.Path):
    """Serialises read-modify-writes of the shared records (results, strategies, pruning) between
    the processes of a fanned-out sweep; held for milliseconds, waited for."""
    with open(pathlib.Path(workdir) / RECORDS_LOCK, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def current_umask() -> int:
    """The process's umask, read without changing it where the OS allows."""
    try:
        for line in pathlib.Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_text(path: pathlib.Path, text: str) -> None:
    """Writes ``path`` atomically, with the permissions a plain ``open(path, "w")`` gives."""
    with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, suffix=".tmp") as f:
        f.write(text)
        f.flush()
        os.fchmod(f.fileno(), 0o666 & ~current_umask())  # temporary files are created 0600
        os.fsync(f.fileno())
    os.replace(f.name, path)


def read_config(workdir: pathlib.Path) -> dict[str, Any] | None:
    path = pathlib.Path(workdir) / CONFIG
    return json.loads(path.read_text()) if path.exists() else None


def write_config(workdir: pathlib.Path, config: dict[str, Any]) -> None:
    atomic_write_text(pathlib.Path(workdir) / CONFIG, json.dumps(config, indent=2, default=str))


def check_same_sweep(workdir: pathlib.Path, identity: dict[str, Any], *, restart: bool) -> None:
    """Refuses a workdir that holds a different sweep, unless ``restart``.

    On restart the old workdir is moved aside (``<workdir>.old-<timestamp>``), never deleted.
    """
    existing = read_config(workdir)
    if existing is None:
        return
    if existing.get("identity") == json.loads(json.dumps(identity, default=str)):
        return
    if not restart:
        held = existing.get("identity", {})
        changes = differences(held, json.loads(json.dumps(identity, default=str)))
        shown = "; ".join(changes[:3]) + (
            f"; and {len(changes) - 3} more" if len(changes) > 3 else ""
        )
        raise WorkdirError(
            f"workdir {workdir} holds a different sweep ({held.get('sweep')}, preset "
            f"{held.get('preset')}; differs in {shown}); pass --extend to train the runs it "
            "adds next to the recorded ones, --restart to move it aside and start over, or "
            "choose another --workdir"
        )
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    backup = workdir.with_name(f"{workdir.name}.old-{stamp}")
    for item in list(workdir.iterdir()):
        if item.name in (LOCK, RECORDS_LOCK):
            continue
        backup.mkdir(parents=True, exist_ok=True)
        shutil.move(str(item), backup / item.name)


def differences(held: Any, new: Any, path: str = "") -> list[str]:
    """What differs between two JSON values, as ``"path: held -> new"`` strings."""
    if isinstance(held, dict) and isinstance(new, dict):
        out = []
        for key in [*held, *(k for k in new if k not in held)]:
            where = f"{path}.{key}" if path else str(key)
            if key not in new:
                out.append(f"{where}: {held[key]!r} -> absent")
            elif key not in held:
                out.append(f"{where}: absent -> {new[key]!r}")
            else:
                out += differences(held[key], new[key], where)
        return out
    if isinstance(held, list) and isinstance(new, list) and len(held) == len(new):
        return [d for i, (a, b) in enumerate(zip(held, new, strict=True))
                for d in differences(a, b, f"{path}[{i}]")]  # fmt: skip
    return [] if held == new else [f"{path or 'identity'}: {held!r} -> {new!r}"]


def read_results(workdir: pathlib.Path) -> pd.DataFrame:
    path = pathlib.Path(workdir) / RESULTS
    return pd.read_csv(path) if path.exists() else pd.DataFrame()


def write_results(workdir: pathlib.Path, results: pd.DataFrame) -> None:
    atomic_write_text(pathlib.Path(workdir) / RESULTS, results.to_csv(index=False))


def merge_bucket_rows(
    workdir: pathlib.Path, results: pd.DataFrame, bucket_id: str, pruned: dict[str, int]
) -> None:
    """Replaces the bucket's rows of ``results.csv`` by those of ``results`` (the rows of one
    process of a fanned-out sweep, which alone trains that bucket); the other buckets' rows are
    the ones on disk."""
    with records_lock(workdir):
        on_disk = read_results(workdir)
        mine = results.loc[results["bucket_id"] == bucket_id] if len(results) else results
        others = on_disk.loc[on_disk["bucket_id"] != bucket_id] if len(on_disk) else on_disk
        merged = pd.concat([d for d in (others, mine) if len(d)], ignore_index=True)
        write_results(workdir, with_status(merged, pruned) if len(merged) else merged)


def restatus_results(workdir: pathlib.Path, pruned: dict[str, int]) -> pd.DataFrame:
    """Rewrites ``results.csv`` with each row's status under the pruning decisions ``pruned``
    and returns it (under the records lock: other processes may be writing rows)."""
    with records_lock(workdir):
        results = with_status(read_results(workdir), pruned)
        write_results(workdir, results)
    return results


def read_strategies(workdir: pathlib.Path) -> dict[str, dict[str, Any]]:
    """``{bucket_id: {"strategy", "map_batch_size", "source", ...}}`` recorded so far."""
    path = pathlib.Path(workdir) / STRATEGIES
    return json.loads(path.read_text()) if path.exists() else {}


def record_strategy(workdir: pathlib.Path, bucket_id: str, choice: dict[str, Any]) -> None:
    """Records a bucket's lowering (before its first chunk trains)."""
    with records_lock(workdir):
        recorded = read_strategies(workdir)
        recorded[bucket_id] = choice
        atomic_write_text(pathlib.Path(workdir) / STRATEGIES, json.dumps(recorded, indent=2))


def read_pruning(workdir: pathlib.Path) -> list[dict[str, Any]]:
    """The rung decisions recorded so far (:func:`coordjax.sweep.pruning.decide`), in order."""
    path = pathlib.Path(workdir) / PRUNING
    return json.loads(path.read_text())["decisions"] if path.exists() else []


def record_pruning(workdir: pathlib.Path, decision: dict[str, Any]) -> dict[str, Any]:
    """Appends a rung's decision (before the engine acts on it) and returns the recorded one:
    a decision already recorded for that rung and extension (by another process of a
    fanned-out sweep) wins."""

    def key(d):
        return d["epoch"], d.get("extension", 0)

    with records_lock(workdir):
        recorded = read_pruning(workdir)
        for existing in recorded:
            if key(existing) == key(decision):
                return existing
        decisions = sorted([*recorded, decision], key=key)
        text = json.dumps({"decisions": decisions}, indent=1)
        atomic_write_text(pathlib.Path(workdir) / PRUNING, text)
    return decision


def pruned_at(workdir: pathlib.Path) -> dict[str, int]:
    """run_id -> the rung epoch that pruned it."""
    return pruning.pruned_epochs(read_pruning(workdir))


# -- results rows ---------------------------------------------------------------------------------


def result_rows(
    bucket: Bucket,
    axis: Sequence[int],
    metrics: dict[str, np.ndarray],
    epochs: np.ndarray,
    steps: np.ndarray,
    wall: float,
    param_counts: list[int],
    strategy: str,
    model_steps: int,
) -> list[dict[str, Any]]:
    """The results rows of one evaluation of a bucket: one per run on its model axis.

    ``axis``: the bucket's run positions stacked in the program (after pruning, the
    survivors; repeats pad the stack and are dropped). ``metrics``, ``epochs`` and ``steps``
    are the chunk's fetched arrays stacked over ``axis``, ``param_counts`` one int per bucket
    run; ``wall`` and ``model_steps`` are the bucket's training seconds and model-steps
    trained (padding included) so far.
    """
    rows = []
    for i, position in enumerate(axis):
        if position in axis[:i]:
            continue  # a copy that pads the stack
        config = bucket.runs[position]
        row = {**config, "bucket_id": bucket.bucket_id, "param_count": param_counts[position]}
        row["strategy"] = strategy
        row.update(epoch=int(epochs[i]), step=int(steps[i]), wall_time=wall)
        row["bucket_model_steps"] = model_steps
        for key, value in metrics.items():
            value = np.asarray(value[i])
            row[key] = value[-1].item() if key == "epoch_train_loss" else value.item()
        rows.append(row)
    return rows


def rows_missing(
    results: pd.DataFrame, bucket: Bucket, epoch: int, pruned: dict[str, int] | None = None
) -> bool:
    """Whether the results table lacks a row of the bucket's runs at an evaluation <= epoch
    (a run pruned at a rung has rows up to that rung)."""
    pruned = pruned or {}
    ends = np.cumsum(bucket.chunks)
    wanted = {(r["run_id"], int(e)) for r in bucket.runs for e in ends
              if e <= min(epoch, pruned.get(r["run_id"], epoch))}  # fmt: skip
    if results.empty:
        return bool(wanted)
    mine = results.loc[results["bucket_id"] == bucket.bucket_id]
    have = set(zip(mine["run_id"], mine["epoch"].astype(int), strict=True))
    return not wanted <= have


def drop_rows_after(results: pd.DataFrame, bucket_id: str, epoch: int) -> pd.DataFrame:
    """The results without the bucket's rows past ``epoch`` (not covered by a checkpoint)."""
    if results.empty:
        return results
    stale = (results["bucket_id"] == bucket_id) & (results["epoch"] > epoch)
    return results.loc[~stale].reset_index(drop=True)


def bucket_total(
    results: pd.DataFrame, bucket_id: str, column: str, through: int | None = None
) -> float:
    """The bucket's running total of ``column`` (``wall_time``, ``bucket_model_steps``) at its
    evaluations up to epoch ``through`` (default: all), 0 when none."""
    if results.empty or column not in results:
        return 0.0
    rows = results["bucket_id"] == bucket_id
    if through is not None:
        rows &= results["epoch"] <= through
    mine = results.loc[rows, column].dropna()
    return float(mine.max()) if len(mine) else 0.0


def bucket_wall_time(results: pd.DataFrame, bucket_id: str, through: int | None = None) -> float:
    """The bucket's training seconds recorded up to epoch ``through`` (default: all)."""
    return bucket_total(results, bucket_id, "wall_time", through)


def replace_rows(results: pd.DataFrame, rows: list[dict[str, Any]]) -> pd.DataFrame:
    """``results`` with ``rows`` added, replacing any row of the same bucket, run and epoch.

    A resumed bucket keeps the rows it wrote after its last checkpoint until retraining writes
    them again (the same numbers: every key derives from the run's seed), so a crash in between
    loses nothing.
    """
    new = pd.DataFrame(rows)
    if results.empty:
        return new
    key = ["bucket_id", "run_id", "epoch"]
    old = pd.MultiIndex.from_frame(results[key].astype({"epoch": int}))
    fresh = pd.MultiIndex.from_frame(new[key].astype({"epoch": int}))
    return pd.concat([results.loc[~old.isin(fresh)], new], ignore_index=True)


STATUSES = ("running", "pruned", "finished", "diverged")


def with_status(results: pd.DataFrame, pruned: dict[str, int]) -> pd.DataFrame:
    """The results with each row's ``status`` at that evaluation (:data:`STATUSES`) and
    ``pruned_epoch`` (the rung that pruned the run; empty if none).

    ``diverged`` once the run diverged; ``pruned`` at and after its rung; ``finished`` at its
    last epoch; else ``running``.
    """
    if results.empty:
        return results
    out = results.copy()
    epoch = out["epoch"].astype(int)
    rung = out["run_id"].map(pruned).astype(float)
    status = np.where(epoch >= out["epochs"].astype(int), "finished", "running").astype(object)
    status[(rung <= epoch).to_numpy()] = "pruned"
    status[out["diverged"].astype(bool).to_numpy()] = "diverged"
    out["status"] = status
    out["pruned_epoch"] = rung
    return out


# -- config.json ----------------------------------------------------------------------------------


def sweep_config(
    identity: dict[str, Any], buckets: Sequence[Bucket], options: Any, devices: Sequence[Any]
) -> dict[str, Any]:
    """What ``config.json`` records: the identity, engine options (``options``, a dataclass,
    with its resolved ``lowering``), library versions, the devices and the plan."""
    # Heavy: loaded for their versions only when a sweep starts (reports import this module).
    import flax
    import jax
    import optax
    import orbax.checkpoint

    experiment = buckets[0].experiment if buckets else None
    return {
        "identity": identity,
        **({"experiment": experiment.name, "groups": list(experiment.group_by),
            "keys": list(experiment.keys),
            "metrics": {f"{side}_{m}": bool(larger) for side in ("train", "test")
                        for m, larger in experiment.metrics.items()}}
           if experiment is not None else {}),
        "engine": dataclasses.asdict(options),
        "lowering": options.lowering,  # resolved: "lax", "matmul" or "zero_insertion"
        "versions": {
            "jax": jax.__version__,
            "flax": flax.__version__,
            "optax": optax.__version__,
            "orbax-checkpoint": orbax.checkpoint.__version__,
            "numpy": np.__version__,
        },
        "devices": [str(d) for d in devices],
        "device_kind": devices[0].device_kind,
        "plan": [
            {
                "bucket_id": b.bucket_id,
                "static": b.static,
                "num_models": b.num_models,
                "steps_per_epoch": b.steps_per_epoch,
                "run_ids": [r["run_id"] for r in b.runs],
                "score": list(b.experiment.score(b.runs[0])),
                **(_padding_plan(b) if b.padded else {}),
                **({"extension": b.extension} if b.extension else {}),
            }
            for b in buckets
        ],
    }


def _padding_plan(bucket: Bucket) -> dict[str, Any]:
    return {
        "padded": list(bucket.padded),
        "run_shapes": [bucket.run_model_kwargs(r) for r in bucket.runs],
    }


# -- reading one model back -----------------------------------------------------------------------


def load_run(
    workdir: str | pathlib.Path, run_id: str, *, epoch: int | None = None, experiment: Any = None
) -> dict:
    """One model's saved training state from a sweep's workdir, as NumPy arrays.

    Args:
      workdir: a sweep's workdir.
      run_id: the run (a ``run_id`` of the results table).
      epoch: which checkpoint (default: the run's latest: for a run pruned at a rung, that
        rung's). Kept: the bucket's latest two, every run's best evaluation (the summary's
        ``peak_epoch``) and every rung that pruned a run of the bucket.
      experiment: the sweep's :class:`~coordjax.sweep.Experiment`, needed only to cut a run
        out of a padded bucket (default: the paper's).

    Returns:
      ``{"params": ..., "batch_stats": ..., "opt_state": ..., "epoch": ..., ...}`` for that model
      (its slice of the bucket's stacked state), ready for ``model.apply``. A model trained
      inside a padded bucket is cut out of the bucket's larger model: its arrays have its own
      shapes.
    """
    workdir = pathlib.Path(workdir)
    if not (workdir / CONFIG).is_file():
        raise ValueError(f"workdir {workdir} is not a sweep workdir (it has no {CONFIG})")
    plan = json.loads((workdir / CONFIG).read_text())["plan"]
    for bucket in plan:
        if run_id in bucket["run_ids"]:
            break
    else:
        raise ValueError(f"run_id {run_id!r} is not in the plan of workdir {workdir}")
    pruned = pruned_at(workdir)
    last = pruned.get(run_id)
    directory = (workdir / CHECKPOINTS / bucket["bucket_id"]).absolute()
    if not directory.is_dir():
        raise ValueError(f"run {run_id!r} has no checkpoint yet in {workdir}")

    def choose(saved: list[int]) -> int:
        own = [e for e in saved if last is None or e <= last]
        chosen = (own[-1] if own else None) if epoch is None else epoch
        if chosen is None:
            raise ValueError(f"run {run_id!r} has no checkpoint yet in {workdir}")
        if last is not None and chosen > last:
            raise ValueError(
                f"run {run_id!r} was pruned at epoch {last}; its checkpoints end there "
                f"(saved epochs of its bucket: {saved})"
            )
        if chosen not in saved:
            raise ValueError(
                f"run {run_id!r} has no checkpoint at epoch {chosen!r} in {workdir}: its bucket "
                f"keeps epochs {saved} (the latest two and each run's best evaluation)"
            )
        return chosen

    # JAX and orbax load only when a checkpoint is read (reports import this module).
    import jax

    from coordjax.sweep.checkpoints import restore_to_host

    chosen = []
    stacked = restore_to_host(directory, lambda saved: chosen.append(choose(saved)) or chosen[0])
    # Pruned runs left the stack after their rung: the run's place among those still in it.
    in_stack = pruning.members(bucket["run_ids"], pruned, chosen[0])
    stacked_ids = [bucket["run_ids"][i] for i in in_stack]
    state = jax.tree.map(lambda x: np.asarray(x)[stacked_ids.index(run_id)], stacked)
    if bucket.get("padded"):
        from coordjax.sweep.experiment import default_experiment  # JAX, only when padded

        experiment = experiment or default_experiment()
        shape = bucket["run_shapes"][bucket["run_ids"].index(run_id)]
        state = experiment.padding.unpad(state, bucket["static"], shape)
    return state


def export_run(
    workdir: str | pathlib.Path, run_id: str, *, epoch: int | None = None, experiment: Any = None
) -> dict:
    """One run's model as a plain Flax variables tree that its own module applies directly.

    ``{"params": ...}``, plus ``"batch_stats"`` when the model has statistics, as NumPy arrays
    at the run's own shapes (cut out of a padded bucket by the experiment's rule); optimizer
    state and bookkeeping are left out. Arguments as :func:`load_run`.
    """
    state = load_run(workdir, run_id, epoch=epoch, experiment=experiment)
    variables = {"params": state["params"]}
    if state.get("batch_stats"):
        variables["batch_stats"] = state["batch_stats"]
    return variables

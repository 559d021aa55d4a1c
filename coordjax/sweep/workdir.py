"""The workdir: the only contract between training and reporting.

Layout::

    workdir/
      config.json          sweep definition, preset, engine options, versions, device, plan
      results.csv          one row per model per evaluation (pandas.read_csv reads it)
      strategies.json      each bucket's model-axis lowering (fixed at its start, reused)
      checkpoints/<bucket_id>/<epoch>/   orbax checkpoints of each bucket's stacked state
      .lock                held (flock) while a sweep runs

Every file is replaced atomically (write to a temporary file, then ``os.replace``), so a process
killed at any moment leaves readable files.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import os
import pathlib
import shutil
import tempfile
from typing import Any

import pandas as pd

CONFIG = "config.json"
RESULTS = "results.csv"
STRATEGIES = "strategies.json"
CHECKPOINTS = "checkpoints"
LOCK = ".lock"


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


@contextlib.contextmanager
def locked(workdir: pathlib.Path):
    """Holds an exclusive lock on the workdir; refuses at once if another process holds it.

    flock locks die with their process, so a killed sweep never leaves a stale lock.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    with open(workdir / LOCK, "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as err:
            raise WorkdirError(
                f"workdir {workdir} is in use by another sweep (its lock is held); wait for it "
                "to finish or choose another --workdir"
            ) from err
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _umask() -> int:
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
        os.fchmod(f.fileno(), 0o666 & ~_umask())  # temporary files are created 0600
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
            f"{held.get('preset')}; differs in {shown}); pass --restart to move it aside and "
            "start over, or choose another --workdir"
        )
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    backup = workdir.with_name(f"{workdir.name}.old-{stamp}")
    for item in list(workdir.iterdir()):
        if item.name == LOCK:
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


def read_strategies(workdir: pathlib.Path) -> dict[str, dict[str, Any]]:
    """``{bucket_id: {"strategy", "map_batch_size", "source", ...}}`` recorded so far."""
    path = pathlib.Path(workdir) / STRATEGIES
    return json.loads(path.read_text()) if path.exists() else {}


def record_strategy(workdir: pathlib.Path, bucket_id: str, choice: dict[str, Any]) -> None:
    """Records a bucket's lowering (before its first chunk trains)."""
    recorded = read_strategies(workdir)
    recorded[bucket_id] = choice
    atomic_write_text(pathlib.Path(workdir) / STRATEGIES, json.dumps(recorded, indent=2))

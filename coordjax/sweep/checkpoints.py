"""orbax checkpoints of a bucket's stacked training state (leading model axis)."""

from __future__ import annotations

import pathlib
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp


class BucketCheckpoints:
    """Saves and restores one bucket's stacked state, keyed by epochs completed.

    Saves are synchronous so that a checkpoint on disk is always complete when :meth:`save`
    returns; orbax writes to a temporary directory and renames it when done, so a process killed
    mid-save leaves the previous checkpoint as the latest readable one.
    """

    def __init__(self, directory: pathlib.Path, *, max_to_keep: int = 2):
        options = ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep,
            create=True,
            cleanup_tmp_directories=True,
            enable_async_checkpointing=False,
        )
        self._manager = ocp.CheckpointManager(pathlib.Path(directory).absolute(), options=options)

    def latest_epoch(self) -> int | None:
        return self._manager.latest_step()

    def save(self, epoch: int, state: Any) -> None:
        self._manager.save(epoch, args=ocp.args.StandardSave(state), force=True)
        self._manager.wait_until_finished()

    def restore(self, epoch: int, target: Any) -> Any:
        """Restores into the structure, shapes, dtypes and shardings of ``target``."""
        abstract = jax.tree.map(
            lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), target
        )
        return self._manager.restore(epoch, args=ocp.args.StandardRestore(abstract))

    def close(self) -> None:
        self._manager.close()


def load_run(workdir: str | pathlib.Path, run_id: str, *, epoch: int | None = None) -> dict:
    """One model's saved training state from a sweep's workdir, as NumPy arrays.

    Args:
      workdir: a sweep's workdir.
      run_id: the run (a ``run_id`` of the results table).
      epoch: which checkpoint (default: the bucket's latest).

    Returns:
      ``{"params": ..., "batch_stats": ..., "opt_state": ..., "epoch": ..., ...}`` for that model
      (its slice of the bucket's stacked state), ready for ``model.apply``.
    """
    import json

    workdir = pathlib.Path(workdir)
    plan = json.loads((workdir / "config.json").read_text())["plan"]
    for bucket in plan:
        if run_id in bucket["run_ids"]:
            position = bucket["run_ids"].index(run_id)
            break
    else:
        raise ValueError(f"run_id {run_id!r} is not in the plan of workdir {workdir}")
    checkpoints = BucketCheckpoints(workdir / "checkpoints" / bucket["bucket_id"])
    try:
        epoch = checkpoints.latest_epoch() if epoch is None else epoch
        if epoch is None:
            raise ValueError(f"run {run_id!r} has no checkpoint yet in {workdir}")
        stacked = checkpoints._manager.restore(epoch, args=ocp.args.StandardRestore())
    finally:
        checkpoints.close()
    return jax.tree.map(lambda x: np.asarray(x)[position], stacked)

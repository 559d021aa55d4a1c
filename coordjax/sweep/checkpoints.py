"""orbax checkpoints of a bucket's stacked training state (leading model axis)."""

from __future__ import annotations

import pathlib
from typing import Any

import jax
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

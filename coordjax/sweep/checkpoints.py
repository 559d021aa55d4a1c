"""orbax checkpoints of a bucket's stacked training state (leading model axis).

Where they live in a workdir, and how one model is read back (``load_run``), is
:mod:`coordjax.sweep.workdir`'s business.
"""

from __future__ import annotations

import pathlib
from collections.abc import Callable
from typing import Any

import jax
import orbax.checkpoint as ocp

# Reading one model back moved with the workdir's other records; kept importable from here.
from coordjax.sweep.workdir import load_run as load_run


class BucketCheckpoints:
    """Saves and restores one bucket's stacked state, keyed by epochs completed.

    Saves are synchronous so that a checkpoint on disk is always complete when :meth:`save`
    returns; orbax writes to a temporary directory and renames it when done, so a process killed
    mid-save leaves the previous checkpoint as the latest readable one. Which checkpoints are
    kept is the caller's choice (:meth:`prune`): the engine keeps the latest two and each run's
    best evaluation.
    """

    def __init__(self, directory: pathlib.Path):
        options = ocp.CheckpointManagerOptions(
            max_to_keep=None,
            create=True,
            cleanup_tmp_directories=True,
            enable_async_checkpointing=False,
        )
        self.directory = pathlib.Path(directory).absolute()
        self._manager = ocp.CheckpointManager(self.directory, options=options)

    def latest_epoch(self) -> int | None:
        return self._manager.latest_step()

    def epochs(self) -> list[int]:
        """The saved epochs, ascending."""
        return sorted(self._manager.all_steps())

    def save(self, epoch: int, state: Any) -> None:
        self._manager.save(epoch, args=ocp.args.StandardSave(state), force=True)
        self._manager.wait_until_finished()

    def prune(self, keep: set[int]) -> None:
        """Deletes every saved epoch not in ``keep``."""
        for epoch in self.epochs():
            if epoch not in keep:
                self._manager.delete(epoch)

    def delete(self, epoch: int) -> None:
        self._manager.delete(epoch)

    def restore(self, epoch: int, target: Any) -> Any:
        """Restores into the structure, shapes, dtypes and shardings of ``target``."""
        abstract = jax.tree.map(
            lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), target
        )
        return self._manager.restore(epoch, args=ocp.args.StandardRestore(abstract))

    def close(self) -> None:
        self._manager.close()


def restore_to_host(directory: pathlib.Path, choose: Callable[[list[int]], int]) -> Any:
    """The stacked state saved in ``directory`` at epoch ``choose(saved_epochs)``.

    ``choose`` gets the saved epochs (ascending) and returns one (or raises). The arrays are
    restored onto this process's first device, whatever topology wrote them (a sweep sharded
    over 8 GPUs read on a laptop's CPU): without a target, orbax insists on the saved topology.
    """
    manager = ocp.CheckpointManager(
        pathlib.Path(directory).absolute(),
        options=ocp.CheckpointManagerOptions(create=False),
        item_handlers=ocp.StandardCheckpointHandler(),
    )
    try:
        epoch = choose(sorted(manager.all_steps()))
        device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        abstract = jax.tree.map(
            lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=device),
            manager.item_metadata(epoch),
        )
        return manager.restore(epoch, args=ocp.args.StandardRestore(abstract))
    finally:
        manager.close()

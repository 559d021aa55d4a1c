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


def load_run(workdir: str | pathlib.Path, run_id: str, *, epoch: int | None = None) -> dict:
    """One model's saved training state from a sweep's workdir, as NumPy arrays.

    Args:
      workdir: a sweep's workdir.
      run_id: the run (a ``run_id`` of the results table).
      epoch: which checkpoint (default: the bucket's latest). Kept: the bucket's latest two
        and every run's best evaluation (the summary's ``peak_epoch``).

    Returns:
      ``{"params": ..., "batch_stats": ..., "opt_state": ..., "epoch": ..., ...}`` for that model
      (its slice of the bucket's stacked state), ready for ``model.apply``. A model trained
      inside a padded bucket is cut out of the bucket's larger model: its arrays have its own
      shapes.
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
    directory = (workdir / "checkpoints" / bucket["bucket_id"]).absolute()
    if not directory.is_dir():
        raise ValueError(f"run {run_id!r} has no checkpoint yet in {workdir}")
    manager = ocp.CheckpointManager(
        directory,
        options=ocp.CheckpointManagerOptions(create=False),
        item_handlers=ocp.StandardCheckpointHandler(),
    )
    try:
        saved = sorted(manager.all_steps())
        epoch = (saved[-1] if saved else None) if epoch is None else epoch
        if epoch is None:
            raise ValueError(f"run {run_id!r} has no checkpoint yet in {workdir}")
        if epoch not in saved:
            raise ValueError(
                f"run {run_id!r} has no checkpoint at epoch {epoch!r} in {workdir}: its bucket "
                f"keeps epochs {saved} (the latest two and each run's best evaluation)"
            )
        # Onto this process's first device, whatever topology wrote it (a sweep sharded over 8
        # GPUs read on a laptop's CPU): without a target, orbax insists on the saved topology.
        device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        abstract = jax.tree.map(
            lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=device),
            manager.item_metadata(epoch),
        )
        stacked = manager.restore(epoch, args=ocp.args.StandardRestore(abstract))
    finally:
        manager.close()
    state = jax.tree.map(lambda x: np.asarray(x)[position], stacked)
    if bucket.get("padded"):
        state = _unpad(state, bucket["static"]["model"], bucket["run_shapes"][position])
    return state


def _unpad(state: dict, model_name: str, shape_kwargs: dict) -> dict:
    """Cuts a model's own parameters, statistics and Adam moments out of a padded state."""
    from coordjax import models
    from coordjax.train import padding

    spec = models.MODELS[model_name]
    dummy = jax.ShapeDtypeStruct((1, *spec.input_shape), np.float32)
    own = jax.eval_shape(
        lambda x: models.build(model_name, **shape_kwargs).init(jax.random.key(0), x, train=False),
        dummy,
    )
    # Adam's moments have the parameters' tree; match leaves by their path below the collection.
    shapes = {}
    for collection in ("params", "batch_stats"):
        for path, leaf in jax.tree_util.tree_flatten_with_path(own.get(collection, {}))[0]:
            shapes[(collection, *map(models._key_name, path))] = leaf.shape

    def cut(path, leaf):
        names = tuple(map(models._key_name, path))
        collection = "batch_stats" if names[0] == "batch_stats" else "params"
        for start in range(len(names)):
            own_shape = shapes.get((collection, *names[start + 1 :]))
            if own_shape is not None:
                return padding.cut(leaf, own_shape, spec.kernel_offset)
        return leaf

    return jax.tree_util.tree_map_with_path(cut, state)

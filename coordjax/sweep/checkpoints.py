"""orbax checkpoints of a bucket's stacked training state (leading model axis).

Damage is quarantined, never deleted: a checkpoint whose files cannot be restored is moved to
``<bucket>/quarantine/<epoch>-<reason>`` (:meth:`BucketCheckpoints.quarantine`), where orbax no
longer sees it and a person still can: a step directory holding no files as soon as the bucket's
checkpoints are opened, any other when its restore fails. Each restore is independent of the
others (a fresh manager per attempt), so one bad step never condemns the rest. A filesystem that
refuses access (permissions, no space, a read-only mount, an I/O error) is not damage: it raises
:class:`CheckpointAccessError` naming the path and the cause, and nothing is moved.

Routine deletion (:meth:`BucketCheckpoints.prune`) renames a step into ``<bucket>/discarded``
before removing it, so a kill part-way never leaves a half-deleted step among the saved ones; a
step half-deleted in place by an earlier version (an older step lacking files the newest holds)
is deleted when the bucket's checkpoints are opened, the newest step never.

Where they live in a workdir, and how one model is read back (``load_run``), is
:mod:`coordjax.sweep.workdir`'s business.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import pathlib
import re
import shutil
import sys
import time
from collections.abc import Callable
from typing import Any

import jax
import orbax.checkpoint as ocp

QUARANTINE = "quarantine"
# Steps being deleted are renamed here first, so that a kill never leaves one half-deleted.
DISCARDED = "discarded"
logger = logging.getLogger("coordjax.sweep")

# errno values that say the filesystem refused, not that a checkpoint's content is bad.
_ENVIRONMENT_ERRNOS = frozenset(
    getattr(errno, name)
    for name in (
        *("EACCES", "EPERM", "EROFS", "ENOSPC", "EDQUOT", "EIO", "EMFILE", "ENFILE", "ENOMEM"),
        *("EBUSY", "ESTALE", "ETIMEDOUT", "ENOTCONN", "EHOSTDOWN", "EAGAIN", "EINTR"),
    )
    if hasattr(errno, name)
)
# tensorstore (orbax's array store) reports the same refusals as status codes in its messages.
_ENVIRONMENT_STATUSES = ("PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "UNAVAILABLE")


class CheckpointAccessError(OSError):
    """The filesystem refused a checkpoint operation (permissions, no space, ...): not damage.

    The message names the path and the cause; fix the filesystem and rerun (nothing was moved).
    """


class CheckpointDamaged(Exception):
    """A saved checkpoint's files cannot be restored (missing, truncated or garbage)."""

    def __init__(self, path: pathlib.Path, cause: str):
        super().__init__(f"{path}: {cause}")
        self.path = path
        self.cause = cause


def environment_cause(err: BaseException) -> BaseException | None:
    """The exception in ``err``'s chain that is a filesystem refusal, or None (content damage)."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, OSError) and err.errno in _ENVIRONMENT_ERRNOS:
            return err
        if any(status in str(err) for status in _ENVIRONMENT_STATUSES):
            return err
        err = err.__cause__ or err.__context__
    return None


def _one_line(err: BaseException) -> str:
    text = str(err).strip()
    if not text:
        return type(err).__name__
    # tensorstore appends the whole JSON spec of the array it failed to open
    first = text.splitlines()[0].split(" [tensorstore_spec=")[0]
    return f"{type(err).__name__}: {first}"


@contextlib.contextmanager
def _quiet_closed_loops(settle_s: float = 0.25, wait_s: float = 2.0):
    """Drops the "Event loop is closed" reports of a failed orbax restore.

    orbax restores in an event loop of its own and closes it at the first error; the array
    store's reads still in flight then complete on its threads, find the loop closed and each
    report it to ``sys.unraisablehook`` (a bare traceback, 40-odd per damaged step). Those
    reports, and only those, are dropped while the restore runs and, after a failure, until
    none has arrived for ``settle_s`` (at most ``wait_s``); the previous hook is put back.
    """
    previous = sys.unraisablehook
    last = [time.monotonic()]

    def hook(unraisable):
        error = unraisable.exc_value
        if isinstance(error, RuntimeError) and str(error) == "Event loop is closed":
            last[0] = time.monotonic()
            return
        previous(unraisable)

    sys.unraisablehook = hook
    failed = True
    try:
        yield
        failed = False
    finally:
        if failed:
            last[0] = time.monotonic()
            deadline = last[0] + wait_s
            while time.monotonic() < deadline and time.monotonic() - last[0] < settle_s:
                time.sleep(settle_s / 5)
        if sys.unraisablehook is hook:
            sys.unraisablehook = previous


def _access_error(path: pathlib.Path, action: str, cause: BaseException) -> CheckpointAccessError:
    return CheckpointAccessError(
        f"checkpoint {path}: cannot {action} ({_one_line(cause)}); this is the filesystem, not "
        "damage to the checkpoint: nothing was moved; fix it and rerun"
    )


def _slug(reason: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", reason.lower()).strip("-")[:60].strip("-")
    return slug or "damaged"


def _check_readable(step: pathlib.Path) -> None:
    """Opens every file under ``step``: a refusal is the environment's (raised as is), an empty
    step directory is damage."""

    def refuse(err: OSError) -> None:
        raise err

    files = 0
    for root, _, names in os.walk(step, onerror=refuse):
        for name in names:
            with open(os.path.join(root, name), "rb"):
                files += 1
    if not files:
        raise CheckpointDamaged(step, "the step directory holds no files")


def _skeleton(step: pathlib.Path) -> frozenset[str]:
    """The step's files as relative paths, the array store's content-named data files (under a
    ``d`` directory) counted as one ``d/*``: what every complete step of a bucket holds."""
    found = set()
    for path in step.rglob("*"):
        if path.is_file():
            relative = path.relative_to(step)
            if relative.parent.name == "d":
                relative = relative.parent / "*"
            found.add(str(relative))
    return frozenset(found)


def _manager(directory: pathlib.Path, **options) -> ocp.CheckpointManager:
    # One fixed item handler: orbax never has to guess the layout from what is on disk (an
    # emptied step made it guess "several items" and refuse every later restore and save).
    return ocp.CheckpointManager(
        directory,
        options=ocp.CheckpointManagerOptions(**options),
        item_handlers=ocp.StandardCheckpointHandler(),
    )


class BucketCheckpoints:
    """Saves and restores one bucket's stacked state, keyed by epochs completed.

    Saves are synchronous so that a checkpoint on disk is always complete when :meth:`save`
    returns; orbax writes to a temporary directory and renames it when done, so a process killed
    mid-save leaves the previous checkpoint as the latest readable one. Which checkpoints are
    kept is the caller's choice (:meth:`prune`): the engine keeps the latest two and each run's
    best evaluation. A damaged checkpoint is moved aside (:meth:`quarantine`), never deleted:
    opening the directory quarantines the steps that hold no files.
    """

    def __init__(self, directory: pathlib.Path):
        self.directory = pathlib.Path(directory).absolute()
        try:
            self._manager = _manager(
                self.directory,
                max_to_keep=None,
                create=True,
                cleanup_tmp_directories=True,
                enable_async_checkpointing=False,
                todelete_subdir=DISCARDED,
            )
        except Exception as err:
            if (cause := environment_cause(err)) is None:
                raise
            raise _access_error(self.directory, "open the checkpoint directory", cause) from err
        self._empty_discarded()  # what a kill left mid-deletion
        for epoch in self.epochs():  # emptied steps: nothing to restore, and never to be pruned
            step = self.directory / str(epoch)
            if step.is_dir() and not any(path.is_file() for path in step.rglob("*")):
                moved = self.quarantine(epoch, "empty")
                logger.warning("checkpoint %s holds no files; moved it to %s", step, moved)
        self._finish_half_deleted()

    def _empty_discarded(self) -> None:
        if jax.process_index() == 0:
            shutil.rmtree(self.directory / DISCARDED, ignore_errors=True)

    def _finish_half_deleted(self) -> None:
        """Deletes the older steps that lack files the newest step holds: a kill while an
        earlier version deleted them in place (routine pruning had decided to) left them
        half-deleted and unreadable. The newest step is never touched."""
        saved = self.epochs()
        if len(saved) < 2:
            return
        newest = _skeleton(self.directory / str(saved[-1]))
        for epoch in saved[:-1]:
            step = self.directory / str(epoch)
            held = _skeleton(step)
            if held < newest:
                logger.warning(
                    "checkpoint %s was half deleted (it lacks %d of the %d kinds of file the "
                    "newest step %d holds; a kill during routine pruning); finishing its deletion",
                    step, len(newest - held), len(newest), saved[-1],
                )  # fmt: skip
                self.delete(epoch)

    def latest_epoch(self) -> int | None:
        return self._manager.latest_step()

    def epochs(self) -> list[int]:
        """The saved epochs, ascending (quarantined ones are not among them)."""
        return sorted(self._manager.all_steps())

    def save(self, epoch: int, state: Any) -> None:
        """Saves ``state`` as ``epoch`` (a refusing filesystem: :class:`CheckpointAccessError`)."""
        try:
            self._manager.save(epoch, args=ocp.args.StandardSave(state), force=True)
            self._manager.wait_until_finished()
        except Exception as err:
            if (cause := environment_cause(err)) is None:
                raise
            raise _access_error(self.directory / str(epoch), "save", cause) from err

    def prune(self, keep: set[int]) -> None:
        """Deletes every saved epoch not in ``keep`` (routine pruning of good checkpoints)."""
        for epoch in self.epochs():
            if epoch not in keep:
                self.delete(epoch)

    def delete(self, epoch: int) -> None:
        """Deletes a step: renamed out of orbax's sight first (``discarded/``), then removed,
        so a kill part-way never leaves a half-deleted step among the saved ones."""
        self._manager.delete(epoch)
        self._empty_discarded()

    def quarantine(self, epoch: int, reason: str) -> pathlib.Path:
        """Moves ``epoch``'s step directory to ``quarantine/<epoch>-<reason>`` and returns where.

        Nothing is deleted: the files stay for a person to inspect, out of orbax's sight (it no
        longer lists the epoch). A name already taken gets a counter. A filesystem that refuses
        the move raises :class:`CheckpointAccessError` and leaves the step where it was.
        """
        source = self.directory / str(epoch)
        folder = self.directory / QUARANTINE
        base = f"{epoch}-{_slug(reason)}"
        if jax.process_count() > 1:  # every process names the same target
            from jax.experimental import multihost_utils  # several processes only

            multihost_utils.sync_global_devices(f"coordjax quarantine? {source}")
        target, count = folder / base, 1
        while target.exists():
            count += 1
            target = folder / f"{base}-{count}"
        if jax.process_index() == 0:
            try:
                folder.mkdir(exist_ok=True)
                os.rename(source, target)
            except OSError as err:
                raise _access_error(source, f"move it to {target}", err) from err
        if jax.process_count() > 1:
            multihost_utils.sync_global_devices(f"coordjax quarantined {source}")
        self._manager.reload()
        return target

    def restore(self, epoch: int, target: Any) -> Any:
        """Restores into the structure, shapes, dtypes and shardings of ``target``.

        Each call reads through a fresh manager, so a failed restore leaves nothing behind that
        could affect another epoch's. Raises :class:`CheckpointDamaged` when the step's files
        cannot be restored, :class:`CheckpointAccessError` when the filesystem refuses to read
        them.
        """
        step = self.directory / str(epoch)
        abstract = jax.tree.map(
            lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), target
        )
        try:
            _check_readable(step)
            manager = _manager(self.directory, create=False)
            try:
                with _quiet_closed_loops():
                    return manager.restore(epoch, args=ocp.args.StandardRestore(abstract))
            finally:
                manager.close()
        except CheckpointDamaged:
            raise
        except Exception as err:  # orbax raises many kinds for truncated or garbage files
            if (cause := environment_cause(err)) is not None:
                raise _access_error(step, "read", cause) from err
            raise CheckpointDamaged(step, _one_line(err)) from err

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
        with _quiet_closed_loops():
            return manager.restore(epoch, args=ocp.args.StandardRestore(abstract))
    finally:
        manager.close()

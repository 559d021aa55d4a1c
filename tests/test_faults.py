"""Damaged workdirs: an unreadable latest checkpoint falls back to the one before (with a
warning), a deleted results table is rebuilt by retraining, and the checkpoints kept are the
latest two and each run's best evaluation; every recovery equals the undamaged run bit for bit.
Damage is quarantined, never deleted, and one bad step never condemns the others; a filesystem
that refuses access is a clear error, not damage."""

import errno
import logging
import os
import shutil
import sys

import jax
import numpy as np
import pandas as pd
import pytest
from tiny_sweeps import TINY, assert_bitwise_equal

from coordjax.paper.summary import best_per_family
from coordjax.sweep import EngineOptions, Grid, load_run, run_sweep, trainer, union
from coordjax.sweep import workdir as wd
from coordjax.sweep.checkpoints import (
    QUARANTINE,
    BucketCheckpoints,
    CheckpointAccessError,
    environment_cause,
)

OPTIONS = EngineOptions(progress=False, shard=False)  # sharded, 4 test devices pad 2 models to 4
BASE = {**TINY, "epochs": 4}


def small_sweep():
    return union("faults", [Grid("tiny", base=BASE, axes={"lr": [0.05, 0.01]})])


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """An undamaged run that kept every checkpoint (to be damaged in copies)."""
    workdir = tmp_path_factory.mktemp("straight") / "w"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(trainer, "_epochs_to_keep", lambda results, bucket, saved: set(saved))
        results = run_sweep(small_sweep(), workdir, options=OPTIONS)
    return workdir, results


def _bucket_dir(workdir):
    (bucket,) = (workdir / wd.CHECKPOINTS).iterdir()
    return bucket


def _killed_after(straight_dir, copy_dir, epoch):
    """A copy of the workdir as a kill right after ``epoch``'s checkpoint leaves it."""
    shutil.copytree(straight_dir, copy_dir)
    bucket = _bucket_dir(copy_dir)
    for step in bucket.iterdir():
        if step.name.isdigit() and int(step.name) > epoch:
            shutil.rmtree(step)
    results = wd.read_results(copy_dir)
    wd.write_results(copy_dir, results[results["epoch"] <= epoch])
    return bucket


def _damage(directory, how):
    files = [f for f in directory.rglob("*") if f.is_file()]
    assert files
    for f in files:
        data = f.read_bytes()
        if how == "truncated":
            f.write_bytes(data[: len(data) // 2])
        else:
            f.write_bytes(np.random.default_rng(0).bytes(max(len(data), 16)))


@pytest.mark.parametrize("how", ["truncated", "garbage"])
def test_unreadable_latest_checkpoint_falls_back_to_the_previous(straight, tmp_path, caplog, how):
    straight_dir, straight_results = straight
    bucket = _killed_after(straight_dir, tmp_path / "w", epoch=3)
    _damage(bucket / "3", how)
    with caplog.at_level(logging.INFO, logger="coordjax"):
        resumed = run_sweep(small_sweep(), tmp_path / "w", options=OPTIONS)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("unreadable" in w and str(bucket / "3") in w for w in warnings), warnings
    assert any("resumed at epoch 2" in r.getMessage() for r in caplog.records)
    assert_bitwise_equal(resumed, straight_results)


def test_deleted_results_table_is_rebuilt_by_retraining(straight, tmp_path, caplog):
    straight_dir, straight_results = straight
    shutil.copytree(straight_dir, tmp_path / "w")
    (tmp_path / "w" / wd.RESULTS).unlink()
    with caplog.at_level(logging.WARNING, logger="coordjax"):
        rebuilt = run_sweep(small_sweep(), tmp_path / "w", options=OPTIONS)
    assert any("lacks its rows" in r.getMessage() for r in caplog.records)
    moved = sorted(p.name for p in (_bucket_dir(tmp_path / "w") / QUARANTINE).iterdir())
    assert moved == [f"{e}-results-rows-missing" for e in range(1, 5)]
    assert_bitwise_equal(rebuilt, straight_results)
    assert_bitwise_equal(pd.read_csv(tmp_path / "w" / wd.RESULTS), straight_results)


def test_best_evaluations_are_kept_and_pruned_epochs_are_a_clear_error(straight, tmp_path):
    straight_dir, _ = straight
    results = run_sweep(small_sweep(), tmp_path / "w", options=OPTIONS)
    saved = sorted(int(d.name) for d in _bucket_dir(tmp_path / "w").iterdir() if d.name.isdigit())
    peaks = {}
    for run_id, history in results.groupby("run_id"):
        peaks[run_id] = int(history.loc[history["test_accuracy"].idxmax(), "epoch"])
    assert set(saved) == {3, 4} | set(peaks.values())
    best = best_per_family(results).iloc[0]
    assert best["peak_epoch"] in saved
    for run_id, epoch in peaks.items():
        mine = load_run(tmp_path / "w", run_id, epoch=epoch)
        theirs = load_run(straight_dir, run_id, epoch=epoch)
        for a, b in zip(jax.tree.leaves(mine), jax.tree.leaves(theirs), strict=True):
            np.testing.assert_array_equal(a, b)
    pruned = [e for e in range(1, 5) if e not in saved]
    for epoch in pruned:
        with pytest.raises(ValueError, match=f"no checkpoint at epoch {epoch}.*keeps epochs"):
            load_run(tmp_path / "w", results["run_id"][0], epoch=epoch)


# -- quarantine, not delete -----------------------------------------------------------------------


def _files(step):
    return {p.relative_to(step): p.read_bytes() for p in step.rglob("*") if p.is_file()}


def _empty(step):
    shutil.rmtree(step)
    step.mkdir()


def _resume_keeping_all(workdir, caplog):
    with caplog.at_level(logging.INFO, logger="coordjax"), pytest.MonkeyPatch.context() as patch:
        patch.setattr(trainer, "_epochs_to_keep", lambda results, bucket, saved: set(saved))
        resumed = run_sweep(small_sweep(), workdir, options=OPTIONS)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    return resumed, warnings


def _assert_same_as_straight(straight, workdir, resumed, epochs):
    straight_dir, straight_results = straight
    assert_bitwise_equal(resumed, straight_results)
    assert_bitwise_equal(pd.read_csv(workdir / wd.RESULTS), straight_results)
    for run_id in set(straight_results["run_id"]):
        for epoch in epochs:
            mine, theirs = (load_run(d, run_id, epoch=epoch) for d in (workdir, straight_dir))
            for a, b in zip(jax.tree.leaves(mine), jax.tree.leaves(theirs), strict=True):
                np.testing.assert_array_equal(a, b)


def test_emptied_latest_step_is_quarantined_and_the_good_ones_kept(straight, tmp_path, caplog):
    # The fault trial: every checkpoint was declared unreadable, deleted, then the save crashed.
    bucket = _killed_after(straight[0], tmp_path / "w", epoch=3)
    good = {epoch: _files(bucket / str(epoch)) for epoch in (1, 2)}
    _empty(bucket / "3")
    resumed, warnings = _resume_keeping_all(tmp_path / "w", caplog)
    assert any(str(bucket / "3") in w and "quarantine" in w for w in warnings), warnings
    assert any("resumed at epoch 2" in r.getMessage() for r in caplog.records)
    assert [p.name for p in (bucket / QUARANTINE).iterdir()] == ["3-empty"]
    for epoch, files in good.items():
        assert _files(bucket / str(epoch)) == files  # neither moved nor rewritten
    _assert_same_as_straight(straight, tmp_path / "w", resumed, epochs=range(1, 5))


def test_emptied_middle_step_is_quarantined_and_resume_uses_the_latest(straight, tmp_path, caplog):
    bucket = _killed_after(straight[0], tmp_path / "w", epoch=3)
    good = {epoch: _files(bucket / str(epoch)) for epoch in (1, 3)}
    _empty(bucket / "2")
    resumed, warnings = _resume_keeping_all(tmp_path / "w", caplog)
    assert any(str(bucket / "2") in w for w in warnings), warnings
    assert any("resumed at epoch 3" in r.getMessage() for r in caplog.records)
    assert [p.name for p in (bucket / QUARANTINE).iterdir()] == ["2-empty"]
    for epoch, files in good.items():
        assert _files(bucket / str(epoch)) == files
    _assert_same_as_straight(straight, tmp_path / "w", resumed, epochs=(1, 3, 4))


def test_every_step_damaged_retrains_with_a_warning(straight, tmp_path, caplog):
    bucket = _killed_after(straight[0], tmp_path / "w", epoch=3)
    damaged = {epoch: _files(bucket / str(epoch)) for epoch in (1, 2, 3)}
    _damage(bucket / "1", "garbage")
    _damage(bucket / "2", "truncated")
    _empty(bucket / "3")
    resumed, warnings = _resume_keeping_all(tmp_path / "w", caplog)
    assert any("no readable checkpoint; training it from the start" in w for w in warnings)
    for epoch in (1, 2):
        assert any(f"{bucket / str(epoch)} is unreadable" in w for w in warnings), warnings
    moved = sorted(p.name for p in (bucket / QUARANTINE).iterdir())
    assert moved == ["1-unreadable", "2-unreadable", "3-empty"]
    for epoch in (1, 2):  # the damaged files themselves, kept for a person to look at
        kept = _files(bucket / QUARANTINE / f"{epoch}-unreadable")
        assert kept.keys() == damaged[epoch].keys()
    _assert_same_as_straight(straight, tmp_path / "w", resumed, epochs=range(1, 5))


def _permissions_bind(tmp_path) -> bool:
    """Whether a read-only directory stops this process (not for root with its capabilities)."""
    probe = tmp_path / "probe"
    probe.mkdir()
    probe.chmod(0o555)
    try:
        (probe / "file").write_text("")
    except PermissionError:
        return True
    finally:
        probe.chmod(0o755)
    return False


def test_read_only_checkpoint_directory_is_a_clear_error(straight, tmp_path):
    if not _permissions_bind(tmp_path):
        pytest.skip(f"euid {os.geteuid()} writes into read-only directories (root)")
    bucket = _killed_after(straight[0], tmp_path / "w", epoch=3)
    _damage(bucket / "3", "garbage")
    before = {p: p.stat().st_mode for p in (bucket, *bucket.rglob("*"))}
    for path in before:
        path.chmod(path.stat().st_mode & ~0o222)
    try:
        with pytest.raises(CheckpointAccessError, match=f"checkpoint {bucket}.*Permission"):
            run_sweep(small_sweep(), tmp_path / "w", options=OPTIONS)
    finally:
        for path, mode in before.items():
            path.chmod(mode)
    assert not (bucket / QUARANTINE).exists()
    assert sorted(int(p.name) for p in bucket.iterdir()) == [1, 2, 3]


@pytest.mark.parametrize("code", [errno.EACCES, errno.ENOSPC, errno.EIO])
def test_a_refusing_filesystem_is_not_damage(straight, tmp_path, monkeypatch, code):
    # Simulated (works as root too): the step's files refuse to open while being checked.
    bucket = _killed_after(straight[0], tmp_path / "w", epoch=3)
    real_open = open

    def refusing_open(path, *args, **kwargs):
        if str(path).startswith(str(bucket / "3")):
            raise OSError(code, os.strerror(code), str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr("builtins.open", refusing_open)
    with pytest.raises(CheckpointAccessError, match=f"checkpoint {bucket / '3'}: cannot read"):
        run_sweep(small_sweep(), tmp_path / "w", options=OPTIONS)
    assert not (bucket / QUARANTINE).exists()
    assert sorted(int(p.name) for p in bucket.iterdir()) == [1, 2, 3]


def test_environment_causes_are_found_anywhere_in_the_chain():
    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError as inner:
            raise ValueError("orbax could not write") from inner
    except ValueError as outer:
        assert isinstance(environment_cause(outer), OSError)
    assert environment_cause(ValueError("PERMISSION_DENIED: open failed")) is not None
    assert environment_cause(FileNotFoundError(errno.ENOENT, "gone")) is None  # damage
    assert environment_cause(ValueError("Must provide `args` of type `Composite`")) is None


def test_a_crash_between_quarantine_and_retraining_loses_no_rows(straight, tmp_path, caplog):
    # Killed after epoch 3's rows were written, before its checkpoint: rows to 3, steps to 2.
    straight_dir, straight_results = straight
    bucket = _killed_after(straight_dir, tmp_path / "w", epoch=2)
    wd.write_results(tmp_path / "w", straight_results[straight_results["epoch"] <= 3])
    _damage(bucket / "2", "garbage")
    good = _files(bucket / "1")

    class Crash(Exception):
        pass

    def crash(self, epoch, state):
        raise Crash(f"killed before saving epoch {epoch}")

    with pytest.MonkeyPatch.context() as patch, pytest.raises(Crash):
        patch.setattr(BucketCheckpoints, "save", crash)
        run_sweep(small_sweep(), tmp_path / "w", options=OPTIONS)
    # Quarantined 2, retrained epoch 2 from 1, crashed: the rows past the checkpoint are kept.
    assert [p.name for p in (bucket / QUARANTINE).iterdir()] == ["2-unreadable"]
    on_disk = pd.read_csv(tmp_path / "w" / wd.RESULTS)
    assert_bitwise_equal(on_disk, straight_results[straight_results["epoch"] <= 3])
    assert _files(bucket / "1") == good
    resumed, _ = _resume_keeping_all(tmp_path / "w", caplog)
    _assert_same_as_straight(straight, tmp_path / "w", resumed, epochs=range(1, 5))


# -- debris of killed processes -------------------------------------------------------------------


def test_temporary_files_of_a_killed_writer_are_removed_by_the_next_run(straight, tmp_path):
    # Killed between writing a temporary file and renaming it into place.
    workdir = tmp_path / "w"
    shutil.copytree(straight[0], workdir)
    (workdir / "claims" / "bucket").mkdir(parents=True)
    debris = [workdir / "tmpk1ll3d.tmp", workdir / "claims" / "bucket" / "tmpx7.tmp"]
    for path in debris:
        path.write_text("{")
    with wd.locked(workdir, shared=True):  # a task of a fan-out, alone on the workdir
        assert not any(path.exists() for path in debris)
        # Another process joining the fan-out never removes what a live one may be writing.
        debris[0].write_text("{")
        with wd.locked(workdir, shared=True):
            assert debris[0].exists()
    with wd.locked(workdir):  # a single process
        assert not debris[0].exists()
    assert (workdir / wd.CONFIG).exists() and (workdir / wd.RESULTS).exists()


def test_a_half_deleted_old_step_is_deleted_and_the_newest_never(straight, tmp_path, caplog):
    # Killed while orbax deleted an old step: some of its files gone, the step still listed.
    workdir = tmp_path / "w"
    shutil.copytree(straight[0], workdir)
    bucket = _bucket_dir(workdir)
    kept = {epoch: _files(bucket / str(epoch)) for epoch in (1, 3, 4)}
    for name in ("_CHECKPOINT_METADATA", "default/_METADATA", "default/manifest.ocdbt"):
        (bucket / "2" / name).unlink()
    with caplog.at_level(logging.WARNING, logger="coordjax"):
        checkpoints = BucketCheckpoints(bucket)
    assert checkpoints.epochs() == [1, 3, 4] and not (bucket / "2").exists()
    assert any("half deleted" in r.getMessage() and str(bucket / "2") in r.getMessage()
               for r in caplog.records)  # fmt: skip
    assert {epoch: _files(bucket / str(epoch)) for epoch in (1, 3, 4)} == kept
    # The newest step lacking files is damage, for the restore to find: it is not deleted.
    (bucket / "4" / "default" / "_METADATA").unlink()
    assert BucketCheckpoints(bucket).epochs() == [1, 3, 4]
    # Routine deletion renames a step out of orbax's sight first: nothing half-deleted is listed.
    checkpoints.delete(1)
    assert checkpoints.epochs() == [3, 4] and sorted(p.name for p in bucket.iterdir()) == ["3", "4"]


def test_the_closed_event_loop_reports_of_a_failed_restore_are_dropped(capsys):
    from coordjax.sweep.checkpoints import _quiet_closed_loops

    class Report:  # what the array store's threads do: an error nobody can catch
        def __init__(self, message):
            self.message = message

        def __del__(self):
            raise RuntimeError(self.message)

    seen = []

    def hook(unraisable):
        seen.append(unraisable)

    before = sys.unraisablehook
    sys.unraisablehook = hook
    try:
        with pytest.raises(ValueError), _quiet_closed_loops(settle_s=0.05):
            Report("Event loop is closed")
            Report("something else")
            raise ValueError("DATA_LOSS: a damaged step")
        Report("Event loop is closed")  # after the restore: the next one reaches the hook
        assert sys.unraisablehook is hook
    finally:
        sys.unraisablehook = before
    assert [str(u.exc_value) for u in seen] == ["something else", "Event loop is closed"]

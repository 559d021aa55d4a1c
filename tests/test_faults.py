"""Damaged workdirs: an unreadable latest checkpoint falls back to the one before (with a
warning), a deleted results table is rebuilt by retraining, and the checkpoints kept are the
latest two and each run's best evaluation; every recovery equals the undamaged run bit for bit."""

import logging
import shutil

import jax
import numpy as np
import pandas as pd
import pytest
from test_sweep import assert_bitwise_equal

from coordjax.sweep import EngineOptions, Grid, engine, load_run, run_sweep, union
from coordjax.sweep import workdir as wd
from coordjax.sweep.summary import best_per_family

OPTIONS = EngineOptions(progress=False)
BASE = {"task": "classification", "model": "tiny", "batch_size": 256, "epochs": 4, "eval_every": 1}


def small_sweep():
    return union("faults", [Grid("tiny", base=BASE, axes={"lr": [0.05, 0.01]})])


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """An undamaged run that kept every checkpoint (to be damaged in copies)."""
    workdir = tmp_path_factory.mktemp("straight") / "w"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(engine, "_epochs_to_keep", lambda results, bucket, saved: set(saved))
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

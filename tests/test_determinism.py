"""Same command, same machine => bit-identical results: under CPU load, and whichever lowering was
recorded for a bucket when it started (the SIGKILL-and-resume case is in test_sweep.py)."""

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
from tiny_sweeps import assert_bitwise_equal, tiny_sweep

from coordjax.sweep import EngineOptions, load_run, programs, run_sweep
from coordjax.sweep import workdir as wd

SINGLE_DEVICE = EngineOptions(progress=False, shard=False)  # 4 models on one device


def assert_same_params(workdir_a, workdir_b, run_ids) -> None:
    for run_id in run_ids:
        a, b = load_run(workdir_a, run_id), load_run(workdir_b, run_id)
        for leaf_a, leaf_b in zip(_leaves(a), _leaves(b), strict=True):
            np.testing.assert_array_equal(leaf_a, leaf_b)


def _leaves(tree):
    import jax

    return jax.tree.leaves(tree)


def test_default_strategy_is_a_fixed_rule():
    assert programs.default_strategy("cpu", 4, 4) == ("map", 1)
    assert programs.default_strategy("cpu", 1, 4) == ("vmap", 4)
    assert programs.default_strategy("gpu", 64, 4) == ("vmap", 4)


@pytest.mark.integration  # two CPU burners for a minute
def test_run_under_cpu_load_equals_quiet_run(tmp_path):
    quiet = run_sweep(tiny_sweep(), tmp_path / "quiet", options=SINGLE_DEVICE)
    burners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
    try:
        time.sleep(0.5)
        loaded = run_sweep(tiny_sweep(), tmp_path / "loaded", options=SINGLE_DEVICE)
    finally:
        for burner in burners:
            burner.kill()
            burner.wait()
    assert_bitwise_equal(loaded, quiet)
    assert_same_params(tmp_path / "quiet", tmp_path / "loaded", set(quiet["run_id"]))
    recorded = wd.read_strategies(tmp_path / "loaded")
    assert [c["source"] for c in recorded.values()] == ["rule"]
    assert set(loaded["strategy"]) == {recorded[loaded["bucket_id"][0]]["strategy"]}


def test_resume_keeps_the_recorded_strategy(tmp_path):
    """A bucket that started with one lowering continues with it, whatever is asked now."""
    sweep = tiny_sweep(epochs=1)  # a strategy is chosen once per bucket: one epoch shows it
    straight = run_sweep(
        sweep, tmp_path / "straight",
        options=EngineOptions(progress=False, shard=False, strategy="map", map_batch_size=2),
    )  # fmt: skip
    bucket_id = straight["bucket_id"][0]
    (tmp_path / "resumed").mkdir()
    wd.record_strategy(
        tmp_path / "resumed", bucket_id, {"strategy": "map", "map_batch_size": 2, "source": "tune"}
    )
    resumed = run_sweep(sweep, tmp_path / "resumed", options=SINGLE_DEVICE)
    assert set(resumed["strategy"]) == {"map"}
    assert_bitwise_equal(resumed, straight)


def test_tune_is_recorded(tmp_path):
    results = run_sweep(
        tiny_sweep(epochs=1), tmp_path,
        options=EngineOptions(progress=False, shard=False, strategy="tune"),
    )  # fmt: skip
    recorded = json.loads((tmp_path / wd.STRATEGIES).read_text())
    (choice,) = recorded.values()
    assert choice["source"] == "tune" and set(results["strategy"]) == {choice["strategy"]}


@pytest.mark.parametrize("name", ["results.csv", "config.json", "strategies.json"])
def test_workdir_files_follow_the_umask(tmp_path, tiny_workdir, name):
    mask = os.umask(0o022)
    os.umask(mask)
    assert (tiny_workdir[0] / name).stat().st_mode & 0o777 == 0o666 & ~mask

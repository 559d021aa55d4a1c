"""The sweep engine: grids, planning, equivalences (vmapped = single model, sharded = single
device, map = vmap), divergence isolation, workdir rules, and resume after a real SIGKILL."""

import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pandas as pd
import pytest
from tiny_sweeps import (
    METRICS,
    QUIET,
    TINY,
    assert_bitwise_equal,
    assert_same_metrics,
    by_run,
    sweep_of_file,
    tiny_sweep,
    tiny_sweep_file,
)

from coordjax import datasets, models, tasks
from coordjax.sweep import (
    EngineOptions,
    Grid,
    WorkdirError,
    engine,
    load_run,
    plan,
    run_sweep,
    union,
)
from coordjax.sweep import workdir as wd
from coordjax.train import fit, make_hparams

# -- grids and planning ----------------------------------------------------------------------


def test_grid_expands_to_the_product_with_stable_ids():
    grid = Grid("g", base={"model": "tiny"}, axes={"lr": [0.1, 0.2, 0.3], "seed": [0, 1]})
    rows = grid.expand()
    assert len(rows) == len(grid) == 6
    assert len({r["run_id"] for r in rows}) == 6
    again = Grid("other-name", base={"model": "tiny", "seed": 1}, axes={"lr": [0.2]}).expand()
    assert again[0]["run_id"] in {r["run_id"] for r in rows}  # content, not origin, makes the id


def test_union_drops_duplicate_runs():
    a = Grid("a", base={"model": "tiny"}, axes={"lr": [0.1, 0.2]})
    b = Grid("b", base={"model": "tiny"}, axes={"lr": [0.2, 0.3]})
    assert len(union("u", [a, b]).expand()) == 3


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: union("u", [Grid("g", axes={"learning_rate": [0.1]})]), "learning_rate"),
        (lambda: Grid("g", axes={"learning_rate": [0.1]}).expand(), "learning_rate"),
        (lambda: Grid("g", axes={"lr": []}), "lr"),
        (lambda: Grid("g", axes={"lr": 0.1}), "lr"),
    ],
)
def test_bad_grids_are_rejected_naming_the_key(make, match):
    with pytest.raises((ValueError, TypeError), match=match):
        make()


def test_planner_buckets_by_shape_and_vmaps_the_rest():
    sweep = union("s", [Grid("deconv", base={"model": "deconv_painter", "batch_size": 16},
                             axes={"filter_size": [2, 3], "lr": [0.1, 0.01], "l2": [0, 1e-3],
                                   "seed": [0, 1], "split": ["uniform", "quadrant"]})])  # fmt: skip
    buckets = plan(sweep.expand())
    assert len(buckets) == 2
    assert {b.static["filter_size"] for b in buckets} == {2, 3}
    assert all(b.num_models == 16 for b in buckets)
    assert buckets[0].steps_per_epoch == 151  # ceil(2407 / 16): the larger split sets the length
    parts = plan(sweep.expand(), max_models=5)
    assert [b.num_models for b in parts] == [5, 5, 5, 1] * 2


def test_planner_rejects_bad_runs_naming_the_key():
    with pytest.raises(ValueError, match="split"):
        plan(tiny_sweep(splits=("diagonal",)).expand())
    with pytest.raises(ValueError, match="model"):
        plan(union("s", [Grid("g", base={"model": "resnet"})]).expand())


def test_dry_run_reports_every_bucket():
    from coordjax.sweep.dry_run import plan_text

    text = plan_text(tiny_sweep(), QUIET)
    assert "4 models in 1 buckets" in text and "TFLOP" in text


# -- equivalences ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_results(tiny_workdir):
    return tiny_workdir[1]


def test_bucket_equals_single_model_fit(tmp_path, assert_functionally_equal):
    """Every model of a vmapped, sharded bucket (mixed splits) matches the single-model API."""
    base = {**TINY, "l2": 0.001}
    results = run_sweep(tiny_sweep(lrs=(0.01, 0.002), **base), tmp_path, options=QUIET)
    final = results[results["epoch"] == TINY["epochs"]]
    for _, row in final.iterrows():
        alone = fit(
            models.build("tiny"), tasks.get("classification"),
            datasets.not_so_clevr(row["split"]), make_hparams(row["lr"], 0.001),
            seed=0, epochs=TINY["epochs"], batch_size=256,
        )  # fmt: skip
        assert_functionally_equal(
            load_run(tmp_path, row["run_id"])["params"], alone.state.params,
            max_step=2 * row["lr"] * row["step"],
        )  # fmt: skip
        for col in ("train_loss", "test_loss", "epoch_train_loss"):
            np.testing.assert_allclose(row[col], alone.history[-1][col], rtol=1e-4, err_msg=col)


@pytest.mark.parametrize(
    "name, shape",
    [
        ("tiny", {}),
        # The paper's models compile for about a minute each: under -m slow.
        pytest.param(
            "deconv_painter", {"filter_size": 2, "channel_mult": 1}, marks=pytest.mark.slow
        ),
        pytest.param("coordconv_classifier", {}, marks=pytest.mark.slow),
    ],
)
def test_vmapped_steps_equal_single_model_steps(name, shape, assert_functionally_equal):
    """Steps vmapped over models (different lr, l2, seed and split) equal the same steps run one
    model at a time: the tiny model by default, the paper's models under -m slow."""
    from coordjax.paper.data import device_data, split_indices
    from coordjax.train import (
        RunSpec,
        TrainSetup,
        init_state,
        stack_hparams,
        stack_splits,
        train_step,
    )

    task = tasks.get("classification")
    data = device_data(task)
    setup = TrainSetup(models.build(name, **shape), task, batch_size=16, steps_per_epoch=151)
    configs = [
        (0.002, 0.001, 0, "uniform"),
        (0.01, 0.0, 1, "quadrant"),
        (0.005, 0.01, 2, "uniform"),
    ]
    singles = [
        RunSpec(make_hparams(lr, l2), np.int32(seed), split_indices(split))
        for lr, l2, seed, split in configs
    ]
    runs = RunSpec(
        stack_hparams([r.hparams for r in singles]),
        np.stack([r.seed for r in singles]),
        stack_splits([r.split for r in singles]),
    )
    batches = [(np.arange(16, dtype=np.int32) * (7 + k) + 3 * k) % 3136 for k in range(3)]
    mask = np.ones(16, bool)
    mask[-3:] = False  # a partial batch

    def steps(run, state):
        for idx in batches:
            state, _ = train_step(setup, data, run, state, idx, mask)
        return state

    init = jax.jit(lambda run: init_state(setup, data, run))
    stacked = jax.jit(jax.vmap(steps))(runs, jax.vmap(init)(runs))
    single = jax.jit(steps)
    for i, run in enumerate(singles):
        alone = single(run, init(run))
        mine = jax.tree.map(lambda x, i=i: x[i], stacked)
        assert_functionally_equal(mine.params, alone.params, max_step=2 * 0.01 * len(batches))
        np.testing.assert_array_equal(mine.step, alone.step)


def test_sharded_equals_single_device(tmp_path, tiny_results):
    assert len(jax.devices()) > 1  # conftest provides fake CPU devices
    single = run_sweep(
        tiny_sweep(), tmp_path, options=EngineOptions(shard=False, progress=False, strategy="vmap")
    )
    assert_same_metrics(single, tiny_results)


def test_lax_map_strategy_equals_vmap(tmp_path, tiny_results):
    mapped = run_sweep(
        tiny_sweep(), tmp_path,
        options=EngineOptions(strategy="map", map_batch_size=1, shard=False, progress=False),
    )  # fmt: skip
    assert_same_metrics(mapped, tiny_results)


def test_diverging_model_is_flagged_and_isolated(tmp_path, tiny_results):
    # Unsharded: one device holds the diverging models beside the good ones (and 6 models are
    # not padded to 8 for the 4 test devices).
    options = EngineOptions(progress=False, strategy="vmap", shard=False)
    with_bad = run_sweep(tiny_sweep(lrs=(0.01, 0.002, 1e38)), tmp_path, options=options)
    bad = with_bad[with_bad["lr"] == 1e38]
    assert bad["diverged"].all() and (bad["diverged_step"] >= 0).all()
    assert np.isnan(bad[METRICS[:-1]].to_numpy()).all()  # undefined, and said so
    good = with_bad[with_bad["lr"] != 1e38]
    assert not good["diverged"].any()
    assert_same_metrics(good, tiny_results)


# -- the workdir ------------------------------------------------------------------------------


def test_results_table_has_every_column(tiny_results, tmp_path):
    for col in ("run_id", "grid", "bucket_id", "lr", "l2", "seed", "split", "batch_size",
                "param_count", "epoch", "step", "wall_time", "diverged", *METRICS):  # fmt: skip
        assert col in tiny_results.columns, col
    assert len(tiny_results) == 4 * 2  # 4 models x 2 evaluations
    assert (tiny_results["param_count"] == 17).all()


def test_summary_names_the_best_model_per_family(tiny_results):
    from coordjax.paper.summary import best_per_family, summary_text

    text = summary_text(tiny_results)
    assert "models: 4" in text and "diverged: 0" in text
    assert "classification" in text and "test_iou" not in text  # only the task's own metrics
    final = tiny_results[tiny_results["epoch"] == 2]
    best = best_per_family(tiny_results).set_index("split")
    for split, group in final.groupby("split"):
        assert best.loc[split, "test_accuracy"] == group["test_accuracy"].max()
        assert best.loc[split, "best_run"] in text
        history = tiny_results[tiny_results["run_id"] == best.loc[split, "best_run"]]
        assert best.loc[split, "peak_test_accuracy"] == history["test_accuracy"].max()
    all_diverged = tiny_results.assign(diverged=True)
    assert "no model finished without diverging" in summary_text(all_diverged)


def test_rerun_skips_finished_buckets(tmp_path, monkeypatch, tiny_workdir):
    shutil.copytree(tiny_workdir[0], tmp_path, dirs_exist_ok=True)
    first = tiny_workdir[1]

    def must_not_train(*args, **kwargs):
        raise AssertionError("a finished bucket was trained again")

    monkeypatch.setattr(engine.Programs, "chunk", must_not_train)
    again = run_sweep(tiny_sweep(), tmp_path, options=QUIET)
    pd.testing.assert_frame_equal(by_run(first), by_run(again))


def test_workdir_in_use_is_refused(tmp_path):
    with wd.locked(tmp_path):
        with pytest.raises(WorkdirError, match="in use"):
            run_sweep(tiny_sweep(), tmp_path, options=QUIET)


def test_different_sweep_is_refused_unless_restarted(tmp_path, tiny_workdir):
    shutil.copytree(tiny_workdir[0], tmp_path / "w")
    other = tiny_sweep(lrs=(0.3,))
    with pytest.raises(WorkdirError, match="different sweep"):
        run_sweep(other, tmp_path / "w", options=QUIET)
    unsharded = EngineOptions(progress=False, strategy="vmap", shard=False)  # 2 models, not 4
    results = run_sweep(other, tmp_path / "w", options=unsharded, restart=True)
    assert set(results["lr"]) == {0.3}
    backups = list(tmp_path.glob("w.old-*"))
    assert len(backups) == 1 and (backups[0] / "results.csv").exists()  # nothing is lost


# -- kill and resume ----------------------------------------------------------------------------

KILLABLE_GRIDS = """[
    Grid("tiny", base={**BASE, "epochs": 6},
         axes={"lr": [0.05, 0.01], "split": ["uniform", "quadrant"]}),
    Grid("tiny2", base={**BASE, "epochs": 6, "batch_size": 512}, axes={"lr": [0.05]}),
]"""


def _launch(sweep_file: pathlib.Path, workdir: pathlib.Path) -> subprocess.Popen:
    command = [sys.executable, "-m", "coordjax.cli", "sweep", str(sweep_file), "--preset", "t",
               "--workdir", str(workdir), "--no-progress"]  # fmt: skip
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _checkpointed_epochs(workdir: pathlib.Path) -> int:
    return len(list((workdir / "checkpoints").glob("*/[0-9]*")))


# Slow (a minute): the default suite kills and resumes real CLI processes in test_fanout.py
# (mid-bucket) and test_pruning.py (at a rung).
@pytest.mark.slow
def test_sigkill_then_resume_equals_uninterrupted_run_bit_for_bit(tmp_path):
    sweep_file = tiny_sweep_file(tmp_path, KILLABLE_GRIDS)
    victim = _launch(sweep_file, tmp_path / "killed")
    deadline = time.monotonic() + 300
    while _checkpointed_epochs(tmp_path / "killed") < 2 and time.monotonic() < deadline:
        assert victim.poll() is None, "the sweep finished before it could be killed"
        time.sleep(0.05)
    os.kill(victim.pid, signal.SIGKILL)
    victim.communicate()
    partial = wd.read_results(tmp_path / "killed")  # readable right after the kill

    resumed = _launch(sweep_file, tmp_path / "killed")
    out, _ = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, out
    assert "resumed at epoch" in out

    # The same sweep, uninterrupted, in-process.
    straight = run_sweep(sweep_of_file(sweep_file), tmp_path / "straight", preset="t",
                         options=EngineOptions(progress=False))  # fmt: skip
    assert len(partial) < len(straight)
    # The CLI's default strategy is a fixed rule, recorded per bucket: bit for bit the same.
    assert_bitwise_equal(
        pd.read_csv(tmp_path / "killed" / "results.csv"),
        pd.read_csv(tmp_path / "straight" / "results.csv"),
    )
    for run_id in set(straight["run_id"]):
        killed, alone = (
            load_run(tmp_path / "killed", run_id),
            load_run(tmp_path / "straight", run_id),
        )
        for a, b in zip(jax.tree.leaves(killed), jax.tree.leaves(alone), strict=True):
            np.testing.assert_array_equal(a, b)

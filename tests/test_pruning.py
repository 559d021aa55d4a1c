"""Successive halving: rung decisions against a pandas recomputation, survivors against the
unpruned run, crashes and SIGKILLs at the rung against the uninterrupted pruned run, the
model-steps against the rule's arithmetic, and sampled search spaces."""

import json
import math
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pandas as pd
import pytest
from tiny_sweeps import TINY

from coordjax import paper
from coordjax.paper.experiment import EXPERIMENT as PAPER
from coordjax.paper.summary import best_per_family
from coordjax.sweep import (
    Choice,
    EngineOptions,
    Grid,
    LogUniform,
    Prune,
    Uniform,
    load_run,
    plan,
    pruning,
    run_sweep,
    trainer,
    union,
)
from coordjax.sweep import workdir as wd
from coordjax.sweep.programs import Programs

# lax.map over single models: a model's program does not depend on how many share the stack.
# Unsharded, so that the model axis shrinks to the survivors (with the 4 test devices it would
# stay a multiple of 4; the sharded ladder is tested on the vmapped run below).
MAP = EngineOptions(progress=False, strategy="map", map_batch_size=1, shard=False)
BASE = {**TINY, "epochs": 4}  # each grid sets its batch size
RULE = Prune(at=(1, 2), keep=0.5, metric="train_loss")
LRS = [0.05, 0.02, 0.01, 0.005]
# Columns that only a pruned sweep has, or that are timings.
BOOKKEEPING = ["wall_time", "bucket_model_steps", "status", "pruned_epoch"]
# One set of compiled programs for the module's sweeps (each shape and width compiles once).
PROGRAMS = Programs()


def sweep_run(sweep, workdir, options=MAP):
    return run_sweep(sweep, workdir, options=options, programs=PROGRAMS)


def grids():
    # Two buckets (batch sizes) whose uniform runs are ranked together (task, family, split).
    return [
        Grid("tiny", base={**BASE, "batch_size": 256}, axes={"lr": LRS, "split": ["uniform"]}),
        Grid("tiny", base={**BASE, "batch_size": 512},
             axes={"lr": LRS[:2], "split": ["uniform", "quadrant"]}),
    ]  # fmt: skip


def pruned_sweep(rule=RULE):
    return union("halving", grids(), prune=rule)


@pytest.fixture(scope="module")
def pruned_run(tmp_path_factory):
    """The pruned sweep, uninterrupted: (root, its results); the workdir is root / "pruned"."""
    root = tmp_path_factory.mktemp("pruning")
    return root, sweep_run(pruned_sweep(), root / "pruned")


@pytest.fixture(scope="module")
def straight(pruned_run):
    """The pruned sweep, uninterrupted; and the same grid without pruning (in root / "full")."""
    root, pruned = pruned_run
    full = sweep_run(union("halving", grids()), root / "full")
    return root, pruned, full


def _rows(results):
    return results.sort_values(["run_id", "epoch"]).reset_index(drop=True)


def _same(a, b):
    """Every column but timings and pruning bookkeeping, exactly (NaN equal to NaN)."""
    drop = [c for c in BOOKKEEPING if c in a or c in b]
    a, b = (_rows(t).drop(columns=[c for c in drop if c in t]) for t in (a, b))
    pd.testing.assert_frame_equal(a, b, check_exact=True)


# -- the decision -------------------------------------------------------------------------------


def recompute(results, rung, keep, metric, larger, group_by, candidates):
    """The rule from the issue, written independently with pandas: per group, drop diverged,
    sort by the metric (NaN last), ties by run id, keep the first ceil(keep * n)."""
    rows = results.loc[(results["epoch"] == rung) & results["run_id"].isin(candidates)].copy()
    rows["family"] = paper.family_of(rows)
    kept = set()
    for _, group in rows.groupby(group_by):
        n_keep = math.ceil(round(keep * len(group), 9))
        ordered = group.assign(_v=group[metric] if larger else -group[metric])
        ordered = ordered.sort_values(["_v", "run_id"], ascending=[False, True], na_position="last")
        top = ordered.head(n_keep)
        kept |= set(top.loc[~top["diverged"].astype(bool), "run_id"])
    return kept


@pytest.mark.parametrize("keep", [1 / 3, 0.5, 0.34, 1.0])
@pytest.mark.parametrize("seed", [0, 1])
def test_decision_equals_a_pandas_recomputation(keep, seed):
    rng = np.random.default_rng(seed)
    runs = []
    for i in range(40):
        model = ["coordconv_classifier", "deconv_painter"][i % 2]
        split = ["uniform", "quadrant"][i % 3 % 2]
        runs.append({"run_id": f"r{i:02d}", "grid": "g", "task": "classification",
                     "model": model, "split": split, "epochs": 10, "eval_every": 1})  # fmt: skip
    # Values from a small set (ties), some NaN, some diverged.
    values = rng.choice([0.1, 0.2, 0.3, np.nan], size=40)
    diverged = rng.random(40) < 0.15
    results = pd.DataFrame(runs).assign(epoch=3, train_accuracy=values, diverged=diverged)
    rule = Prune(at=(3,), keep=keep)
    rules = {r["run_id"]: rule for r in runs}
    decision = pruning.decide(results, 3, rules, runs, {})
    kept = {r["run_id"] for g in decision["groups"] for r in g["runs"] if r["kept"]}
    ids = [r["run_id"] for r in runs]
    expected = recompute(results, 3, keep, "train_accuracy", True,
                         ["task", "family", "split"], ids)  # fmt: skip
    assert kept == expected
    assert len(decision["groups"]) == 4
    assert not kept & set(results.loc[results["diverged"], "run_id"])


def test_decision_of_the_sweep_equals_the_recomputation_from_its_results(straight):
    root, pruned, _ = straight
    decisions = wd.read_pruning(root / "pruned")
    assert [d["epoch"] for d in decisions] == [1, 2]
    runs = pruned_sweep().expand()
    alive = [r["run_id"] for r in runs]
    table = pd.read_csv(root / "pruned" / "results.csv")
    for decision in decisions:
        kept = {r["run_id"] for g in decision["groups"] for r in g["runs"] if r["kept"]}
        expected = recompute(table, decision["epoch"], 0.5, "train_loss", False,
                             ["task", "family", "split"], alive)  # fmt: skip
        assert kept == expected
        alive = sorted(kept)
    # Status per row: pruned at the rung, finished at the end, running before.
    last = table.sort_values("epoch").groupby("run_id").tail(1).set_index("run_id")
    for run_id, row in last.iterrows():
        if run_id in alive:
            assert row["status"] == "finished" and row["epoch"] == 4
        else:
            assert row["status"] == "pruned" and row["epoch"] == row["pruned_epoch"]


# -- survivors train on unchanged ---------------------------------------------------------------


def test_survivors_equal_the_unpruned_runs_bit_for_bit(straight):
    root, pruned, full = straight
    _same(pruned, full.loc[full.set_index(["run_id", "epoch"]).index.isin(
        pruned.set_index(["run_id", "epoch"]).index)])  # fmt: skip
    finished = pruned.loc[pruned["status"] == "finished", "run_id"]
    assert 0 < len(finished) < len(full["run_id"].unique())
    for run_id in finished:
        a, b = load_run(root / "pruned", run_id), load_run(root / "full", run_id)
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
            np.testing.assert_array_equal(x, y)


def test_a_pruned_run_keeps_its_rows_and_its_last_checkpoint(straight):
    root, pruned, full = straight
    gone = pruned.loc[pruned["status"] == "pruned"].drop_duplicates("run_id")
    assert len(gone)
    for _, row in gone.iterrows():
        state = load_run(root / "pruned", row["run_id"])
        assert int(state["epoch"]) == row["pruned_epoch"]
        with pytest.raises(ValueError, match="was pruned at epoch"):
            load_run(root / "pruned", row["run_id"], epoch=6)
    # The best per family is a run that finished, never one stopped early.
    best = best_per_family(pruned)
    assert set(best["best_run"]) <= set(pruned.loc[pruned["status"] == "finished", "run_id"])


def test_rerun_of_a_finished_pruned_sweep_says_each_bucket_once(pruned_run, tmp_path, caplog):
    """A finished bucket is visited at every stage (each rung, then the end) but said once."""
    import logging

    root, pruned = pruned_run
    shutil.copytree(root / "pruned", tmp_path / "w")
    with caplog.at_level(logging.INFO, logger="coordjax"):
        again = sweep_run(pruned_sweep(), tmp_path / "w")
    said = [r.getMessage() for r in caplog.records if "finished, nothing to do" in r.getMessage()]
    assert sorted(said) == sorted(f"bucket {b}: finished, nothing to do"
                                  for b in pruned["bucket_id"].unique())  # fmt: skip
    pd.testing.assert_frame_equal(again, pruned)


@pytest.mark.slow
def test_sharded_vmapped_survivors_equal_the_unpruned_runs_to_float_noise(tmp_path):
    """One vmapped program per bucket, sharded over the 4 test devices: a narrower stack rounds
    differently (grouped convolutions of another size), so the survivors match the unpruned
    runs to float noise at the first evaluation after the first compaction; later, at lr 5e-2,
    the differences grow (chaotic training), so only that evaluation is compared."""
    options = EngineOptions(progress=False, strategy="vmap")
    pruned = sweep_run(pruned_sweep(), tmp_path / "pruned", options)
    full = sweep_run(union("halving", grids()), tmp_path / "full", options)
    key = ["run_id", "epoch"]
    mine = _rows(pruned.loc[pruned["epoch"] == 2])
    theirs = _rows(full.loc[full.set_index(key).index.isin(mine.set_index(key).index)])
    for column in ("train_loss", "test_loss"):
        np.testing.assert_allclose(mine[column], theirs[column], rtol=1e-4, err_msg=column)
    # Sharded over 4 devices, a stack stays a multiple of 4: these 4-run buckets cannot shrink,
    # so pruning saves nothing here (the unsharded tests above show the saving).
    widths = pruned.groupby("bucket_id")["bucket_model_steps"].max()
    assert (widths == full.groupby("bucket_id")["bucket_model_steps"].max()).all()


def test_model_steps_equal_the_rules_arithmetic(straight):
    root, pruned, full = straight
    pruned_at = wd.pruned_at(root / "pruned")
    spent = unpruned = 0
    for bucket in plan(pruned_sweep().expand()):
        ids = [r["run_id"] for r in bucket.runs]
        expected = 0
        for epoch in range(bucket.static["epochs"]):
            alive = [r for r in ids if pruned_at.get(r, 99) > epoch]
            width = len(alive) if len(alive) == len(ids) else pruning.ladder_size(len(alive))
            expected += width * bucket.steps_per_epoch
        recorded = pruned.loc[pruned["bucket_id"] == bucket.bucket_id, "bucket_model_steps"]
        assert recorded.max() == expected
        spent += expected
        unpruned += (
            math.ceil(len(ids) / jax.device_count()) * jax.device_count() * (bucket.total_steps)
        )
    assert full.groupby("bucket_id")["bucket_model_steps"].max().sum() == unpruned
    assert spent < unpruned


# -- crashes and kills at the rung --------------------------------------------------------------


class Crash(BaseException):
    """A crash that nothing in the engine catches (stands in for a kill in-process)."""


def _crash_at(monkeypatch, point):
    """Makes the sweep crash once at ``point`` of the rung protocol."""
    state = {"done": False}

    def once():
        if not state["done"]:
            state["done"] = True
            raise Crash(point)

    if point == "before the decision":
        decide = pruning.decide
        monkeypatch.setattr(pruning, "decide", lambda *a: (once(), decide(*a))[1])
    elif point == "after the decision is recorded":
        record = wd.record_pruning
        monkeypatch.setattr(wd, "record_pruning", lambda *a: (record(*a), once()))
    elif point == "during compaction":
        gather = trainer._gather
        monkeypatch.setattr(trainer, "_gather", lambda *a: (once(), gather(*a))[1])
    elif point == "after compaction":
        gather, save = trainer._gather, trainer.BucketCheckpoints.save
        compacted = {"yes": False}

        def gathered(*a):
            compacted["yes"] = True
            return gather(*a)

        def saved(self, *a):
            save(self, *a)
            if compacted["yes"]:
                once()

        monkeypatch.setattr(trainer, "_gather", gathered)
        monkeypatch.setattr(trainer.BucketCheckpoints, "save", saved)


@pytest.mark.parametrize(
    "point",
    [
        "after the decision is recorded",
        "after compaction",
        pytest.param("before the decision", marks=pytest.mark.slow),
        pytest.param("during compaction", marks=pytest.mark.slow),
    ],
)
def test_crash_at_a_rung_then_resume_equals_the_uninterrupted_run(tmp_path, pruned_run, point):
    root, pruned = pruned_run
    with pytest.MonkeyPatch.context() as patch:
        _crash_at(patch, point)
        with pytest.raises(Crash):
            sweep_run(pruned_sweep(), tmp_path / "w")
    resumed = sweep_run(pruned_sweep(), tmp_path / "w")
    _same(resumed, pruned)
    pd.testing.assert_frame_equal(
        _rows(pd.read_csv(tmp_path / "w" / "results.csv")).drop(columns="wall_time"),
        _rows(pd.read_csv(root / "pruned" / "results.csv")).drop(columns="wall_time"),
    )
    assert wd.read_pruning(tmp_path / "w") == wd.read_pruning(root / "pruned")


def _sigkill_run(tmp_path: pathlib.Path, point: str) -> subprocess.CompletedProcess:
    """Runs the pruned sweep in a child that SIGKILLs itself at ``point``."""
    script = tmp_path / "victim.py"
    script.write_text(
        textwrap.dedent(f"""
        import os, signal, sys
        sys.path.insert(0, {str(pathlib.Path(__file__).parent)!r})
        import pytest
        import test_pruning as t

        class Die(BaseException):
            def __init__(self, point):
                os.kill(os.getpid(), signal.SIGKILL)

        t.Crash = Die
        with pytest.MonkeyPatch.context() as patch:
            t._crash_at(patch, {point!r})
            t.run_sweep(t.pruned_sweep(), {str(tmp_path / "w")!r}, options=t.MAP)
    """)
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=600, env=env)  # fmt: skip


@pytest.mark.parametrize(
    "point",
    [
        pytest.param("during compaction", marks=pytest.mark.integration),
        pytest.param("before the decision", marks=pytest.mark.slow),
        pytest.param("after the decision is recorded", marks=pytest.mark.slow),
        pytest.param("after compaction", marks=pytest.mark.slow),
    ],
)
def test_sigkill_at_a_rung_then_resume_equals_the_uninterrupted_run(tmp_path, pruned_run, point):
    root, pruned = pruned_run
    victim = _sigkill_run(tmp_path, point)
    assert victim.returncode == -signal.SIGKILL, victim.stderr[-2000:]
    resumed = sweep_run(pruned_sweep(), tmp_path / "w")
    _same(resumed, pruned)
    assert wd.read_pruning(tmp_path / "w") == wd.read_pruning(root / "pruned")


# -- bad rules ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: Prune(at=(2,), keep=0.0), r"prune.keep must be in \(0, 1\]"),
        (lambda: Prune(at=(2,), keep=1.5), r"prune.keep must be in \(0, 1\]"),
        (lambda: Prune(at=(2,), metric="train_speed").check(PAPER), "prune.metric must be one of"),
        (lambda: Prune(at=(2,), group_by=("colour",)).check(PAPER), "prune.group_by may name"),
        (lambda: Prune(at=(4, 2)), "prune.at must be strictly increasing"),
        (lambda: Prune(at=()), "prune.at must be a non-empty list"),
        (lambda: Prune(at=(0,)), "prune.at must hold positive int epochs"),
    ],
)
def test_bad_rules_are_refused_naming_the_key(make, match):
    # The metric and the groups are the experiment's: checked against it when a sweep plans.
    with pytest.raises(ValueError, match=match):
        make()


def test_a_rung_that_is_not_an_evaluation_epoch_is_refused_before_anything_is_written(tmp_path):
    sweep = union("s", [Grid("tiny", base={**BASE, "eval_every": 2, "batch_size": 256},
                             axes={"lr": LRS})], prune=Prune(at=(3,)))  # fmt: skip
    with pytest.raises(ValueError, match="prune.at rung 3 is not an evaluation epoch"):
        run_sweep(sweep, tmp_path / "w", options=MAP)
    past = union("s", [Grid("tiny", base={**BASE, "batch_size": 256}, axes={"lr": LRS})],
                 prune=Prune(at=(4,)))  # fmt: skip
    with pytest.raises(ValueError, match="at or past the last epoch"):
        run_sweep(past, tmp_path / "w", options=MAP)
    assert not (tmp_path / "w").exists()


def test_cli_prune_flags_override_the_rule_and_bad_ones_are_one_line(tmp_path, capsys):
    from coordjax import cli

    sweep_file = tmp_path / "s.py"
    sweep_file.write_text(
        textwrap.dedent("""
        from coordjax.sweep import Grid, Prune, union
        BASE = {"task": "classification", "model": "tiny", "batch_size": 256, "epochs": 6,
                "eval_every": 1}
        PRESETS = {"t": lambda: union("s", [Grid("tiny", base=BASE, axes={"lr": [0.1, 0.01]})],
                                      prune=Prune(at=(2,)))}
    """)
    )
    for flags, match in [
        (["--prune-at", "3,x"], "--prune-at must be"),
        (["--prune-keep", "2"], r"--prune-keep must be in \(0, 1\]"),
        (["--prune-at", "2", "--prune-metric", "speed"], "--prune-metric must be one of"),
        (["--prune-at", "7"], "--prune-at rung 7 is at or past"),
    ]:
        code = cli.main(["sweep", str(sweep_file), "--preset", "t", "--dry-run", *flags])
        err = capsys.readouterr().err
        assert (
            code == 2
            and len(err.strip().splitlines()) == 1
            and match.replace("\\", "") in (err.replace("\\", ""))
        ), err
    assert cli.main(["sweep", str(sweep_file), "--preset", "t", "--dry-run",
                     "--prune-at", "2,4", "--prune-keep", "0.5"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "pruned" in out and "rungs 2, 4" in out


# -- the ladder and sampled search spaces -------------------------------------------------------


def test_ladder_sizes_bound_the_padding_and_respect_devices():
    for n in range(1, 200):
        size = pruning.ladder_size(n)
        assert n <= size and (size - n) / size < 1 / 3 + 1e-9
        assert pruning.ladder_size(n, 4) % 4 == 0 and pruning.ladder_size(n, 4) >= n
    sizes = {pruning.ladder_size(n) for n in range(1, 1000)}
    assert len(sizes) <= 2 * math.log2(1000) + 1


def test_sampled_axes_are_deterministic_stable_and_mix_with_shape_axes():
    def grid(**kw):
        return Grid("s", base={"model": "tiny", "epochs": 2},
                    axes={"lr": LogUniform(1e-4, 1e-1), "l2": Uniform(0.0, 1e-3),
                          "batch_size": Choice([16, 32]), "seed": [0, 1], **kw},
                    samples=6, sample_seed=3)  # fmt: skip

    runs = grid().expand()
    assert len(runs) == len(grid()) == 12
    assert [r["run_id"] for r in runs] == [r["run_id"] for r in grid().expand()]
    lrs = sorted({r["lr"] for r in runs})
    assert len(lrs) == 6 and all(1e-4 <= v < 1e-1 for v in lrs)
    assert {r["batch_size"] for r in runs} <= {16, 32}
    assert len(plan(runs)) == len({r["batch_size"] for r in runs})  # shape axes bucket
    # Adding an axis does not move the other axes' draws.
    more = grid(weight_decay=Uniform(0.0, 1e-4)).expand()
    assert sorted({r["lr"] for r in more}) == lrs
    # Another seed, other draws; the grid's JSON names the distributions.
    other = Grid("s", base={"model": "tiny"}, axes={"lr": LogUniform(1e-4, 1e-1)}, samples=6,
                 sample_seed=4)  # fmt: skip
    assert {r["lr"] for r in other.expand()} != set(lrs)
    assert json.loads(json.dumps(grid().to_json()))["axes"]["lr"] == {"log_uniform": [1e-4, 0.1]}


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: Grid("g", axes={"lr": LogUniform(1e-4, 1e-2)}), "samples must be a positive"),
        (lambda: Grid("g", axes={"lr": [0.1]}, samples=3), "no axis is a distribution"),
        (lambda: LogUniform(0.0, 1.0), "LogUniform.low must be > 0"),
        (lambda: Uniform(1.0, 1.0), "Uniform needs low < high"),
        (lambda: Choice([]), "Choice needs a non-empty list"),
    ],
)
def test_bad_sampled_axes_are_refused(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_report_shows_the_decisions_and_the_saving(straight, tmp_path):
    from coordjax.report import write_report

    root, pruned, _ = straight
    workdir = tmp_path / "w"
    shutil.copytree(root / "pruned", workdir)
    text = write_report(workdir).read_text()
    assert "## Successive halving" in text and "Selected on the test set" not in text
    spent = pruned.groupby("bucket_id")["bucket_model_steps"].max().sum()
    unpruned = sum(b.num_models * b.total_steps for b in plan(pruned_sweep().expand()))
    assert (
        f"| model-steps of the same grid unpruned | {unpruned:,} ({unpruned / spent:.2f}x" in text
    )
    assert "Partial sweep" not in text  # pruned runs are done, not unfinished
    assert (workdir / "report" / "fig_s2_classification.png").is_file()

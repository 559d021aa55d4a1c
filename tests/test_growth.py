"""A sweep that grows (coordjax.sweep.growth, ``--extend``): the runs an edit adds train next to
a workdir's, which stay untouched bit for bit; an edit that changes what recorded runs depend on
is refused in one line; with successive halving the added runs are ranked among themselves."""

import dataclasses
import hashlib
import shutil

import pandas as pd
import pytest
from tiny_sweeps import QUIET, TINY, assert_bitwise_equal, tiny_sweep, tiny_sweep_file

from coordjax import cli
from coordjax.sweep import Grid, Prune, run_sweep, union
from coordjax.sweep import workdir as wd

REWRITTEN = {wd.CONFIG, wd.RESULTS, wd.STRATEGIES, wd.PRUNING, wd.LOCK, wd.RECORDS_LOCK}


def _snapshot(workdir):
    """Every file of the workdir but the records a run rewrites, by content."""
    files = [p for p in sorted(workdir.rglob("*")) if p.is_file() and p.name not in REWRITTEN]
    return {str(p.relative_to(workdir)): hashlib.sha1(p.read_bytes()).hexdigest() for p in files}


@pytest.fixture
def workdir(tiny_workdir, tmp_path):
    shutil.copytree(tiny_workdir[0], tmp_path / "w")
    return tmp_path / "w"


@pytest.mark.parametrize(
    "edit, message",
    [
        ({"lrs": (0.01, 0.05)}, r"2 of its 4 runs \(e.g. tiny-\w+\) are not in the edited sweep"),
        ({"epochs": 3}, r"4 of its 4 runs .* differs in definition.grids\[0\].base.epochs: 2 -> 3"),
        ({"name": "other"}, "sweep 'tiny' -> 'other'"),
        ({"prune": Prune(at=(1,), keep=0.5)}, "the pruning rule of grid 'tiny' changed"),
    ],
)
def test_an_edit_that_changes_recorded_runs_is_refused_and_nothing_written(
    workdir, edit, message
):
    before = {p: p.read_bytes() for p in workdir.rglob("*") if p.is_file()}
    prune = edit.pop("prune", None)
    sweep = tiny_sweep(**{"lrs": (0.01, 0.002, 0.05), **edit})
    if prune is not None:
        sweep = union("tiny", [dataclasses.replace(g, prune=prune) for g in sweep.grids])
    with pytest.raises(wd.WorkdirError, match=f"^--extend only adds runs to workdir .*{message}"):
        run_sweep(sweep, workdir, options=QUIET, extend=True)
    assert {p: p.read_bytes() for p in workdir.rglob("*") if p.is_file()} == before


def test_growth_needs_extend_and_the_cli_says_so_in_one_line(workdir, tmp_path, capsys):
    with pytest.raises(wd.WorkdirError, match="pass --extend to train the runs it adds"):
        run_sweep(tiny_sweep(lrs=(0.01, 0.002, 0.05)), workdir, options=QUIET)
    sweep_file = tiny_sweep_file(tmp_path, '[Grid("tiny", base=BASE, axes={"lr": [0.01]})]')
    code = cli.main(["sweep", str(sweep_file), "--preset", "t", "--workdir", str(workdir),
                     "--extend", "--no-progress"])  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("coordjax: --extend only adds runs")


BASE = {**TINY, "epochs": 2, "split": "uniform"}
RULE = Prune(at=(1,), keep=0.5)


def _halving(lrs):
    return union("grow", [Grid("g", base=BASE, axes={"lr": list(lrs)})], prune=RULE)


@pytest.mark.integration
def test_extend_trains_the_added_runs_as_their_own_group_and_leaves_the_rest_untouched(tmp_path):
    # Buckets of two models each: the three sweeps share their compiled programs.
    first, added = (0.05, 0.01), (0.03, 0.002)
    original = run_sweep(_halving(first), tmp_path / "w", options=QUIET)
    before = _snapshot(tmp_path / "w")
    decisions = wd.read_pruning(tmp_path / "w")
    strategies = wd.read_strategies(tmp_path / "w")
    grown = run_sweep(_halving(first + added), tmp_path / "w", options=QUIET, extend=True)

    # The recorded runs: rows, checkpoints, strategies and their rung decision, bit for bit.
    assert_bitwise_equal(grown.loc[grown["run_id"].isin(original["run_id"])], original)
    assert {k: v for k, v in _snapshot(tmp_path / "w").items() if k in before} == before
    assert strategies.items() <= wd.read_strategies(tmp_path / "w").items()
    recorded = wd.read_pruning(tmp_path / "w")
    assert recorded[0] == decisions[0] and [d.get("extension", 0) for d in recorded] == [0, 1]
    buckets = [b["bucket_id"] for b in wd.read_config(tmp_path / "w")["plan"]]
    assert len(buckets) == 2 and buckets[1] == f"{buckets[0]}-x1"

    # The added runs: trained and pruned as a sweep of only them would be (their own group).
    alone = run_sweep(_halving(added), tmp_path / "alone", options=QUIET)
    mine = grown.loc[~grown["run_id"].isin(original["run_id"])]
    assert_bitwise_equal(mine.drop(columns="bucket_id"), alone.drop(columns="bucket_id"))
    (theirs,) = wd.read_pruning(tmp_path / "alone")
    assert {k: v for k, v in recorded[1].items() if k != "extension"} == theirs
    assert mine.loc[mine["status"] == "pruned", "run_id"].nunique() == 1
    assert original.loc[original["status"] == "pruned", "run_id"].nunique() == 1

    # Rerunning the grown sweep, with or without --extend, trains nothing and changes nothing.
    snapshot = _snapshot(tmp_path / "w")
    again = run_sweep(_halving(first + added), tmp_path / "w", options=QUIET)
    assert_bitwise_equal(again, grown)
    assert _snapshot(tmp_path / "w") == snapshot
    assert_bitwise_equal(pd.read_csv(tmp_path / "w" / wd.RESULTS), grown)


@pytest.mark.integration
def test_a_sweep_file_edited_and_rerun_with_extend_grows_in_child_processes(tmp_path):
    """The user's path: run a sweep file, add a learning rate to it, rerun with ``--extend``;
    each a real ``coordjax sweep`` process."""
    import subprocess
    import sys

    def run(lrs, *flags):
        sweep_file = tiny_sweep_file(tmp_path, f'[Grid("tiny", base=BASE, axes={{"lr": {lrs}}})]')
        command = [sys.executable, "-m", "coordjax.cli", "sweep", str(sweep_file), "--preset",
                   "t", "--workdir", str(tmp_path / "w"), "--no-progress", "--no-report", *flags]
        return subprocess.run(command, capture_output=True, text=True, timeout=600)  # fmt: skip

    assert run([0.05]).returncode == 0
    first = pd.read_csv(tmp_path / "w" / wd.RESULTS)
    before = _snapshot(tmp_path / "w")
    refused = run([0.05, 0.01])
    assert refused.returncode == 2 and "--extend" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    grown = run([0.05, 0.01], "--extend")
    assert grown.returncode == 0, grown.stderr
    results = pd.read_csv(tmp_path / "w" / wd.RESULTS)
    assert_bitwise_equal(results.loc[results["run_id"].isin(first["run_id"])], first)
    assert {k: v for k, v in _snapshot(tmp_path / "w").items() if k in before} == before
    assert results["run_id"].nunique() == 2 and (results["lr"] == 0.01).any()

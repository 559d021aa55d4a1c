"""Optuna's ask/tell in vmapped batches (coordjax.sweep.run_study) on a user's tiny experiment:
an interrupted loop, resumed at every crash point, tells every trial exactly once and ends where
an uninterrupted loop ends; a batch's results equal a plain sweep of its configs."""

import collections
import json
import pathlib
import re
import subprocess
import sys

import optuna
import pandas as pd
import pytest
import user_experiments as ux
from tiny_sweeps import QUIET

from coordjax import sweep as sw
from coordjax.sweep import ask_tell
from coordjax.sweep import workdir as wd
from coordjax.sweep.programs import Programs

EXPERIMENT = ux.experiment("linen")
SPACE = {"lr": sw.LogUniform(1e-3, 1e-1)}
BASE = {"epochs": 2, "eval_every": 2}  # one chunk per batch
BATCHES, BATCH = 2, 4


def tpe(seed):
    # Random for the first batch, TPE from the second on.
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=BATCH)


@pytest.fixture(scope="module")
def programs():
    return Programs()  # every loop here trains batches of 4: one compile for the module


def loop(workdir, programs, batches=BATCHES):
    return sw.run_study(EXPERIMENT, SPACE, workdir, batches=batches, batch_size=BATCH, base=BASE,
                        sampler=tpe, seed=3, options=QUIET, programs=programs)  # fmt: skip


def told(study) -> pd.DataFrame:
    """The completed trials as (batch, lr, value) rows, in the order they were asked."""
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    return pd.DataFrame([{"batch": t.user_attrs["batch"], "run_id": t.user_attrs["run_id"],
                          "lr": t.params["lr"], "value": t.value} for t in complete])  # fmt: skip


class Interrupted(Exception):
    pass


def fail_on_call(monkeypatch, owner, name, n):
    """Makes the ``n``-th call of ``owner.name`` (from now) raise :class:`Interrupted`."""
    original = getattr(owner, name)
    calls = []

    def wrapper(*args, **kwargs):
        calls.append(1)
        if len(calls) == n:
            raise Interrupted(f"{name} #{n}")
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, wrapper)


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory, programs):
    """A loop interrupted at each crash point in turn, then rerun to its end: its workdir, its
    study and how often each trial number was told."""
    tells = collections.Counter()
    tell = optuna.Study.tell

    def counting_tell(self, trial, *args, **kwargs):
        tells[trial] += 1
        return tell(self, trial, *args, **kwargs)

    workdir = tmp_path_factory.mktemp("loop") / "interrupted"
    crashes = [
        (optuna.Study, "ask", 3),  # batch 0: two trials asked, the batch not recorded
        (ask_tell, "run_sweep", 2),  # batch 0 told; batch 1 asked and recorded, not trained
        (optuna.Study, "tell", 2),  # batch 1 trained, one of its trials told
        (None, None, None),  # the rerun that finishes
    ]
    for owner, name, n in crashes:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(optuna.Study, "tell", counting_tell)
            if owner is None:
                study = loop(workdir, programs)
                continue
            fail_on_call(patch, owner, name, n)
            with pytest.raises(Interrupted):
                loop(workdir, programs)
    return workdir, study, tells


def test_an_interrupted_loop_resumes_and_tells_each_trial_once(interrupted, programs, tmp_path):
    workdir, study, tells = interrupted
    states = collections.Counter(t.state.name for t in study.trials)
    assert states == {"COMPLETE": BATCHES * BATCH, "FAIL": 2}  # the two unrecorded asks
    assert sorted(tells) == [t.number for t in study.trials]
    assert set(tells.values()) == {1}  # every trial told, once
    # The batch asked again is the one asked before the interruption (the same seeded sampler).
    failed = [t.params for t in study.trials if t.state.name == "FAIL"]
    assert [t.params for t in study.trials[2:4]] == failed
    assert list(told(study)["batch"]) == [b for b in range(BATCHES) for _ in range(BATCH)]

    # Each told value is its run's score at the end, as the batch's results.csv has it.
    for batch, trials in told(study).groupby("batch"):
        results = wd.read_results(workdir / f"batch-{batch:03d}")
        final = results.loc[results["epoch"] == BASE["epochs"]].set_index("run_id")
        assert list(final.loc[trials["run_id"], "test_pixel_error"]) == list(trials["value"])

    # A rerun of the finished loop trains and tells nothing.
    with pytest.MonkeyPatch.context() as patch:
        fail_on_call(patch, ask_tell, "run_sweep", 1)
        fail_on_call(patch, optuna.Study, "tell", 1)
        assert len(loop(workdir, programs).trials) == BATCHES * BATCH + 2

    # A batch is a plain sweep of its configs: the same runs, bit for bit.
    first = json.loads((workdir / "batch-000.json").read_text())["trials"]
    lrs = [t["params"]["lr"] for t in first]
    plain = sw.union("plain", [sw.Grid("plain", base=BASE, axes={"lr": lrs})],
                     experiment=EXPERIMENT)  # fmt: skip
    expected = sw.run_sweep(plain, tmp_path / "plain", options=QUIET, programs=programs)
    got = wd.read_results(workdir / "batch-000")
    columns = ["run_id", "epoch", "lr", "test_pixel_error", "train_pixel_error", "train_loss"]
    key = ["run_id", "epoch"]
    pd.testing.assert_frame_equal(
        got[columns].sort_values(key).reset_index(drop=True),
        expected[columns].sort_values(key).reset_index(drop=True),
        check_exact=True,
    )


@pytest.mark.slow
def test_an_interrupted_loop_ends_as_an_uninterrupted_one(interrupted, programs, tmp_path):
    # Batch 1 is TPE's (not random start-up): what it asks depends on the told trials alone.
    workdir, study, tells = interrupted
    reference = told(loop(tmp_path / "straight", programs))
    pd.testing.assert_frame_equal(told(study), reference, check_exact=True)


@pytest.mark.parametrize(
    ("space", "base", "error"),
    [
        ({"width_typo": sw.Choice([2, 3])}, {}, "unknown key 'width_typo' in space"),
        ({"lr": sw.Uniform(-1.0, 1.0)}, {}, "lr"),
        ({"lr": sw.LogUniform(1e-3, 1e-1)}, {"lr": 0.01}, "both in space and in base"),
        ({"lr": [0.01, 0.1]}, {}, "space['lr'] must be"),
        ({}, {}, "space must be a non-empty dict"),
        (SPACE, {"batch_size": 500}, "batch_size"),
    ],
)
def test_a_bad_loop_is_refused_before_anything_is_written(tmp_path, space, base, error):
    with pytest.raises(ValueError, match=re.escape(error)):
        sw.run_study(EXPERIMENT, space, tmp_path / "w", batches=1, batch_size=2, base=base)
    assert not (tmp_path / "w").exists()


def test_a_workdir_holding_another_loop_is_refused(tmp_path):
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / ask_tell.IDENTITY).write_text(json.dumps({"batch_size": 8}))
    with pytest.raises(wd.WorkdirError, match="holds another study loop"):
        sw.run_study(EXPERIMENT, SPACE, tmp_path / "w", batches=1, batch_size=2)
    assert sorted(p.name for p in (tmp_path / "w").iterdir()) == [".lock", ask_tell.IDENTITY]


@pytest.mark.slow
def test_the_digits_example_runs_as_written_and_resumes(tmp_path):
    script = pathlib.Path(__file__).parents[1] / "sweeps" / "digits_optuna.py"
    command = [sys.executable, str(script), "--sampler", "tpe", "--workdir", str(tmp_path / "w"),
               "--batches", "2", "--batch-size", "4", "--epochs", "2"]  # fmt: skip
    first = subprocess.run(command, capture_output=True, text=True, check=True)
    assert "tpe: 8 trials told" in first.stdout
    again = subprocess.run(command, capture_output=True, text=True, check=True)
    assert "tpe: 8 trials told" in again.stdout and "to train and tell" not in again.stderr
    assert first.stdout.splitlines()[1] == again.stdout.splitlines()[1]  # best and top-5 mean

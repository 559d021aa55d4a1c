"""Watching and keeping a sweep: host callbacks change nothing that is trained (bit for bit) and
hear every evaluation and rung once, TensorBoard's events equal ``results.csv`` (also across a
resume, and written afterwards from a finished workdir), W&B gets one run per model, and
``coordjax export`` writes a model that reproduces its recorded test metrics.

One pruned sweep of a user's experiment (tests/user_experiments.py: 4 runs, 2 epochs, halved at
epoch 1) is trained twice per module: plainly, and with callbacks through a Ctrl-C and a
resume."""

import json
import re
import shutil
import struct
import sys
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import user_experiments as ux
from tensorboardX.proto import event_pb2, plugin_hparams_pb2
from tiny_sweeps import QUIET, assert_bitwise_equal, interrupted_then_resumed, sweep_of_file

from coordjax import cli
from coordjax import sweep as sw
from coordjax.sweep import trackers
from coordjax.sweep import workdir as wd
from coordjax.sweep.programs import Programs

SWEEP_FILE = """
import user_experiments as ux
from coordjax.sweep import Grid, Prune, union

GRID = Grid("net", base={"epochs": 2}, axes={"lr": [0.01, 0.03], "seed": [0, 1]})
PRESETS = {"t": lambda: union("watch", [GRID], prune=Prune(at=(1,), keep=0.5),
                              experiment=ux.experiment("linen"))}
"""
TAGS = ["train_loss", "train_pixel_error", "test_loss", "test_pixel_error", "epoch_train_loss"]


class Recorder(sw.Callback):
    def __init__(self):
        self.events = []

    def on_start(self, start):
        self.events.append(("start", start))

    def on_evaluation(self, evaluation):
        self.events.append(("evaluation", evaluation))

    def on_rung(self, rung):
        self.events.append(("rung", rung))

    def on_end(self, results):
        self.events.append(("end", results))

    def close(self):
        self.events.append(("close", None))

    def of(self, kind):
        return [e for k, e in self.events if k == kind]


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory):
    """``(sweep file, plain workdir, watched workdir, its TensorBoard dir, the two processes'
    recorders)``."""
    root = tmp_path_factory.mktemp("tracking")
    path = root / "sweep.py"
    path.write_text(SWEEP_FILE)
    sweep, programs = sweep_of_file(path), Programs()
    plain = root / "plain"
    sw.run_sweep(sweep, plain, preset="t", options=QUIET, programs=programs)
    watched, tb = root / "watched", root / "tb"
    first, second = Recorder(), Recorder()
    callbacks = ([first, sw.TensorBoard(tb)], [second, sw.TensorBoard(tb)])
    interrupted_then_resumed(sweep, watched, programs, 2, callbacks, preset="t")
    return path, plain, watched, tb, first, second


def _events(run_dir):
    """Every event of a TensorBoard run directory, file by file in name order (TFRecords: length,
    its CRC, the serialised Event, its CRC)."""
    out = []
    for path in sorted(run_dir.glob("events.out.tfevents.*")):
        data = path.read_bytes()
        at = 0
        while at < len(data):
            (length,) = struct.unpack("<Q", data[at : at + 8])
            out.append(event_pb2.Event.FromString(data[at + 12 : at + 12 + length]))
            at += 12 + length + 4
    return out


def _scalars(run_dir):
    """``[(tag, step, value)]`` of a run directory's scalars, in file order."""
    return [(v.tag, e.step, v.simple_value) for e in _events(run_dir) if e.HasField("summary")
            for v in e.summary.value if v.HasField("simple_value")]  # fmt: skip


def _plugin(run_dir, tag):
    found = [v.metadata.plugin_data.content for e in _events(run_dir) if e.HasField("summary")
             for v in e.summary.value if v.tag == tag]  # fmt: skip
    return [plugin_hparams_pb2.HParamsPluginData.FromString(c) for c in found]


def _assert_events_equal_results(tb, results):
    for run_id, history in results.groupby("run_id"):
        scalars = _scalars(tb / run_id)
        points = [(t, s) for t, s, _ in scalars]
        assert len(points) == len(set(points)), f"{run_id}: a point written twice"
        got = {(t, s): v for t, s, v in scalars}
        for _, row in history.iterrows():
            for tag in TAGS:
                want = np.float32(row[tag])
                assert np.float32(got.pop((tag, int(row["epoch"])))) == want, (run_id, tag)
        final = history.sort_values("epoch").iloc[-1]
        status = final["status"]
        assert got == {("pruned", 1): 1.0 if status == "pruned" else 0.0}, run_id
        (start,) = _plugin(tb / run_id, "_hparams_/session_start_info")
        hparams = start.session_start_info.hparams
        assert hparams["lr"].number_value == pytest.approx(final["lr"])
        assert hparams["width"].number_value == 2 and hparams["grid"].string_value == "net"
        (end,) = _plugin(tb / run_id, "_hparams_/session_end_info")
        assert end.session_end_info.status == 1  # success: finished or pruned, not diverged


def test_callbacks_change_nothing_that_is_trained(sweeps):
    path, plain, watched, *_ = sweeps
    assert_bitwise_equal(wd.read_results(watched), wd.read_results(plain))
    for run_id in wd.read_results(plain)["run_id"].unique():
        a, b = (wd.load_run(w, run_id) for w in (plain, watched))
        jax.tree.map(np.testing.assert_array_equal, a, b)


def test_callbacks_hear_every_evaluation_and_rung_once(sweeps):
    path, plain, watched, tb, first, second = sweeps
    results = wd.read_results(watched)
    heard = {}
    for evaluation in first.of("evaluation") + second.of("evaluation"):
        for i, run_id in enumerate(evaluation.run_ids):
            assert (run_id, evaluation.epoch) not in heard
            heard[run_id, evaluation.epoch] = {k: v[i] for k, v in evaluation.metrics.items()}
    assert sorted(heard) == sorted(zip(results["run_id"], results["epoch"], strict=True))
    for _, row in results.iterrows():
        for tag in [*TAGS, "diverged"]:
            assert heard[row["run_id"], row["epoch"]][tag] == row[tag], tag
    (taken,), (replayed,) = first.of("rung"), second.of("rung")
    assert not taken.replayed and replayed.replayed
    assert taken.run_ids == replayed.run_ids and (taken.kept == replayed.kept).all()
    pruned = set(results.loc[results["status"] == "pruned", "run_id"])
    assert pruned == {r for r, k in zip(taken.run_ids, taken.kept, strict=True) if not k}
    assert len(pruned) == 2
    # The first process stopped (Ctrl-C): closed, no end; the second ended and closed.
    assert [k for k, _ in first.events] == ["start", "evaluation", "rung", "close"]
    assert [k for k, _ in second.events] == ["start", "rung", "evaluation", "end", "close"]
    (start,) = second.of("start")
    assert len(start.results) == 4 and start.sweep == "watch"
    assert start.metrics == {"train_loss": False, "train_pixel_error": False,
                             "test_loss": False, "test_pixel_error": False}  # fmt: skip


def test_tensorboard_events_equal_the_results_across_a_resume(sweeps):
    path, plain, watched, tb, *_ = sweeps
    _assert_events_equal_results(tb, wd.read_results(watched))
    assert len(list(tb.iterdir())) == 4


def test_tensorboard_resume_adds_nothing_and_a_finished_workdir_backfills(sweeps, tmp_path):
    path, plain, watched, tb, *_ = sweeps
    before = {p: p.read_bytes() for p in tb.rglob("events*")}
    sw.run_sweep(sweep_of_file(path), watched, preset="t", options=QUIET,
                 callbacks=[sw.TensorBoard(tb)])
    assert {p: p.read_bytes() for p in tb.rglob("events*")} == before
    # The CLI flag, pointed at a new directory on a finished workdir: the whole history.
    copy, fresh = tmp_path / "w", tmp_path / "tb"
    shutil.copytree(plain, copy)
    argv = ["sweep", str(path), "--preset", "t", "--workdir", str(copy), "--tensorboard",
            str(fresh), "--no-progress", "--no-report"]  # fmt: skip
    assert cli.main(argv) == 0
    _assert_events_equal_results(fresh, wd.read_results(plain))


def test_tensorboard_with_one_open_file_at_a_time(sweeps, tmp_path, monkeypatch):
    """Past its limit of open event files the tracker closes the least recent and later opens a
    new file for that run: the points are the same."""
    path, plain, *_ = sweeps
    monkeypatch.setattr(trackers, "MAX_OPEN_WRITERS", 1)
    copy, fresh = tmp_path / "w", tmp_path / "tb"
    shutil.copytree(plain, copy)
    sw.run_sweep(sweep_of_file(path), copy, preset="t", options=QUIET,
                 callbacks=[sw.TensorBoard(fresh)])  # fmt: skip
    _assert_events_equal_results(fresh, wd.read_results(plain))
    assert max(len(list(d.glob("events*"))) for d in fresh.iterdir()) == 2  # reopened


def test_a_tensorboard_dir_that_is_a_file_is_refused(sweeps, tmp_path, capsys):
    path, *_ = sweeps
    (tmp_path / "f").write_text("")
    argv = ["sweep", str(path), "--preset", "t", "--workdir", str(tmp_path / "w"),
            "--tensorboard", str(tmp_path / "f")]  # fmt: skip
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("coordjax: --tensorboard: logdir ") and "\n" not in err
    assert not (tmp_path / "w").exists()


def test_callbacks_must_be_callbacks(tmp_path):
    with pytest.raises(ValueError, match=r"callbacks must be coordjax.sweep.Callback instances"):
        sw.run_sweep(sw.union("x", [sw.Grid("g")]), tmp_path / "w", callbacks=[print])
    assert not (tmp_path / "w").exists()


# -- W&B ------------------------------------------------------------------------------------------


class FakeRun:
    def __init__(self, log, **init):
        self.init, self.logged, self.summary, self.finished = init, [], {}, False
        log.append(self)

    def log(self, values, step):
        assert not self.finished
        self.logged.append((step, values))

    def finish(self):
        self.finished = True


def test_wandb_gets_one_run_per_model_grouped_by_the_sweep(sweeps, monkeypatch):
    """The events the sweep's two processes heard, replayed into W&B trackers with a stand-in
    wandb module (the real one, offline: ``test_wandb_offline`` under -m slow)."""
    path, plain, watched, tb, first, second = sweeps
    runs = []
    fake = types.SimpleNamespace(init=lambda **kw: FakeRun(runs, **kw))
    monkeypatch.setitem(sys.modules, "wandb", fake)
    for recorder in (first, second):
        tracker = sw.WandB("proj")
        for kind, event in recorder.events:
            if kind == "close":
                tracker.close()
            else:
                getattr(tracker, f"on_{kind}")(event)
    results = wd.read_results(watched)
    logged = {}
    for run in runs:
        assert run.finished and run.init["group"] == "watch" and run.init["project"] == "proj"
        assert run.init["reinit"] == "create_new" and run.init["resume"] == "allow"
        row = results.loc[results["run_id"] == run.init["name"]].iloc[0]
        assert run.init["config"]["lr"] == row["lr"] and run.init["config"]["grid"] == "net"
        for step, values in run.logged:
            assert (run.init["name"], step) not in logged or values == {"pruned": 1.0}
            logged.setdefault((run.init["name"], step), values)
    assert sorted(logged) == sorted(zip(results["run_id"], results["epoch"], strict=True))
    for _, row in results.iterrows():
        assert logged[row["run_id"], row["epoch"]]["test_loss"] == row["test_loss"]
    # One W&B run per model and process that logged it: the resumed ones share their ids.
    assert len({r.init["id"] for r in runs}) == 4 and len(runs) == 6


@pytest.mark.slow
def test_wandb_offline(sweeps, tmp_path, monkeypatch):
    """The real wandb, offline: one run directory per model, holding the group, the metrics and
    the config keys."""
    pytest.importorskip("wandb")
    path, plain, *_ = sweeps
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    copy = tmp_path / "w"
    shutil.copytree(plain, copy)
    shutil.rmtree(copy / wd.CHECKPOINTS)  # retrained from the start: every evaluation logged
    (copy / wd.RESULTS).unlink()
    (copy / wd.PRUNING).unlink()
    tracker = sw.WandB("coordjax-test", dir=str(tmp_path))
    sw.run_sweep(sweep_of_file(path), copy, preset="t", options=QUIET, callbacks=[tracker])
    offline = sorted((tmp_path / "wandb").glob("offline-run-*"))
    run_ids = wd.read_results(copy)["run_id"].unique()
    assert len(offline) == 4 and all(any(r in d.name for d in offline) for r in run_ids)
    for directory in offline:  # wandb's own record format: look for the names in its bytes
        (record,) = directory.glob("*.wandb")
        data = record.read_bytes()
        assert all(name in data for name in (b"watch", b"test_pixel_error", b"width"))


# -- export ---------------------------------------------------------------------------------------


def test_export_reproduces_the_recorded_test_metrics(sweeps, tmp_path, capsys):
    path, plain, *_ = sweeps
    out = tmp_path / "best"
    assert cli.main(["export", str(plain), "--best", "test_pixel_error", "--out", str(out)]) == 0
    results = wd.read_results(plain)
    final = results.sort_values("epoch").groupby("run_id").tail(1)
    finished = final.loc[final["status"] == "finished"]
    best = finished.sort_values("test_pixel_error").iloc[0]  # the experiment's: smaller is better
    assert (finished["test_pixel_error"] > best["test_pixel_error"]).sum() == 1
    config, variables = sw.load_export(out)
    assert config["run_id"] == best["run_id"] and config["epoch"] == 2
    assert config["config"]["lr"] == best["lr"] and set(variables) == {"params"}
    # The experiment's model applied to the test split: the run's recorded numbers.
    x, y = ux.make_data()["all"]["test"]
    outputs = ux.LinenNet(width=config["config"]["width"]).apply(variables, x)
    np.testing.assert_allclose(float(jnp.mean(ux.squared_error(outputs, y))), best["test_loss"],
                               rtol=1e-5)  # fmt: skip
    error = float(jnp.mean(ux.pixel_error(outputs, y)))
    np.testing.assert_allclose(error, best["test_pixel_error"], rtol=1e-5)
    assert config["metrics"]["test_pixel_error"] == best["test_pixel_error"]


@pytest.mark.parametrize("case", ["unknown run", "unknown metric", "unfinished", "existing out",
                                  "both", "not a workdir"])  # fmt: skip
def test_export_refuses_bad_input_in_one_line(sweeps, tmp_path, capsys, case):
    path, plain, *_ = sweeps
    results = wd.read_results(plain)
    finished = results.loc[results["status"] == "finished", "run_id"].iloc[0]
    workdir, out = plain, tmp_path / "out"
    args = [finished]
    if case == "unknown run":
        args, match = ["nope-123"], "run id 'nope-123' is not in workdir"
    elif case == "unknown metric":
        args = ["--best", "test_nope"]
        match = "--best metric 'test_nope' is not one of this workdir's metrics: \\["
    elif case == "unfinished":  # the workdir as it was after the first epoch
        workdir = tmp_path / "w"
        workdir.mkdir()
        shutil.copy(plain / wd.CONFIG, workdir)
        early = results.loc[results["epoch"] == 1].assign(status="running")
        wd.write_results(workdir, early)
        match = f"run '{finished}' has not finished \\(epoch 1 of 2\\)"
    elif case == "existing out":
        out.mkdir()
        match = "out path .* exists"
    elif case == "both":
        args, match = [finished, "--best", "test_loss"], "export takes a RUN_ID or --best"
    else:
        workdir, match = tmp_path, "is not a sweep workdir"
    assert cli.main(["export", str(workdir), *args, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("coordjax: ") and "\n" not in err
    assert re.search(match, err), err
    assert not out.exists() or case == "existing out"
    assert not any(p.name.startswith(".out.") for p in tmp_path.iterdir())


def test_exported_config_is_json_of_the_run(sweeps, tmp_path):
    path, plain, *_ = sweeps
    results = wd.read_results(plain)
    pruned = results.loc[results["status"] == "pruned"].iloc[0]
    out = sw.export_model(plain, pruned["run_id"], tmp_path / "p")
    config = json.loads((out / "config.json").read_text())
    assert config["status"] == "pruned" and config["epoch"] == 1 and config["sweep"] == "watch"
    assert {"lr", "width", "seed", "batch_size", "grid"} <= set(config["config"])
    assert "bucket_id" not in config["config"] and config["param_count"] == pruned["param_count"]

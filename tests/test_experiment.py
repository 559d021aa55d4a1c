"""The experiment seam: a user's own model, data and loss get what the paper gets (buckets by
their static keys, pruning on their score, resume, a report, one run exported), refusals come
before anything is written, and the paper's classifier wrapped as a user experiment computes the
built-in sweep's numbers bit for bit."""

import ast
import importlib
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
import user_experiments as ux
from tiny_sweeps import QUIET, assert_bitwise_equal, interrupted_then_resumed

from coordjax import datasets, models, report, tasks
from coordjax import sweep as sw
from coordjax.paper.run_config import stack_runs
from coordjax.sweep import workdir as wd
from coordjax.sweep.programs import Programs

PUBLIC_MODULES = {"coordjax", "coordjax.sweep", "coordjax.train", "coordjax.linen", "coordjax.nnx"}
# The Linen model covers the engine's path in the default suite; the NNX and pure-pair models
# take the same path through their adapters (tests/test_adapters.py), so their full sweeps run
# with -m slow.
KINDS = ("linen", pytest.param("nnx", marks=pytest.mark.slow),
         pytest.param("pure", marks=pytest.mark.slow))


def test_the_user_module_uses_public_names_only():
    tree = ast.parse(pathlib.Path(ux.__file__).read_text())
    imported = [n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    mine = [n for n in imported if n.module.split(".")[0] == "coordjax"]
    assert mine
    for node in mine:
        assert node.module in PUBLIC_MODULES, node.module
        module = importlib.import_module(node.module)
        for alias in node.names:
            assert not alias.name.startswith("_") and alias.name in dir(module), alias.name


@pytest.fixture(scope="module", params=KINDS)
def trained(request, tmp_path_factory):
    kind = request.param
    experiment = ux.experiment(kind)
    workdir = tmp_path_factory.mktemp(f"user-{kind}") / "w"
    programs = Programs()
    results = sw.run_sweep(ux.sweep(kind, experiment), workdir, options=QUIET, programs=programs)
    return kind, experiment, workdir, results, programs


def test_user_sweep_buckets_by_shape_and_prunes_on_its_score(trained):
    kind, experiment, workdir, results, programs = trained
    plan = wd.read_config(workdir)["plan"]
    assert [len(b["run_ids"]) for b in plan] == [4, 4]  # one bucket per width
    assert {tuple(b["score"]) for b in plan} == {("test_pixel_error", False)}
    final = results.sort_values("epoch").groupby("run_id").tail(1)
    assert sorted(final["status"]) == ["finished"] * 4 + ["pruned"] * 4
    # Each width kept its two best runs by train pixel error at the rung (smaller is better).
    decision = wd.read_pruning(workdir)[0]
    for group in decision["groups"]:
        assert group["metric"] == "train_pixel_error" and not group["larger_is_better"]
        values = [r["value"] for r in group["runs"]]
        assert values == sorted(values) and [r["kept"] for r in group["runs"]] == [1, 1, 0, 0]
    assert np.isfinite(final["test_pixel_error"]).all()


def test_user_sweep_resumed_equals_uninterrupted_bit_for_bit(trained, tmp_path, monkeypatch):
    kind, experiment, workdir, results, programs = trained
    sweep = ux.sweep(kind, experiment)
    resumed = interrupted_then_resumed(sweep, tmp_path / "w", programs)
    assert_bitwise_equal(resumed, results)


def test_user_sweep_report_and_exported_run(trained):
    kind, experiment, workdir, results, programs = trained
    text = report.write_report(workdir).read_text()
    assert "# Sweep report: bright" in text and "## Best run per family" in text
    assert "## Successive halving" in text and "**width**" in text
    final = results.sort_values("epoch").groupby("run_id").tail(1)
    for _, run in final.iterrows():
        variables = sw.export_run(workdir, run["run_id"])
        assert set(variables) == {"params"}
        x, y = ux.make_data()["all"]["test"]
        width = int(run["width"])
        if kind == "pure":
            outputs = ux.pure_pair(width)[1](variables["params"], x)
        elif kind == "nnx":
            outputs = sw_model(ux.BUILDERS["nnx"](width)).apply(variables, x)
        else:
            outputs = ux.LinenNet(width=width).apply(variables, x)
        error = float(jnp.mean(ux.pixel_error(outputs, y)))
        np.testing.assert_allclose(error, run["test_pixel_error"], rtol=1e-5)


def sw_model(adapter):
    """The Linen module an NNX model is trained as (``nnx_model``'s bridge)."""
    return adapter.module


# -- refused before anything is written ----------------------------------------------------------


def _refused(tmp_path, match, **changes):
    arguments = dict(model=ux.BUILDERS["linen"], model_keys={"width": 2}, data=ux.make_data(),
                     loss=ux.squared_error, metrics={"pixel_error": (ux.pixel_error, "min")},
                     score=("test_pixel_error", "min"))  # fmt: skip
    arguments.update(changes)
    with pytest.raises(ValueError, match=match):
        experiment = sw.supervised("bad", **arguments)
        sweep = sw.union("bad", [sw.Grid("g")], experiment=experiment)
        sw.run_sweep(sweep, tmp_path / "w", options=QUIET)
    assert not (tmp_path / "w").exists()


def test_arrays_of_different_lengths_are_refused(tmp_path):
    x, y = ux.make_data()["all"]["train"]
    data = {"all": {"train": (x, y[:-1]), "test": (x, y)}}
    _refused(tmp_path, r"x and y must have the same leading \(example\) length", data=data)


def test_a_loss_that_is_not_per_example_is_refused(tmp_path):
    _refused(tmp_path, r"loss must be per example, shape \(B,\)",
             loss=lambda o, t: jnp.mean(jnp.square(o - t)))  # fmt: skip


def test_a_metric_that_is_not_per_example_is_refused(tmp_path):
    metrics = {"pixel_error": (lambda o, t: ux.pixel_error(o, t)[:, None], "min")}
    _refused(tmp_path, r"pixel_error must be per example", metrics=metrics)


def test_a_score_not_among_the_metrics_is_refused(tmp_path):
    _refused(tmp_path, r"score column must be one of", score=("test_accuracy", "max"))


def test_outputs_that_do_not_fit_the_targets_are_refused(tmp_path):
    class ThreeOutputs(ux.LinenNet):
        @ux.nn.compact
        def __call__(self, x):
            return ux.nn.Dense(3)(x.reshape(x.shape[0], -1))

    _refused(tmp_path, r"failed on a batch of 2 examples", model=lambda width: ThreeOutputs(width))


def test_an_unknown_key_is_refused(tmp_path):
    experiment = ux.experiment("linen")
    with pytest.raises(ValueError, match=r"unknown config key 'depth' .* allowed: \["):
        sw.union("bad", [sw.Grid("g", axes={"depth": [1, 2]})], experiment=experiment)


# -- the paper is one instance -------------------------------------------------------------------


def _paper_as_user_experiment(name: str, lowering: str, **defaults):
    """Not-so-Clevr and a paper model, wrapped through the public seam alone."""
    examples = datasets.all_examples()
    splits = {s: datasets.split_indices(s) for s in ("uniform", "quadrant")}
    data = sw.ArrayData(np.asarray(examples.centers, np.float32),
                        np.asarray(examples.onehots, np.float32), splits)  # fmt: skip
    task = tasks.get("classification")

    def metric(m):
        return lambda outputs, targets: task.metrics(outputs, targets)[m]

    return sw.supervised(
        "wrapped",
        model=lambda channel_mult: models.build(name, lowering=lowering, channel_mult=channel_mult),
        model_keys={"channel_mult": 1},
        data=data,
        loss=task.loss,
        metrics={m: (metric(m), "max" if m == "accuracy" else "min")
                 for m in ("accuracy", "eucl_dist", "manh_dist")},
        score=("test_accuracy", "max"),
        defaults=defaults,
        data_key="split",
    )  # fmt: skip


COMPARED = ["lr", "split", "epoch", "step", "param_count", "epoch_train_loss", "train_loss",
            "test_loss", "train_accuracy", "test_accuracy", "train_eucl_dist",
            "test_manh_dist"]  # fmt: skip


def _same_numbers(builtin: pd.DataFrame, builtin_dir, wrapped: pd.DataFrame, wrapped_dir):
    def table(results):
        return results[COMPARED].sort_values(["lr", "split", "epoch"]).reset_index(drop=True)

    pd.testing.assert_frame_equal(table(builtin), table(wrapped), check_exact=True)
    ids = {(r.lr, r.split): r.run_id for r in wrapped.itertuples()}
    for run in builtin.drop_duplicates("run_id").itertuples():
        ours = sw.load_run(builtin_dir, run.run_id)["params"]
        theirs = sw.load_run(wrapped_dir, ids[(run.lr, run.split)])["params"]
        for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(theirs), strict=True):
            np.testing.assert_array_equal(a, b)


def test_a_paper_model_as_a_user_experiment_equals_the_builtin_sweep(tmp_path, tiny_workdir):
    """The session's tiny sweep (the paper's ``tiny`` model on both splits, 2 lrs) trained
    again as a user experiment: the same numbers and parameters, bit for bit."""
    workdir, builtin = tiny_workdir
    lowering = wd.read_config(workdir)["lowering"]
    experiment = _paper_as_user_experiment("tiny", lowering, batch_size=256, epochs=2)
    grid = sw.Grid("tiny", axes={"lr": [0.01, 0.002], "split": ["uniform", "quadrant"]})
    sweep = sw.union("wrapped", [grid], experiment=experiment)
    wrapped = sw.run_sweep(sweep, tmp_path / "w", options=QUIET)
    _same_numbers(builtin, workdir, wrapped, tmp_path / "w")


def test_a_user_experiment_resolves_the_order_seed_as_the_paper_does():
    experiment = _paper_as_user_experiment("tiny", "auto", batch_size=256, epochs=2)
    configs = [{**experiment.defaults(), "seed": 3},
               {**experiment.defaults(), "seed": 3, "order_seed": 8}]  # fmt: skip
    for config in configs:
        experiment.validate(config)
    with pytest.raises(ValueError, match=r"^order_seed must be -1 \(the run's seed\)"):
        experiment.validate({**configs[0], "order_seed": -2})
    paper = {"task": "classification", "model": "tiny", "split": "uniform"}
    builtin = stack_runs([{**paper, "seed": c["seed"], "order_seed": c["order_seed"]}
                          for c in configs])  # fmt: skip
    for stacked in (experiment.stack(configs), builtin):
        np.testing.assert_array_equal(stacked.seed, [3, 3])
        np.testing.assert_array_equal(stacked.order_seed, [3, 8])


@pytest.mark.slow
def test_the_coordconv_classifier_as_a_user_experiment_equals_the_builtin_sweep(tmp_path):
    base = {"task": "classification", "model": "coordconv_classifier", "batch_size": 256,
            "epochs": 1, "eval_every": 1, "lr": 0.005}  # fmt: skip
    grid = sw.Grid("c", base=base, axes={"split": ["uniform", "quadrant"]})
    builtin = sw.run_sweep(sw.union("builtin", [grid]), tmp_path / "builtin", options=QUIET)
    lowering = wd.read_config(tmp_path / "builtin")["lowering"]
    experiment = _paper_as_user_experiment("coordconv_classifier", lowering, batch_size=256,
                                           epochs=1, lr=0.005)  # fmt: skip
    sweep = sw.union("wrapped", [sw.Grid("c", axes={"split": ["uniform", "quadrant"]})],
                     experiment=experiment)  # fmt: skip
    wrapped = sw.run_sweep(sweep, tmp_path / "wrapped", options=QUIET)
    _same_numbers(builtin, tmp_path / "builtin", wrapped, tmp_path / "wrapped")


# -- a user's sweep file at the command line, fanned out ------------------------------------------


@pytest.mark.integration
def test_a_user_sweep_file_fanned_out_over_two_processes_equals_one(tmp_path):
    import subprocess
    import sys

    sweep_file = tmp_path / "mine.py"
    sweep_file.write_text(
        f"import sys\nsys.path.insert(0, {str(pathlib.Path(ux.__file__).parent)!r})\n"
        "import user_experiments as ux\nPRESETS = {'t': lambda: ux.sweep('linen')}\n"
    )
    command = [sys.executable, "-m", "coordjax.cli", "sweep", str(sweep_file), "--preset", "t",
               "--workdir", str(tmp_path / "w"), "--no-progress", "--task-count", "2"]  # fmt: skip
    workers = [
        subprocess.Popen([*command, "--task-index", str(i)], stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True)
        for i in range(2)
    ]  # fmt: skip
    for worker in workers:
        output = worker.communicate(timeout=600)[0]
        assert worker.returncode == 0, output
    straight = sw.run_sweep(ux.sweep("linen"), tmp_path / "straight", preset="t",
                            options=sw.EngineOptions(progress=False))  # fmt: skip
    assert_bitwise_equal(pd.read_csv(tmp_path / "w" / "results.csv"), straight)
    assert (tmp_path / "w" / "report" / "report.md").is_file()


@pytest.mark.integration
def test_the_digits_example_runs_from_the_command_line_and_writes_its_report(tmp_path):
    import subprocess
    import sys

    command = [sys.executable, "-m", "coordjax.cli", "sweep", "digits", "--preset", "smoke",
               "--workdir", str(tmp_path / "w"), "--no-progress"]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    for family in ("conv", "coordconv"):
        for variant in ("uniform", "quadrant"):
            assert f"{family} {variant}: test_pixel_error" in done.stdout
    report = (tmp_path / "w" / "report" / "report.md").read_text()
    assert "## Best run per family and data" in report and "curves.png" in report

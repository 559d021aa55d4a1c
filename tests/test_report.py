"""Reports: golden values on a synthetic workdir, figures drawn, partial / empty / foreign
workdirs, and a real sweep written on 4 devices reported on 1 without the training code."""

import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import textwrap

import matplotlib.image
import numpy as np
import pandas as pd
import pytest
from tiny_sweeps import tiny_sweep_file

from coordjax import paper, report
from coordjax.paper.summary import summary_text

# (task, model, family metric values at the last evaluation per split)
EVALS = 3  # evaluations per run, at epochs EVERY, 2*EVERY, 3*EVERY
EVERY = {"classification": 10, "rendering": 10, "regression": 10}


def synthetic_results() -> pd.DataFrame:
    """A small sweep's table with known values: 2 lrs x 2 l2s x 2 splits per model family."""
    rng = np.random.default_rng(0)
    models = [
        ("classification", "deconv_painter", "test_accuracy", 46465, (0.3, 0.8)),
        ("classification", "coordconv_classifier", "test_accuracy", 7553, (0.9, 1.0)),
        ("rendering", "deconv_painter", "test_iou", 183041, (0.2, 0.6)),
        ("rendering", "coordconv_renderer", "test_iou", 9490, (0.95, 1.0)),
        ("regression", "conv_regressor_uniform", "test_pixel_error", 72850, (0.3, 3.0)),
        ("regression", "coordconv_regressor", "test_pixel_error", 906, (0.0, 0.4)),
    ]
    rows = []
    for task, model, metric, params, (lo, hi) in models:
        for split in ("uniform", "quadrant"):
            for lr in (0.001, 0.01):
                for l2 in (0.0, 0.001):
                    run_id = f"{model}-{split}-{lr:g}-{l2:g}"
                    if task == "rendering" and model == "deconv_painter":
                        run_id = f"renderer-{run_id}"
                    finals = rng.uniform(lo, hi, EVALS)
                    if metric == "test_accuracy":
                        finals = np.round(finals * 768) / 768  # k / n, like a real split
                    for i, value in enumerate(finals):
                        train = min(value + 0.05, 1.0) if "pixel" not in metric else value * 0.5
                        rows.append({
                            "grid": "deconv" if "deconv" in model else "other", "run_id": run_id,
                            "task": task, "model": model, "filter_size": 2, "channel_mult": 1,
                            "batch_size": 16, "epochs": EVALS * EVERY[task], "split": split,
                            "lr": lr, "l2": l2, "schedule": "constant", "seed": 0,
                            "bucket_id": f"{task}-{model}", "param_count": params,
                            "strategy": "vmap", "epoch": (i + 1) * EVERY[task],
                            "step": (i + 1) * 100, "wall_time": 5.0 * (i + 1),
                            "diverged": False, "diverged_step": -1,
                            metric: value, metric.replace("test_", "train_"): train,
                        })  # fmt: skip
    results = pd.DataFrame(rows)
    # One coordconv classifier reaches 100 % only at its middle evaluation; one deconv diverges.
    swing = results["run_id"] == "coordconv_classifier-quadrant-0.01-0.001"
    results.loc[swing, "test_accuracy"] = [0.9, 1.0, 0.99]
    perfect = results["run_id"] == "coordconv_classifier-uniform-0.001-0"
    results.loc[perfect & (results["epoch"] == 30), "test_accuracy"] = 1.0
    boom = results["run_id"] == "deconv_painter-uniform-0.01-0.001"
    results.loc[boom & (results["epoch"] == 30), ["diverged", "test_accuracy"]] = [True, np.nan]
    results.loc[boom, "diverged_step"] = np.where(results.loc[boom, "epoch"] == 30, 250, -1)
    return results


def write_workdir(path: pathlib.Path, results: pd.DataFrame, planned_extra: int = 0) -> None:
    path.mkdir(parents=True, exist_ok=True)
    plan = [
        {"bucket_id": bucket, "static": {"model": group["model"].iloc[0]},
         "num_models": group["run_id"].nunique(), "run_ids": list(group["run_id"].unique())}
        for bucket, group in results.groupby("bucket_id", sort=False)
    ]  # fmt: skip
    if planned_extra:
        plan[0]["run_ids"] += [f"not-started-{i}" for i in range(planned_extra)]
    config = {
        "identity": {"sweep": "synthetic", "preset": "golden", "definition": {}},
        "engine": {"strategy": "vmap"},
        "versions": {"jax": "0"},
        "devices": ["cpu:0"],
        "device_kind": "cpu",
        "plan": plan,
    }
    (path / "config.json").write_text(json.dumps(config))
    results.to_csv(path / "results.csv", index=False)


@pytest.fixture(scope="module")
def golden(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("golden")
    results = synthetic_results()
    write_workdir(workdir, results)
    return workdir, results, report.write_report(workdir)


def _table(text: str, heading: str) -> pd.DataFrame:
    """The first Markdown table after ``heading``, as strings."""
    lines = text.split(heading, 1)[1].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split(" | ")])
    return pd.DataFrame(rows[2:], columns=rows[0])


def test_paper_vs_ours_table_holds_the_verdicts(golden):
    workdir, results, path = golden
    text = path.read_text()
    table = _table(text, "## Paper vs ours").set_index("claim")
    final = results.loc[results["epoch"] == 30]
    expected = paper.verdicts(results).set_index("key")
    assert len(table) == len(paper.CLAIMS)  # every claim concerns this sweep
    coordconv = table.loc["classification: coordconv, uniform: test accuracy (%)"]
    best = final.loc[final["run_id"].str.startswith("coordconv_classifier-uniform")]
    assert coordconv["ours"] == paper.format_metric("test_accuracy", best["test_accuracy"].max())
    assert coordconv["verdict"] == "**reproduced**"
    swing = table.loc["classification: coordconv, quadrant: test accuracy (%)"]
    assert swing["verdict"] == f"**{expected.loc['classification/coordconv/quadrant', 'verdict']}**"
    deconv = table.loc["classification: deconv, uniform: test accuracy (%)"]
    ok = final.loc[final["run_id"].str.startswith("deconv_painter-uniform") & ~final["diverged"]]
    assert deconv["ours"] == paper.format_metric("test_accuracy", ok["test_accuracy"].max())
    assert deconv["runs (seeds)"] == "4 (1)" and deconv["epochs"] == "30"
    assert table.loc["rendering: coordconv: parameters", "ours"] == "9,490"
    assert table.loc["rendering: coordconv: parameters", "verdict"] == "**reproduced**"
    errors = final.loc[final["run_id"].str.startswith("conv_regressor_uniform-uniform")]
    assert table.loc["regression: conv, uniform: test error (px)", "ours"] == (
        f"{errors['test_pixel_error'].min():.2f} px"
    )
    assert paper.TRAIN_ACCURACY_NOTE in text


def test_best_models_and_sensitivity_tables(golden):
    workdir, results, path = golden
    text = path.read_text()
    best = _table(text, "## Best model per family and split")
    final = results.loc[results["epoch"] == 30]
    row = best.loc[(best["task"] == "rendering") & (best["family"] == "deconv")
                   & (best["split"] == "quadrant")].iloc[0]  # fmt: skip
    mine = final.loc[final["run_id"].str.startswith("renderer-deconv_painter-quadrant")]
    winner = mine.loc[mine["test_iou"].idxmax()]
    assert row["run"] == f"`{winner['run_id']}`"
    assert row["lr"] == f"{winner['lr']:g}" and row["l2"] == f"{winner['l2']:g}"
    assert row["test"] == f"{winner['test_iou']:.3f}" and row["params"] == "183,041"

    heading = "**learning rate x L2: regression, coordconv, uniform: test error (px)**"
    sens = _table(text, heading).set_index("")
    mine = final.loc[final["run_id"].str.startswith("coordconv_regressor-uniform")]
    for _, run in mine.iterrows():
        cell = sens.loc[f"lr {run['lr']:g}", f"l2 {run['l2']:g}"]
        assert cell == f"{run['test_pixel_error']:.2f} px"  # one run per cell: itself

    bar = _table(text, "## Reaching the paper's bar").set_index(["task", "family", "split"])
    swing = bar.loc[("classification", "coordconv", "quadrant")]
    stats = paper.bar_statistics(results)
    mine = stats.loc[(stats["task"] == "classification") & (stats["family"] == "coordconv")
                     & (stats["split"] == "quadrant")]  # fmt: skip
    assert swing["at the bar at any evaluation"] == str(int(mine["ever_at_bar"].sum()))
    assert swing["at the bar at the end"] == str(int(mine["at_bar_end"].sum()))
    assert int(mine["ever_at_bar"].sum()) > int(mine["at_bar_end"].sum())  # the swing shows

    diverged = _table(text, "## Diverged models")
    assert list(diverged["run_id"]) == ["deconv_painter-uniform-0.01-0.001"]
    assert list(diverged["diverged_step"]) == ["250"]
    cost = _table(text, "## Cost").set_index("")
    assert cost.loc["models (finished / planned)", "value"] == "48 / 48"
    assert "Partial sweep" not in text


def test_figures_are_drawn_and_not_blank(golden):
    workdir, _, path = golden
    text = path.read_text()
    drawn = sorted(p.name for p in path.parent.glob("*.png"))
    assert drawn == sorted([
        "bar_reached.png", "fig_4.png", "fig_6.png", "fig_s2_classification.png",
        "fig_s2_rendering.png", "training_curves.png",
    ])  # fmt: skip
    for name in drawn:
        assert f"]({name})" in text
        image = matplotlib.image.imread(path.parent / name)
        assert image.shape[0] > 200 and image.shape[1] > 300
        assert image[..., :3].std() > 0.05, name  # not blank
    # Without checkpoints the figures needing model outputs say why they are missing.
    assert "Fig 5: summed predictions, quadrant split\n\nNot drawn" in text


def test_a_rerun_keeps_the_hand_written_reading(golden, tmp_path, monkeypatch):
    """report/reading.md is included after the header of every (re)written report and never
    written (figures left out here: they do not touch it)."""
    from coordjax.report import build

    workdir, _, first = golden
    assert "reading.md" not in first.read_text()
    shutil.copytree(workdir, tmp_path / "w")  # with the report written once
    reading = "## Reading\n\nThe deconv models *memorise*; see [Fig 4](fig_4.png).\n"
    (tmp_path / "w" / "report" / "reading.md").write_text(reading)
    monkeypatch.setattr(build, "_figure_sections", lambda record, out: [])
    for _ in range(2):
        text = report.write_report(tmp_path / "w").read_text()
        assert (tmp_path / "w" / "report" / "reading.md").read_text() == reading
        header, rest = text.split("## Reading", 1)
        assert header.startswith("# Reproduction report") and "## Paper vs ours" not in header
        assert rest.startswith("\n\nThe deconv models *memorise*") and "## Paper vs ours" in rest


def test_a_rerun_replaces_its_own_figures_only(golden, tmp_path, monkeypatch):
    """A rewrite removes the earlier report's figures it no longer draws, and keeps every other
    file of the folder: a figure of one's own, and a report figure the reading links to."""
    from coordjax.report import build

    workdir, _, _ = golden
    shutil.copytree(workdir, tmp_path / "w")  # with the report written once
    out = tmp_path / "w" / "report"
    assert {"fig_4.png", "fig_6.png"} <= {p.name for p in out.glob("*.png")}
    (out / "mine.png").write_bytes(b"a figure of one's own")
    (out / "reading.md").write_text("## Reading\n\n![a](mine.png) and [Fig 4](fig_4.png).\n")
    monkeypatch.setattr(build, "_figure_sections", lambda record, out: [])  # draws none
    report.write_report(tmp_path / "w")
    assert sorted(p.name for p in out.glob("*.png")) == ["fig_4.png", "mine.png"]
    assert (out / "mine.png").read_bytes() == b"a figure of one's own"


def test_the_time_axis_is_seconds_per_model(golden):
    """Fig 4 / 6 draw each run's share of its bucket's seconds, by model-steps (or by runs in a
    table without them), and say so."""
    from coordjax.report.figures import model_seconds

    rows = pd.DataFrame({
        "bucket_id": ["a", "a", "a", "b"], "run_id": ["x", "y", "x", "z"],
        "wall_time": [10.0, 10.0, 30.0, 8.0], "step": [100, 100, 300, 50],
        "bucket_model_steps": [200, 200, 500, 0],
    })  # fmt: skip
    # x and y share 10 s at 100 steps each; then y is pruned: x has 300 of 500 model-steps.
    np.testing.assert_allclose(model_seconds(rows), [5.0, 5.0, 18.0, 8.0])
    np.testing.assert_allclose(
        model_seconds(rows.drop(columns="bucket_model_steps")), [5.0, 5.0, 15.0, 8.0]
    )
    text = golden[2].read_text()
    assert text.count("the time axis is training seconds per model") == 2  # Fig 4 and Fig 6


def test_partial_sweep_says_so(tmp_path):
    results = synthetic_results()
    cut = (results["run_id"] == "coordconv_classifier-uniform-0.01-0") & (results["epoch"] == 30)
    write_workdir(tmp_path, results.loc[~cut], planned_extra=2)
    text = report.write_report(tmp_path).read_text()
    assert "**Partial sweep.** 3 of 50 runs have not finished (2 not started)" in text
    assert "48 evaluated" in text


def test_summary_matches_the_report_and_fits_100_columns(golden):
    _, results, _ = golden
    text = summary_text(results, wall_seconds=1.0, report="r/report.md")
    assert max(map(len, text.splitlines())) <= 100
    assert text.splitlines()[-1] == "report: r/report.md"
    verdicts = paper.verdicts(results).set_index("key")
    line = next(
        line for line in text.splitlines()
        if line.startswith("coordconv") and "quadrant" in line and "%" in line
    )  # fmt: skip
    assert line.endswith(verdicts.loc["classification/coordconv/quadrant", "verdict"])


@pytest.mark.parametrize(
    "setup, message",
    [
        (lambda d: None, "is not a sweep workdir (it has no config.json)"),
        (lambda d: (d / "config.json").write_text('{"a": 1}'), "is not a coordjax sweep config"),
        (lambda d: (d / "config.json").write_text("{oops"), "is not readable JSON"),
        (lambda d: write_workdir(d, synthetic_results().iloc[:0]), "is empty"),
        (lambda d: write_workdir(d, synthetic_results().drop(columns="epoch")), "['epoch']"),
    ],
)
def test_empty_and_foreign_workdirs_are_refused(tmp_path, setup, message):
    setup(tmp_path)
    with pytest.raises(report.ReportError, match=re.escape(message)):
        report.write_report(tmp_path)
    assert not (tmp_path / "report").exists()


def test_cli_refuses_in_one_line_with_exit_2(tmp_path):
    for target in (tmp_path, tmp_path / "missing"):
        out = subprocess.run([sys.executable, "-m", "coordjax.cli", "report", str(target)],
                             capture_output=True, text=True)  # fmt: skip
        assert out.returncode == 2
        assert out.stderr.startswith("coordjax: ") and out.stderr.count("\n") == 1
        assert "Traceback" not in out.stderr


def test_importing_the_report_imports_no_jax():
    code = (
        "import sys, coordjax.report, coordjax.paper.summary; "
        "print(sorted(m for m in ('jax', 'flax', 'orbax', 'coordjax.models', 'coordjax.train', "
        "'coordjax.sweep.engine') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# -- a real sweep ---------------------------------------------------------------------------------

REAL = textwrap.dedent(
    """
    import json, os, sys
    os.environ["JAX_PLATFORMS"] = "cpu"
    os.environ["JAX_NUM_CPU_DEVICES"] = "1"
    import warnings
    warnings.simplefilter("error")
    from coordjax import report
    from coordjax.report import predictions
    import numpy as np, pandas as pd
    workdir = sys.argv[1]
    path = report.write_report(workdir)
    # The report's own forward pass agrees with the engine's evaluation of the same parameters.
    results = pd.read_csv(os.path.join(workdir, "results.csv"))
    last = results.loc[results.groupby("run_id")["epoch"].idxmax()]
    accuracy = {}
    for _, run in last.iterrows():
        out = predictions.run_outputs(__import__("pathlib").Path(workdir), run)
        hits = out.test.reshape(len(out.test), -1).argmax(1) == (
            out.split.test.onehots.reshape(len(out.test), -1).argmax(1))
        accuracy[run["run_id"]] = [float(hits.mean()), float(run["test_accuracy"])]
    # The models read the recipe's L2 mask (coordjax.train.penalty); the package loads its names
    # lazily, so the step and the engine stay out.
    loaded = [m for m in ("coordjax.sweep.engine", "coordjax.train.step", "coordjax.train.single")
              if m in sys.modules]
    print(json.dumps({"path": str(path), "accuracy": accuracy, "loaded": loaded}))
    """
)


@pytest.mark.integration
def test_a_real_sweep_written_on_4_devices_reports_on_1(tmp_path):
    grids = (
        '[Grid("tiny", base=BASE, axes={"lr": [0.05, 0.002], "split": ["uniform", "quadrant"]})]'
    )
    sweep_file = tiny_sweep_file(tmp_path, grids)
    workdir = tmp_path / "work"
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "JAX_NUM_CPU_DEVICES": "4"}
    command = [sys.executable, "-m", "coordjax.cli", "sweep", str(sweep_file), "--preset", "t",
               "--workdir", str(workdir), "--strategy", "vmap", "--no-progress"]  # fmt: skip
    sweep = subprocess.run(command, capture_output=True, text=True, env=env)
    assert sweep.returncode == 0, sweep.stderr[-3000:]
    # The sweep wrote its report at its end and its summary points to it.
    assert f"report: {workdir / 'report' / 'report.md'}" in sweep.stdout
    assert "best run per family and split" in sweep.stdout
    paths = ("report: ", "results: ")  # never cut: they are there to be copied
    assert max(len(t) for t in sweep.stdout.splitlines() if not t.startswith(paths)) <= 100
    assert len(json.loads((workdir / "config.json").read_text())["devices"]) == 4

    env = {k: v for k, v in os.environ.items() if k != "JAX_NUM_CPU_DEVICES"}
    out = subprocess.run([sys.executable, "-c", REAL, str(workdir)], capture_output=True,
                         text=True, env=env)  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["loaded"] == []  # neither the engine nor the training step
    for ours, engine in got["accuracy"].values():
        assert abs(ours - engine) <= 2 / 729  # argmax near-ties may flip on a different device
    text = pathlib.Path(got["path"]).read_text()
    assert "fig_5.png" in text and (workdir / "report" / "fig_5.png").stat().st_size > 5000


def test_report_knows_each_models_shape_arguments():
    from coordjax import models
    from coordjax.report import tables

    assert tables.SHAPE_ARGS == {name: spec.shape_args for name, spec in models.MODELS.items()}

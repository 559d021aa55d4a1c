"""Assembles ``WORKDIR/report/report.md`` and its figures from a sweep's workdir."""

from __future__ import annotations

import logging
import pathlib
import re

import numpy as np
import pandas as pd

from coordjax import paper
from coordjax.datasets.not_so_clevr import CANVAS_SIZE
from coordjax.paper import summary
from coordjax.report import figures, generic, predictions, tables
from coordjax.report.source import ReportError, SweepRecord, read
from coordjax.sweep.workdir import CHECKPOINTS

logger = logging.getLogger("coordjax.report")

REPORT_DIR = "report"
REPORT_FILE = "report.md"
READING_FILE = "reading.md"
"""Hand-written Markdown in the report folder (e.g. a ``## Reading`` section): the report
includes it after its header and never writes it."""
RENDER_SAMPLES = 3
TIME_AXIS = (
    "the time axis is training seconds per model: each run's share of its bucket's training "
    "and evaluation seconds (the models of a bucket train together; the share is by "
    "model-steps), not the paper's one model alone. A sweep run with its progress bar (the "
    "CLI's default) compiles before it times; without it, a bucket's first evaluation includes "
    "its compile."
)

CAPTIONS = {
    "fig_s2": (
        "**Paper (Fig S2)**: model size vs test accuracy, uniform and quadrant splits. Deconv "
        "models of many sizes (50k-1.6M parameters) reach 80 % or a little higher, never 100 %, "
        "on the uniform split; on the quadrant split none generalises; the 7,553-parameter "
        "CoordConv model is perfect on both."
    ),
    "fig_s2_rendering": (
        "**Paper (§S1, 'similar, not shown')**: the same plot for rendering: deconv models of "
        "183k-1.6M parameters struggle; the 9,490-parameter CoordConv model reaches test IoU 1."
    ),
    "fig_4": (
        "**Paper (Fig 4)**: left, final test vs train accuracy of all models: on uniform, "
        "convolution never reaches perfect test accuracy though the largest models memorise the "
        "train set; on quadrant it barely generalises; CoordConv is perfect on both. Right, test "
        "accuracy vs training time of the best uniform models (final test >= 0.8): deconv never "
        "above ~86 % and over an hour to converge; CoordConv perfect in seconds."
    ),
    "fig_6": (
        "**Paper (Fig 6)**: left, test vs train IoU of all rendering models, both splits; right, "
        "test IoU vs training time of the best uniform models (final IoU >= 0.8): deconv never "
        "above ~0.83 and over two hours to converge, CoordConv about a minute."
    ),
    "fig_5": (
        "**Paper (Fig 5, left)**: predicted probabilities summed over the train set and over the "
        "test set, quadrant split, each normalised to the full black-to-white range, next to the "
        "ground truth. The conv model covers the train set (99.6 % train accuracy, by "
        "memorisation) but puts nearly all test probability on two pixels; CoordConv is 100 % on "
        "both."
    ),
    "fig_6_samples": (
        "**Paper (Fig S4, S5)**: test samples of the best deconv and CoordConv renderers: deconv "
        "outputs are roughly right on uniform and fail mostly on quadrant; CoordConv outputs are "
        "precisely correct on both."
    ),
    "regression": (
        "**Paper (Fig 5, right; §4.1)**: predicted vs true centres on the quadrant split: the conv "
        "model memorises poorly and fails to generalise; CoordConv fits train and test perfectly. "
        "§4.1: conv < 0.5 px on uniform, ~5 px on quadrant (a 12k-parameter net); CoordConv "
        "(~900 parameters) generalises on both. Each segment joins a true centre to its "
        "prediction."
    ),
    "curves": (
        "Test metric vs epoch of the best run (by its last evaluation) of each family and split; "
        "the dotted line is the paper's bar. Exact-pixel metrics under a constant learning rate "
        "swing between evaluations, so a run's last evaluation can sit below its best."
    ),
    "bar": (
        "Runs at the paper's bar at any evaluation vs at their last evaluation (the paper "
        "reports final numbers; under the reference recipe a run can touch the bar and leave it)."
    ),
}


def write_report(workdir: str | pathlib.Path) -> pathlib.Path:
    """Writes ``WORKDIR/report/report.md`` and its PNG figures; returns the Markdown's path.

    Reads only the workdir (config.json, results.csv, checkpoints) and, when present, the
    hand-written ``WORKDIR/report/reading.md`` (:data:`READING_FILE`), which the report
    includes after its header and which is never written. Figures whose data the workdir lacks
    are left out; figures that need model outputs (Fig 5, rendering samples, regression centres)
    load parameters from the checkpoints and run the models on this machine's first device.

    Raises:
      ReportError: not a sweep workdir, or nothing evaluated yet.
    """
    record = read(workdir)
    out = record.workdir / REPORT_DIR
    if out.exists() and not out.is_dir():
        raise ReportError(f"{out} is a file: move it aside (the report is written there)")
    out.mkdir(exist_ok=True)
    for old in _stale_figures(out):
        old.unlink()
    reading = _reading(out)
    if record.config.get("experiment", "paper") == "paper":
        sections = [_header(record), reading, _paper_section(record)]
        sections += _figure_sections(record, out)
        sections += _table_sections(record)
    else:
        sections = [generic.header(record), reading, *generic.sections(record, out)]
    path = out / REPORT_FILE
    text = "\n\n".join(s.strip() for s in sections if s.strip()) + "\n"
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text(text)
    tmp.replace(path)
    return path


# -- text sections ------------------------------------------------------------------------------


def _linked_figures(markdown: pathlib.Path) -> set[str]:
    """The PNG files of ``markdown``'s folder that it links to, by name."""
    if not markdown.is_file():
        return set()
    return set(re.findall(r"\]\(([^)/\\]+\.png)\)", markdown.read_text()))


def _stale_figures(out: pathlib.Path) -> list[pathlib.Path]:
    """The earlier report's figures, which may no longer apply: those its ``report.md`` links
    to, less those the reading links to. Any other file in the folder (a figure of one's own)
    is left alone."""
    stale = _linked_figures(out / REPORT_FILE) - _linked_figures(out / READING_FILE)
    return [out / name for name in sorted(stale) if (out / name).is_file()]


def _reading(out: pathlib.Path) -> str:
    """The hand-written reading (``out / READING_FILE``) as the report includes it, or ""."""
    path = out / READING_FILE
    if not path.is_file():
        return ""
    return (
        f"<!-- {READING_FILE}: written by hand; `coordjax report` includes it here and never "
        f"changes it -->\n{path.read_text().strip()}"
    )



def _header(record: SweepRecord) -> str:
    identity = record.config.get("identity", {})
    description = identity.get("definition", {}).get("description", "")
    lines = [f"# Reproduction report: {record.name}", ""]
    if description:
        lines += [f"Sweep definition: *{description}*.", ""]
    lines += [
        f"Workdir `{record.workdir}`: {len(record.finished)} of {len(record.planned)} planned "
        f"runs finished, {record.results['run_id'].nunique()} evaluated, "
        f"{len(record.results)} evaluations. Paper: Liu et al., *An intriguing failing of "
        "convolutional neural networks and the CoordConv solution*, NeurIPS 2018.",
    ]
    if record.pruned:
        lines += [
            "",
            f"Successive halving stopped {len(record.pruned)} runs at a rung (see *Successive "
            "halving* below); they are drawn hollow in Fig S2 and are never a family's best.",
        ]
    if record.partial:
        undone = len(record.planned) - len(record.finished) - len(record.pruned)
        lines += [
            "",
            f"> **Partial sweep.** {undone} of "
            f"{len(record.planned)} runs have not finished ({len(record.not_started)} not "
            "started): the sweep is still running or was interrupted (rerun the same command to "
            "resume). Everything below reflects only the evaluations written so far.",
        ]
    return "\n".join(lines)


VERDICT_TEXT = (
    "Verdicts: **reproduced**: the sweep shows what the paper says; **partial**: it points the "
    "paper's way but falls short (a bar reached at some evaluation but by no run at its last; an "
    "upper bound held by runs trained for fewer epochs than the paper's); **not reproduced**: "
    "the sweep contradicts it; **not run in this sweep**: no run of that task, family and split. "
    "Ours is the best run's last evaluation (for upper bounds: the highest last evaluation); "
    "'judged as' is the range we hold ours to where the paper says 'about'."
)


def _paper_section(record: SweepRecord) -> str:
    table = tables.paper_vs_ours(record)
    ran = table.loc[~table["verdict"].str.contains("not run")]
    skipped = table.loc[table["verdict"].str.contains("not run")]
    lines = ["## Paper vs ours", ""]
    if len(ran):
        lines += [tables.markdown(ran, align_right=("ours", "epochs")), ""]
    else:
        lines += ["No headline number of the paper concerns the models of this sweep.", ""]
    if len(skipped):
        lines += [_not_run_text(skipped, set(record.results["task"])), ""]
    lines += [VERDICT_TEXT, ""]
    timing = [f"{words} ({source})" for task, words, source in paper.TIMING_CLAIMS
              if task == "all" or task in set(record.results["task"])]  # fmt: skip
    lines += [
        "Training-time claims, quoted and not judged (they are for one model on the authors' "
        "hardware; a sweep's wall time is shared by every model of a bucket): "
        + "; ".join(timing)
        + ".",
        "",
        f"Note: {paper.TRAIN_ACCURACY_NOTE}",
    ]
    return "\n".join(lines)


def _not_run_text(skipped: pd.DataFrame, tasks: set[str]) -> str:
    """The claims no run speaks to: those of tasks the sweep ran, then the other tasks."""
    claims = skipped["claim"].tolist()
    mine = [c for c in claims if c.split(":")[0] in tasks]
    others = list(dict.fromkeys(c.split(":")[0] for c in claims if c.split(":")[0] not in tasks))
    parts = []
    if mine:
        parts.append("Not run in this sweep: " + "; ".join(mine) + ".")
    if others:
        parts.append(f"The paper's {' and '.join(others)} claims are for other sweeps.")
    return " ".join(parts)


def _table_sections(record: SweepRecord) -> list[str]:
    out = []
    best = tables.best_models(record)
    if len(best):
        out.append(
            "## Best model per family and split\n\nBy the last evaluation; 'peak' is the run's "
            "best evaluation.\n\n" + tables.markdown(best, align_right=("params", "test", "train"))
        )
    bar = tables.bar_table(record)
    if len(bar):
        out.append(
            "## Reaching the paper's bar: at any evaluation vs at the end\n\n"
            + tables.markdown(bar, align_right=tuple(bar.columns[4:]))
        )
    sens = []
    pairs = (("lr", "l2", "learning rate x L2"),
             ("filter_size", "channel_mult", "filter size x channels"))  # fmt: skip
    for rows, columns, what in pairs:
        for title, table in tables.sensitivity(record, rows, columns):
            sens.append(f"**{what}: {title}**\n\n" + tables.markdown(table))
    if sens:
        out.append(
            "## Sensitivity\n\nFinal test metric by two hyperparameters; each cell is the best "
            "run over the other axes (seeds, batch sizes, ...).\n\n" + "\n\n".join(sens)
        )
    bad = tables.diverged(record)
    out.append(
        "## Diverged models\n\n"
        + (
            tables.markdown(bad)
            if len(bad)
            else "No model diverged (a non-finite loss or parameter flags and freezes a model)."
        )
    )
    if record.pruning:
        out.append(generic.pruning_section(record))
    overview, per_bucket = tables.cost(record)
    text = (
        "## Cost\n\nWall times are as measured, with whatever else the machine ran at the time "
        "(not a benchmark; see `benchmarks/` for controlled ratios).\n\n"
        + tables.markdown(overview)
    )
    if len(per_bucket):
        text += "\n\n" + tables.markdown(per_bucket, align_right=tuple(per_bucket.columns[5:]))
    out.append(text)
    return out


# -- figures ------------------------------------------------------------------------------------


def _figure_md(path: pathlib.Path | None, title: str, caption_key: str, here: str = "") -> str:
    if path is None:
        return ""
    text = f"### {title}\n\n![{title}]({path.name})\n\n{CAPTIONS[caption_key]}"
    return text + (f" **Here**: {here}" if here else "")


def _figure_sections(record: SweepRecord, out: pathlib.Path) -> list[str]:
    final, results = record.final, record.results
    tasks = set(final["task"])
    parts = ["## Figures"]
    if "classification" in tasks:
        path = figures.size_vs_metric(final, "classification", out / "fig_s2_classification.png")
        parts.append(_figure_md(path, "Fig S2: model size vs test accuracy", "fig_s2"))
        path = figures.test_vs_train(final, results, "classification", out / "fig_4.png")
        parts.append(
            _figure_md(path, "Fig 4: test vs train accuracy; accuracy vs time", "fig_4", TIME_AXIS)
        )  # fmt: skip
        parts.append(_fig5(record, out))
    if "rendering" in tasks:
        path = figures.size_vs_metric(final, "rendering", out / "fig_s2_rendering.png")
        parts.append(_figure_md(path, "Rendering: model size vs test IoU", "fig_s2_rendering"))
        path = figures.test_vs_train(final, results, "rendering", out / "fig_6.png")
        parts.append(_figure_md(path, "Fig 6: test vs train IoU; IoU vs time", "fig_6", TIME_AXIS))
        parts.append(_render_samples(record, out))
    if "regression" in tasks:
        parts.append(_regression(record, out))
    best = summary.best_per_family(results)
    path = figures.training_curves(results, best, out / "training_curves.png")
    parts.append(_figure_md(path, "Training curves of the best runs", "curves"))
    counts = tables.ordered(paper.bar_counts(paper.bar_statistics(results)))
    path = figures.bar_reached(counts, out / "bar_reached.png")
    parts.append(_figure_md(path, "Reaching the bar: any evaluation vs the end", "bar"))
    return ["\n\n".join(p for p in parts if p)]


def _best_runs(record: SweepRecord, task: str, split: str | None = None) -> dict[str, pd.Series]:
    """The best run (by its last evaluation) of each family of ``task`` on ``split``."""
    best = summary.best_per_family(record.results)
    if best.empty:
        return {}
    best = best.loc[best["task"] == task]
    if split is not None:
        best = best.loc[best["split"] == split]
    final = record.final.set_index("run_id", drop=False)
    return {b["family"]: final.loc[b["best_run"]] for _, b in best.iterrows()}


def _outputs(record: SweepRecord, run: pd.Series):
    """The run's outputs, or None (logged) when its checkpoint cannot be read."""
    if not (record.workdir / CHECKPOINTS).is_dir():  # e.g. a workdir copied without them
        return None
    try:
        return predictions.run_outputs(record.workdir, run)
    except (ValueError, FileNotFoundError, KeyError) as err:
        logger.warning("no outputs for %s: %s", run["run_id"], err)
        return None


def _not_drawn(title: str, why: str) -> str:
    return f"### {title}\n\nNot drawn: {why}."


def _fig5(record: SweepRecord, out: pathlib.Path) -> str:
    title = "Fig 5: summed predictions, quadrant split"
    runs = _best_runs(record, "classification", "quadrant")
    if not runs:
        return ""
    panels, here = [], []
    split = None
    for family in figures.families(pd.DataFrame({"family": list(runs)})):
        outputs = _outputs(record, runs[family])
        if outputs is None:
            continue
        split = outputs.split
        accuracy = runs[family]
        for side, logits in (("train", outputs.train), ("test", outputs.test)):
            total = predictions.softmax_maps(logits).sum(axis=0)
            metric = f"{side}_accuracy"
            name = figures.label(family)
            panels.append((name, f"{side} set",
                           f"{name}, {side} set\n{side} accuracy "
                           f"{paper.format_metric(metric, accuracy[metric])}", total))  # fmt: skip
        here.append(f"{figures.label(family)}: `{runs[family]['run_id']}`")
    if split is None:
        return _not_drawn(title, "the best quadrant runs have no readable checkpoint")
    truth = [
        (
            "truth",
            f"{side} set",
            f"ground truth, {side} set",
            getattr(split, side).onehots.sum(0)[..., 0],
        )
        for side in ("train", "test")
    ]
    path = figures.probability_sums(truth + panels, out / "fig_5.png")
    return _figure_md(path, title, "fig_5", "best runs by final test accuracy: " + ", ".join(here)
                      + "; accuracies are at the run's last evaluation.")  # fmt: skip


def _render_samples(record: SweepRecord, out: pathlib.Path) -> str:
    title = "Fig 6 / S4-S5: test samples of the best renderers"
    rows, here = [], []
    for split in figures.SPLITS:
        runs = _best_runs(record, "rendering", split)
        if not runs:
            continue
        computed = {f: _outputs(record, r) for f, r in runs.items()}
        computed = {f: o for f, o in computed.items() if o is not None}
        if not computed:
            continue
        test = next(iter(computed.values())).split.test
        picks = np.linspace(0, len(test) - 1, RENDER_SAMPLES).round().astype(int)
        for i in picks:
            x, y = test.centers[i]
            images = [("target", test.images[i, ..., 0])]
            for family in figures.families(pd.DataFrame({"family": list(computed)})):
                prob = predictions.sigmoid(computed[family].test[i, ..., 0])
                name = figures.label(family)
                images += [
                    (f"{name}: probability", prob),
                    (f"{name}: painted", (prob > 0.5).astype(float)),
                ]
            rows.append((f"{split} test ({x}, {y})", images))
        here += [f"{split} {figures.label(f)}: `{r['run_id']}`" for f, r in runs.items()]
    if not rows:
        return ""
    path = figures.render_samples(rows, out / "fig_6_samples.png")
    return _figure_md(path, title, "fig_6_samples", "best runs by final test IoU: "
                      + ", ".join(here) + "; painted = probability > 0.5.")  # fmt: skip


def _regression(record: SweepRecord, out: pathlib.Path) -> str:

    panels, here = [], []
    for split in figures.SPLITS:
        for family, run in _best_runs(record, "regression", split).items():
            outputs = _outputs(record, run)
            if outputs is None:
                continue
            for side, pred in (("train", outputs.train), ("test", outputs.test)):
                examples = getattr(outputs.split, side)
                true = examples.centers.astype(np.float64)
                pred = np.asarray(pred, np.float64) * CANVAS_SIZE  # targets are [x, y] / 64
                error = float(np.mean(np.linalg.norm(pred - true, axis=1)))
                panels.append({"family": family, "split": split, "side": side,
                               "true": true, "pred": pred, "error": error})  # fmt: skip
            here.append(f"{split} {figures.label(family)}: `{run['run_id']}`")
    if not panels:
        return ""
    panels.sort(key=lambda p: 0 if p["family"] != "coordconv" else 1)
    path = figures.regression_scatter(panels, out / "regression_centres.png")
    return _figure_md(path, "Regression: true vs predicted centres", "regression",
                      "best runs by final test error: " + ", ".join(here) + ".")  # fmt: skip


__all__ = ["ReportError", "write_report"]

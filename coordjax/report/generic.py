"""The report of any experiment's sweep, from its workdir alone: best run per family by the
experiment's score, every run's final numbers, curves, sensitivity to each varied key, pruning
and cost. The paper's sweeps get their figures and verdicts on top (:mod:`coordjax.report.build`).
"""

from __future__ import annotations

import pathlib

import numpy as np
import pandas as pd

from coordjax.report import tables
from coordjax.report.source import SweepRecord
from coordjax.sweep.results import BEST_COLUMNS, best_runs, scores_of

# Columns of the results table that are not run-config keys.
RESULT_COLUMNS = {
    "grid", "run_id", "bucket_id", "param_count", "strategy", "epoch", "step", "wall_time",
    "bucket_model_steps", "diverged", "diverged_step", "epoch_train_loss", "status",
    "pruned_epoch", "family",
}  # fmt: skip
MAX_RUN_ROWS = 60


def config_keys(record: SweepRecord) -> list[str]:
    """The run-config keys (the results' columns before the bookkeeping ones)."""
    columns = list(record.results.columns)
    end = columns.index("bucket_id") if "bucket_id" in columns else len(columns)
    return [c for c in columns[:end] if c not in RESULT_COLUMNS]


def varied_keys(record: SweepRecord) -> list[str]:
    """The config keys that take more than one value in this sweep."""
    final = record.final
    return [k for k in config_keys(record) if final[k].nunique(dropna=False) > 1]


def header(record: SweepRecord) -> str:
    """The title, the sweep's description and how far it got."""
    identity = record.config.get("identity", {})
    description = identity.get("definition", {}).get("description", "")
    experiment = record.config.get("experiment", "?")
    lines = [f"# Sweep report: {record.name}", ""]
    if description:
        lines += [f"Experiment `{experiment}`; sweep definition: *{description}*.", ""]
    lines.append(
        f"Workdir `{record.workdir}`: {len(record.finished)} of {len(record.planned)} planned "
        f"runs finished, {len(record.pruned)} pruned at a rung, "
        f"{record.results['run_id'].nunique()} evaluated, {len(record.results)} evaluations."
    )
    if record.partial:
        lines += ["", "> **Partial sweep.** Some runs have not finished: rerun the same "
                  "command to resume. Below: the evaluations written so far."]  # fmt: skip
    return "\n".join(lines)


def sections(record: SweepRecord, out: pathlib.Path) -> list[str]:
    """The generic report's Markdown sections (figures written to ``out``)."""
    scores = scores_of(record.config.get("plan", []))
    parts = [_best_section(record, scores), _curves_section(record, scores, out)]
    parts += [_runs_section(record, scores), _sensitivity_section(record, scores)]
    if record.pruning:
        parts.append(pruning_section(record))
    overview, per_bucket = tables.cost(record)
    cost = (
        "## Cost\n\nWall times are as measured, with whatever else the machine ran at the time "
        "(not a benchmark).\n\n" + tables.markdown(overview)
    )
    if len(per_bucket):
        cost += "\n\n" + tables.markdown(per_bucket.drop(columns="model"))
    parts.append(cost)
    return parts


def _best_section(record: SweepRecord, scores) -> str:
    best = best_runs(record.results, scores, by=record.config.get("groups", ["family"]))
    if best.empty:
        return "## Best runs\n\nNo run finished without diverging."
    keys = varied_keys(record)
    final = record.final.set_index("run_id")
    groups = [c for c in best.columns if c not in BEST_COLUMNS]
    rows = []
    for _, row in best.iterrows():
        run = final.loc[row["best_run"]]
        rows.append({
            **{c: row[c] for c in groups}, "runs": row["models"], "best run": row["best_run"],
            **{k: run[k] for k in keys if k not in ("grid", *groups)},
            row["metric"]: f"{row['final']:.4g}",
            "peak (epoch)": f"{row['peak']:.4g} ({row['peak_epoch']})",
        })  # fmt: skip
    return (
        f"## Best run per {' and '.join(groups)}\n\nBy the experiment's score at the last "
        "evaluation; 'peak' is the run's best evaluation.\n\n" + tables.markdown(pd.DataFrame(rows))
    )


def _runs_section(record: SweepRecord, scores) -> str:
    final = record.final
    if len(final) > MAX_RUN_ROWS or not scores:
        return ""
    keys = varied_keys(record)
    metrics = sorted({m for m, _ in scores.values()})
    columns = ["run_id", *keys, "epoch", *(m.replace("test_", "train_") for m in metrics),
               *metrics, "status"]  # fmt: skip
    table = final[[c for c in dict.fromkeys(columns) if c in final]].copy()
    for column in table.columns:
        if table[column].dtype.kind == "f":
            table[column] = table[column].map(lambda v: f"{v:.4g}")
    table = table.sort_values(["run_id"]).reset_index(drop=True)
    return "## Every run at its last evaluation\n\n" + tables.markdown(table)


def _sensitivity_section(record: SweepRecord, scores) -> str:
    if not scores:
        return ""
    metric, larger = next(iter(scores.values()))
    final = record.final
    if "status" in final:
        final = final.loc[final["status"] != "pruned"]
    final = final.loc[~final["diverged"] & final[metric].notna()]
    parts = []
    for key in varied_keys(record):
        if key in ("seed", "grid"):
            continue
        grouped = final.groupby(key, sort=True)[metric]
        table = pd.DataFrame({
            key: list(grouped.groups),
            "runs": grouped.size().to_numpy(),
            f"best {metric}": (grouped.max() if larger else grouped.min()).map("{:.4g}".format)
            .to_numpy(),
            f"median {metric}": grouped.median().map("{:.4g}".format).to_numpy(),
        })  # fmt: skip
        parts.append(f"**{key}**\n\n" + tables.markdown(table))
    if not parts:
        return ""
    return (
        f"## Sensitivity\n\nThe score ({metric}) of the finished runs at their last evaluation, "
        "by each key the sweep varies (over every value of the others).\n\n" + "\n\n".join(parts)
    )


def _curves_section(record: SweepRecord, scores, out: pathlib.Path) -> str:
    if not scores:
        return ""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metric, _ = next(iter(scores.values()))
    results = record.results.sort_values("epoch")
    families = sorted(results["family"].unique())
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    figure, axes = plt.subplots(1, 2, figsize=(10, 3.6), sharex=True)
    for side, ax in zip(("train", "test"), axes, strict=True):
        column = metric.replace("test_", f"{side}_", 1)
        if column not in results:
            continue
        for i, family in enumerate(families):
            for _, run in results.loc[results["family"] == family].groupby("run_id"):
                ax.plot(run["epoch"], run[column], color=colors[i % len(colors)], alpha=0.6,
                        lw=1, label=family)  # fmt: skip
        ax.set_xlabel("epoch")
        ax.set_ylabel(column)
        if np.nanmin(results[column].to_numpy(dtype=float)) > 0:
            ax.set_yscale("log")
    handles, labels = axes[0].get_legend_handles_labels()
    unique = dict(zip(labels, handles, strict=True))
    figure.legend(unique.values(), unique.keys(), loc="upper center", ncol=len(unique))
    figure.tight_layout(rect=(0, 0, 1, 0.9))
    path = out / "curves.png"
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return (
        f"## Curves\n\n![{metric} by epoch]({path.name})\n\n*{metric} on the train (left) and "
        "test (right) examples at every evaluation, one line per run, coloured by family.*"
    )


def pruning_section(record: SweepRecord) -> str:
    """The rung decisions: per rung and group, the runs kept of those ranked, and by what."""
    rows, metrics = [], set()
    for decision in record.pruning:
        for group in decision["groups"]:
            metrics.add(group["metric"])
            best = next((r["value"] for r in group["runs"] if r["value"] is not None), None)
            kept = sum(r["kept"] for r in group["runs"])
            rows.append({
                "rung (epoch)": decision["epoch"],
                "group": ", ".join(str(v) for v in group["key"].values()),
                "ranked by": group["metric"],
                "kept / ranked": f"{kept} / {group['n']}",
                "diverged": sum(r["diverged"] for r in group["runs"]),
                "best at rung": "-" if best is None else f"{best:.4g}",
            })  # fmt: skip
    text = (
        "## Successive halving\n\nAt each rung every group kept its top runs by the metric "
        "(ties by run id; a diverged run is always pruned); the decision is recorded in "
        "`pruning.json` before the engine acts on it. Pruned runs keep their rows and their "
        "last checkpoint.\n\n" + tables.markdown(pd.DataFrame(rows))
    )
    tested = sorted(m for m in metrics if m.startswith("test_"))
    if tested:
        text += (
            f"\n\n> **Selected on the test set.** This sweep ranked runs by {tested}: its test "
            "numbers are biased upwards by the selection."
        )
    return text

"""The end-of-sweep summary: per task, family and split, our number beside the paper's.

Verdicts come from :mod:`coordjax.paper`, the same data as the report's paper-vs-ours table. The
summary fits in 100 columns and points to the report for figures and the full tables.
"""

from __future__ import annotations

import textwrap

import numpy as np
import pandas as pd

from coordjax import paper

WIDTH = 100

# The metric that ranks models of each task, and whether larger is better.
PRIMARY_METRIC = {
    task: (bar.metric, bar.larger_is_better) for task, bar in paper.BARS.items()
}  # fmt: skip


def best_per_family(results: pd.DataFrame) -> pd.DataFrame:
    """Best final model per (task, family, split) by the task's primary metric.

    The family is :func:`coordjax.paper.family_of` (deconv / coordconv / conv, else the grid's
    name). Besides the final evaluation, ``peak_<metric>`` / ``peak_epoch`` give that run's best
    evaluation: with a constant learning rate, exact-pixel metrics can swing from one
    evaluation to the next, and the peak says what the run reached. Runs pruned at a rung
    (successive halving) are not candidates; ``models`` counts the runs that trained to the end.
    """
    final = paper.final_rows(results)
    if "status" in final:  # runs pruned at a rung stopped early: the best is one that finished
        final = final.loc[final["status"] != "pruned"]
    if final.empty:
        return pd.DataFrame()
    final = final.assign(family=paper.family_of(final))
    rows = []
    for (task, family, split), group in final.groupby(["task", "family", "split"], sort=True):
        if task not in PRIMARY_METRIC:
            continue
        metric, larger = PRIMARY_METRIC[task]
        ok = group.loc[~group["diverged"].astype(bool) & group[metric].notna()]
        if ok.empty:
            continue
        best = ok.loc[ok[metric].idxmax() if larger else ok[metric].idxmin()]
        history = results.loc[results["run_id"] == best["run_id"]]
        peak = history.loc[history[metric].idxmax() if larger else history[metric].idxmin()]
        train = metric.replace("test_", "train_")
        rows.append(
            {
                "task": task,
                "family": family,
                "grid": best["grid"],
                "split": split,
                "models": len(group),
                "seeds": int(group["seed"].nunique()),
                "best_run": best["run_id"],
                "params": int(best["param_count"]),
                "lr": best["lr"],
                "l2": best["l2"],
                "batch_size": int(best["batch_size"]),
                "epoch": int(best["epoch"]),
                metric: best[metric],
                train: best[train] if train in best else np.nan,
                f"peak_{metric}": peak[metric],
                "peak_epoch": int(peak["epoch"]),
                "diverged": int(group["diverged"].astype(bool).sum()),
            }
        )
    return pd.DataFrame(rows)


def summary_text(
    results: pd.DataFrame, wall_seconds: float | None = None, report: str | None = None
) -> str:
    """Per task: each family and split, our best number beside the paper's, and the verdict.

    Args:
      results: the sweep's results table (one row per model per evaluation).
      wall_seconds: the command's wall time, if known.
      report: where the report was written (pointed to at the end), if it was.

    Returns:
      Plain text, at most 100 columns wide.
    """
    if results.empty:
        return "no results"
    final = paper.final_rows(results)
    best = best_per_family(results)
    claims = paper.verdicts(results).set_index(["task", "family", "split"])
    stats = paper.bar_statistics(results)
    counts = paper.bar_counts(stats).set_index(["task", "family", "split"])
    lines = [] if len(best) else ["no model finished without diverging", ""]
    for task, table in best.groupby("task", sort=True) if len(best) else ():
        lines += _task_lines(task, table, claims, counts) + [""]
    lines = [_fit(line) for line in [*lines, *_footer(final, wall_seconds)]]
    if report:  # a path is never cut: it is there to be copied
        lines.append(f"report: {report}")
    return "\n".join(lines)


def _task_lines(task, table, claims, counts) -> list[str]:
    metric, _ = PRIMARY_METRIC[task]
    train = metric.replace("test_", "train_")
    bar = paper.BARS[task]
    header = [
        f"{task} (bar: {bar.label}): best run per family and split at its last evaluation;",
        "peak = its best evaluation; at bar = runs at the bar at any evaluation / at the end",
    ]
    rows, notes, best_runs = [], [], []
    order = {"uniform": 0, "quadrant": 1}  # the paper's order
    table = table.sort_values(
        ["family", "split"], key=lambda c: c.map(order).fillna(2) if c.name == "split" else c
    )
    for _, best in table.iterrows():
        key = (task, best["family"], best["split"])
        claim = claims.loc[key] if key in claims.index else None
        count = counts.loc[key] if key in counts.index else None
        verdict = "-" if claim is None else claim["verdict"]
        if claim is not None and claim["note"] and verdict != "reproduced":
            notes.append(f"  {best['family']} {best['split']}: {claim['note']}")
        rows.append({
            "family": best["family"],
            "split": best["split"],
            "runs": int(best["models"]),
            "test": paper.format_metric(metric, best[metric]),
            "train": paper.format_metric(train, best[train]),
            "peak (epoch)": f"{paper.format_metric(metric, best[f'peak_{metric}'])} "
                            f"({best['peak_epoch']})",
            "at bar": "-" if count is None
                      else f"{int(count['ever_at_bar'])}/{int(count['at_bar_end'])}",
            "paper": "-" if claim is None else claim["paper"],
            "verdict": verdict,
        })  # fmt: skip
        best_runs.append(
            f"  {best['family']} {best['split']}: {best['best_run']}  {best['params']:,} params  "
            f"lr {best['lr']:g}  l2 {best['l2']:g}  batch {best['batch_size']}"
        )
    lines = [*header, *_table(rows, right=("runs", "test", "train", "peak (epoch)", "at bar"))]
    params = [
        (family, claims.loc[(task, family, "both")])
        for family in table["family"].unique()
        if (task, family, "both") in claims.index
    ]
    for family, claim in params:
        if claim["verdict"] != "not run in this sweep":
            lines.append(f"parameters, {family}: {claim['ours_text']} (paper {claim['paper']}): "
                         f"{claim['verdict']}")  # fmt: skip
    if notes:
        lines += ["notes:", *notes]
    return lines + ["best runs:", *best_runs]


def _table(rows: list[dict], right: tuple[str, ...]) -> list[str]:
    """Rows of equal keys as aligned text columns (``right``: right-aligned columns)."""
    columns = list(rows[0])
    width = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in columns}

    def line(cells: dict) -> str:
        return "  ".join(
            str(cells[c]).rjust(width[c]) if c in right else str(cells[c]).ljust(width[c])
            for c in columns
        ).rstrip()

    return [line({c: c for c in columns}), *(line(r) for r in rows)]


def _footer(final: pd.DataFrame, wall_seconds: float | None) -> list[str]:
    line = (
        f"models: {final['run_id'].nunique()}   "
        f"diverged: {int(final['diverged'].astype(bool).sum())}   "
        f"training wall time (sum over buckets): "
        f"{final.groupby('bucket_id')['wall_time'].max().sum():.1f}s"
    )
    if wall_seconds is not None:
        line += f"   command: {wall_seconds:.1f}s"
    return [line]


def _fit(line: str) -> str:
    """Wraps a line wider than :data:`WIDTH`, indenting its continuation."""
    if len(line) <= WIDTH:
        return line
    indent = " " * (len(line) - len(line.lstrip()) + 4)
    return "\n".join(textwrap.wrap(line, WIDTH, subsequent_indent=indent, break_long_words=True))

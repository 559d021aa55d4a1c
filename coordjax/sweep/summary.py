"""A one-screen summary of a results table: best model per family and split."""

from __future__ import annotations

import pandas as pd

# The metric that ranks models of each task, and whether larger is better.
PRIMARY_METRIC = {
    "classification": ("test_accuracy", True),
    "rendering": ("test_iou", True),
    "regression": ("test_pixel_error", False),
}


def final_rows(results: pd.DataFrame) -> pd.DataFrame:
    """The last evaluation of every run."""
    if results.empty:
        return results
    last = results.groupby("run_id")["epoch"].transform("max")
    return results.loc[results["epoch"] == last]


def best_per_family(results: pd.DataFrame) -> pd.DataFrame:
    """Best final model per (task, grid, split) by the task's primary metric.

    Besides the final evaluation, ``peak_<metric>`` / ``peak_epoch`` give that run's best
    evaluation: with a constant learning rate, exact-pixel metrics can swing from one
    evaluation to the next, and the peak says what the run reached.
    """
    final = final_rows(results)
    rows = []
    for (task, grid, split), group in final.groupby(["task", "grid", "split"], sort=True):
        metric, larger = PRIMARY_METRIC[task]
        ok = group.loc[~group["diverged"].astype(bool)]
        if ok.empty:
            continue
        best = ok.loc[ok[metric].idxmax() if larger else ok[metric].idxmin()]
        history = results.loc[results["run_id"] == best["run_id"]]
        peak = history.loc[history[metric].idxmax() if larger else history[metric].idxmin()]
        rows.append(
            {
                "task": task,
                "grid": grid,
                "split": split,
                "models": len(group),
                "best_run": best["run_id"],
                "params": int(best["param_count"]),
                "lr": best["lr"],
                "l2": best["l2"],
                "epoch": int(best["epoch"]),
                metric: best[metric],
                metric.replace("test_", "train_"): best[metric.replace("test_", "train_")],
                f"peak_{metric}": peak[metric],
                "peak_epoch": int(peak["epoch"]),
                "diverged": int(group["diverged"].astype(bool).sum()),
            }
        )
    return pd.DataFrame(rows)


def summary_text(results: pd.DataFrame, wall_seconds: float | None = None) -> str:
    """Best model per family and split, diverged count and wall time, as plain text."""
    if results.empty:
        return "no results"
    final = final_rows(results)
    best = best_per_family(results)
    lines = [] if len(best) else ["no model finished without diverging", ""]
    # One table per task, with that task's own metrics.
    for _, table in best.groupby("task", sort=True) if len(best) else ():
        table = table.dropna(axis="columns", how="all")
        lines += [table.to_string(index=False, float_format=lambda v: f"{v:.4g}"), ""]
    lines += [
        f"models: {final['run_id'].nunique()}   "
        f"diverged: {int(final['diverged'].astype(bool).sum())}   "
        f"training wall time (sum over buckets): "
        f"{final.groupby('bucket_id')['wall_time'].max().sum():.1f}s",
    ]
    if wall_seconds is not None:
        lines[-1] += f"   command wall time: {wall_seconds:.1f}s"
    return "\n".join(lines)

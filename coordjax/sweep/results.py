"""Any experiment's results read back: the best run per family by the experiment's score, and
the end-of-sweep summary. Pure pandas, no JAX: the score is read from the workdir's plan.

The paper's summary, with its verdicts, is :mod:`coordjax.paper.summary`.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from coordjax.sweep.durations import format_duration

WIDTH = 100
BEST_COLUMNS = ("models", "best_run", "metric", "final", "peak", "peak_epoch")


def scores_of(plan: list[dict]) -> dict[str, tuple[str, bool]]:
    """run_id -> ``(score column, larger is better)`` from a workdir's plan (``config.json``)."""
    return {
        run_id: tuple(bucket["score"])
        for bucket in plan
        if "score" in bucket
        for run_id in bucket["run_ids"]
    }


def final_rows(results: pd.DataFrame) -> pd.DataFrame:
    """Each run's last evaluation."""
    if results.empty:
        return results
    return results.sort_values("epoch").groupby("run_id", sort=False).tail(1)


def best_runs(
    results: pd.DataFrame, scores: dict[str, tuple[str, bool]], by: Sequence[str] = ("grid",)
) -> pd.DataFrame:
    """The best finished run of each group (the columns ``by``) by its score at the last
    evaluation.

    Returns one row per group: the ``by`` columns, ``models`` (runs that trained to the end),
    ``best_run``, ``metric``, ``final`` (its score at the end), ``peak`` and ``peak_epoch`` (its
    best evaluation). Pruned and diverged runs are not candidates.
    """
    by = [c for c in by if c in results] or ["grid"]
    final = final_rows(results)
    if "status" in final:
        final = final.loc[final["status"] != "pruned"]
    rows = []
    for key, runs in final.groupby(by, sort=True):
        key = key if isinstance(key, tuple) else (key,)
        ok = runs.loc[~runs["diverged"].astype(bool) & runs["run_id"].isin(scores)]
        if ok.empty:
            continue
        metric, larger = scores[ok["run_id"].iloc[0]]
        ok = ok.loc[ok[metric].notna()]
        if ok.empty:
            continue
        best = ok.loc[ok[metric].idxmax() if larger else ok[metric].idxmin()]
        history = results.loc[results["run_id"] == best["run_id"]]
        peak = history.loc[history[metric].idxmax() if larger else history[metric].idxmin()]
        rows.append({**dict(zip(by, key, strict=True)), "models": len(runs),
                     "best_run": best["run_id"],
                     "metric": metric, "final": float(best[metric]),
                     "peak": float(peak[metric]), "peak_epoch": int(peak["epoch"])})  # fmt: skip
    return pd.DataFrame(rows)


def summary_text(
    results: pd.DataFrame,
    scores: dict[str, tuple[str, bool]],
    *,
    by: Sequence[str] = ("grid",),
    wall_seconds: float | None = None,
    report: str | None = None,
) -> str:
    """A few lines for the end of a sweep: the best run of each group (``by``; grids by
    default) by the score."""
    best = best_runs(results, scores, by)
    lines = []
    if best.empty:
        lines.append("no run finished without diverging (see results.csv)")
    columns = [c for c in best.columns if c not in BEST_COLUMNS]
    for _, row in best.iterrows():
        group = " ".join(str(row[c]) for c in columns)
        lines.append(
            f"{group}: {row['metric']} {row['final']:.4g}, peak {row['peak']:.4g} at epoch "
            f"{row['peak_epoch']} ({row['best_run']}, best of {row['models']})"
        )
    runs = results["run_id"].nunique() if len(results) else 0
    diverged = int(final_rows(results)["diverged"].astype(bool).sum()) if len(results) else 0
    tail = f"models: {runs}   diverged: {diverged}"
    if wall_seconds is not None:
        tail += f"   command: {format_duration(wall_seconds)}"
    lines.append(tail)
    if report:
        lines.append(f"report: {report}")
    return "\n".join(line[:WIDTH] if len(line) > WIDTH else line for line in lines)

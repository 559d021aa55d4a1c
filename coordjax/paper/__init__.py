"""The paper's headline numbers as data, its bars per task, and how a sweep stands against them.

Everything here is plain data and pandas: no JAX. The end-of-sweep summary
(:mod:`coordjax.paper.summary`) and the report (:mod:`coordjax.report`) both read it, so the two
always give the same verdicts.

Sources: "§" is a section of the paper (Liu et al., "An intriguing failing of convolutional
neural networks and the CoordConv solution", NeurIPS 2018, arXiv:1807.03247), "Fig" / "Table"
its figures and tables (S = supplementary), "blog" the companion Uber Engineering post, "spec"
the authors' reference code (``uber-research/CoordConv``: what it did).

Stable API (other code relies on these names and columns)::

    BARS[task] -> Bar                     # the paper's success bar per task
    CLAIMS -> tuple[Claim, ...]           # its headline numbers, each with its source
    family_of(results) -> pd.Series       # "deconv" | "coordconv" | "conv" | the grid name
    bar_statistics(results) -> DataFrame  # per run: first epoch at the bar, fraction, at the end
    bar_counts(stats) -> DataFrame        # per (task, family, split): runs at the bar ever / at end
    verdicts(results) -> DataFrame        # per claim: ours, the verdict, a note
    format_metric(metric, value) -> str   # "86.0 %", "0.83", "0.42 px", "7,553"
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd

# --------------------------------------------------------------------------------------------
# Bars


@dataclasses.dataclass(frozen=True)
class Bar:
    """The paper's success bar of a task: ``metric`` at least ``low`` or at most ``high``.

    Attributes:
      task: "classification" | "rendering" | "regression".
      metric: the results column it is read from (a test metric; ``train_`` for train).
      low: a value at or above ``low`` is at the bar (None: no lower bound).
      high: a value at or below ``high`` is at the bar (None: no upper bound).
      label: the bar in words, e.g. "100 % test accuracy".
      source: where the paper sets it.
    """

    task: str
    metric: str
    low: float | None
    high: float | None
    label: str
    source: str

    def reached(self, values) -> np.ndarray:
        """Elementwise: is each value at the bar? NaN (diverged) never is.

        ``values``: array-like of floats, any shape. Returns a bool array of that shape.
        """
        return _in_range(np.asarray(values, dtype=np.float64), self.low, self.high)

    @property
    def larger_is_better(self) -> bool:
        return self.low is not None


# Exact-pixel accuracies are k/n of a split (n <= 2407): 1e-6 separates 100 % from the next
# possible value while absorbing float32 sums that land a hair below 1.
_TOLERANCE = 1e-6

BARS: dict[str, Bar] = {
    "classification": Bar(
        "classification", "test_accuracy", 1.0, None, "100 % test accuracy",
        "§4.1, Fig 4, Fig S2: CoordConv attains perfect train and test accuracy on both splits",
    ),
    "rendering": Bar(
        "rendering", "test_iou", 0.99, None, "test IoU >= 0.99",
        "§S1 (Fig S2 text): CoordConv achieves perfect test IOU; blog: IoU 1.0. 0.99 is our "
        "reading of 'perfect' for a thresholded IoU",
    ),
    "regression": Bar(
        "regression", "test_pixel_error", None, 0.5, "test error < 0.5 px",
        "§4.1: 'generalizes well (less than half a pixel error on average)'",
    ),
}  # fmt: skip


def _in_range(values: np.ndarray, low: float | None, high: float | None) -> np.ndarray:
    ok = np.isfinite(values)
    if low is not None:
        ok &= values >= low - _TOLERANCE
    if high is not None:
        ok &= values <= high + _TOLERANCE
    return ok


# --------------------------------------------------------------------------------------------
# Claims

VERDICTS = ("reproduced", "partial", "not reproduced", "not run in this sweep")
"""The plain verdicts, in this meaning:

- reproduced: the sweep shows what the paper says.
- partial: it points the paper's way but falls short: a bar reached at some evaluation but by no
  run at its last one, or an upper bound held by runs trained for fewer epochs than the paper's
  (a short run can neither confirm nor refute "never above").
- not reproduced: the sweep contradicts it (bar never reached, bound exceeded, value out of
  range, parameter count differs).
- not run in this sweep: no run of that task, family and split.
"""

KINDS = ("reaches", "at_most", "about", "count")


@dataclasses.dataclass(frozen=True)
class Claim:
    """One headline number of the paper.

    Attributes:
      key: stable id, ``<task>/<family>/<split or "params">``.
      task: "classification" | "rendering" | "regression".
      family: "deconv" | "coordconv" | "conv" (see :func:`family_of`).
      split: "uniform" | "quadrant", or None when the claim is about every split.
      metric: results column compared: a test metric, or "param_count".
      kind: how ours is judged against [low, high]:
        "reaches": the family's best run at its last evaluation is inside (the task's bar);
        "at_most": no run's last evaluation is above ``high`` (an upper bound over a sweep);
        "about": the best run at its last evaluation is inside (an approximate value);
        "count": some run of the family has a parameter count inside.
      low, high: the range (None: unbounded on that side). Where the paper says "about", the
        range is our reading of it, stated in ``paper``.
      paper: the paper's number as it states it, short, for display ("<= ~86 %").
      epochs: the paper's (reference code's) training length in epochs, or None.
      source: where it is stated.
      quote: the paper's words.
    """

    key: str
    task: str
    family: str
    split: str | None
    metric: str
    kind: str
    low: float | None
    high: float | None
    paper: str
    epochs: int | None
    source: str
    quote: str

    @property
    def criterion(self) -> str:
        """The range we judge ours against, in words (e.g. "<= 88.0 %", ">= 100 %")."""
        metric = self.metric
        if self.low is not None and self.high is not None and self.low == self.high:
            return f"= {format_metric(metric, self.low)}"
        if self.low is not None and self.high is not None:
            return f"{format_metric(metric, self.low)} to {format_metric(metric, self.high)}"
        if self.low is not None:
            return f">= {format_metric(metric, self.low)}"
        return f"<= {format_metric(metric, self.high)}"


def _bar_claim(task, family, split, paper, epochs, source, quote) -> Claim:
    """A claim that the family reaches its task's bar (:data:`BARS`)."""
    bar = BARS[task]
    return Claim(f"{task}/{family}/{split}", task, family, split, bar.metric, "reaches",
                 bar.low, bar.high, paper, epochs, source, quote)  # fmt: skip


CLAIMS: tuple[Claim, ...] = (
    # Supervised Coordinate Classification (§4.1, §S2, Fig 4, Fig S2)
    Claim("classification/deconv/uniform", "classification", "deconv", "uniform",
          "test_accuracy", "at_most", None, 0.88, "<= ~86 %", 1000,
          "§4.1; Fig 4 (right); Fig S2; blog",
          "100% test accuracy is never achieved, with the best model achieving only 86% test "
          "accuracy"),
    Claim("classification/deconv/quadrant", "classification", "deconv", "quadrant",
          "test_accuracy", "at_most", None, 0.05, "~0 %", 1000,
          "§4.1; Fig 4 (left); Fig S2",
          "On the quadrant split, convolutional models are unable to generalize at all"),
    _bar_claim("classification", "coordconv", "uniform", "100 %", 50, "§4.1; Fig 4; Fig S2",
               "CoordConv models attain perfect performance on both data splits"),
    _bar_claim("classification", "coordconv", "quadrant", "100 %", 50, "§4.1; Fig 4; Fig 5; Fig S2",
               "the CoordConv model attains 100% accuracy on both the train and test sets"),
    Claim("classification/coordconv/params", "classification", "coordconv", None,
          "param_count", "count", 7553, 7553, "7,553", None, "§4.1 ('7.5k'); §S1",
          "working CoordConv models are [...] smaller (7553 as opposed to 50k-1.6M parameters)"),
    # Supervised Rendering (§4.2, §S4, Fig 6)
    Claim("rendering/deconv/uniform", "rendering", "deconv", "uniform", "test_iou", "at_most",
          None, 0.85, "<= ~0.83", 1000, "Fig 6 (right); blog",
          "Convolution models never achieve more than about IOU 0.83"),
    Claim("rendering/deconv/quadrant", "rendering", "deconv", "quadrant", "test_iou", "at_most",
          None, 0.38, "<= ~0.36", 1000, "blog (Figure 2a)",
          "unable to achieve over 0.83 test IOU on the uniform split and over 0.36 test IOU on "
          "the quadrant split"),
    _bar_claim("rendering", "coordconv", "uniform", "1.0", 50, "§S1; Fig 6; blog",
               "CoordConv achieves perfect test IOU there"),
    _bar_claim("rendering", "coordconv", "quadrant", "1.0", 50, "§S1; Fig 6; Fig S5; blog",
               "Even with such a difficult generalization problem, CoordConv outputs [...] are "
               "precisely correct"),
    Claim("rendering/coordconv/params", "rendering", "coordconv", None, "param_count", "count",
          9490, 9490, "9,490", None, "§S1",
          "CoordConv model in that case has a slightly larger number of parameters: 9490"),
    # Supervised Coordinate Regression (§4.1, §S3, Table S1, Fig 5)
    _bar_claim("regression", "conv", "uniform", "< 0.5 px", 100, "§4.1; §S3; Table S1",
               "a standard convolutional network [...] generalizes well (less than half a pixel "
               "error on average)"),
    Claim("regression/conv/quadrant", "regression", "conv", "quadrant", "test_pixel_error",
          "about", 2.5, 7.5, "~5 px", 100, "§4.1; §S3; Fig 5 (right)",
          "can be tuned to achieve limited generalization on the quadrant split (around five "
          "pixels error on average)"),
    _bar_claim("regression", "coordconv", "uniform", "~0 px", 100, "§4.1; §S3; Fig 5 (right)",
               "a 900 parameter CoordConv model [...] trains quickly and generalizes in both the "
               "uniform and quadrant splits"),
    _bar_claim("regression", "coordconv", "quadrant", "~0 px", 100, "§4.1; §S3; Fig 5 (right)",
               "the CoordConv model fits train and test set perfectly"),
    Claim("regression/coordconv/params", "regression", "coordconv", None, "param_count",
          "count", 850, 950, "~900", None, "§4.1",
          "a 900 parameter CoordConv model"),
)  # fmt: skip

TIMING_CLAIMS: tuple[tuple[str, str, str], ...] = (
    ("classification", "CoordConv: perfect accuracy in 10-20 seconds; deconv: over an hour to "
     "converge to ~86 %", "§4.1; Fig 4 (right); §S2"),
    ("rendering", "CoordConv: about a minute; deconv: over two hours to converge",
     "Fig 6 (right); §S4"),
    ("all", "CoordConv solves the coordinate transform problem 150 times faster with 10-100 "
     "times fewer parameters", "abstract"),
)  # fmt: skip
"""(task, the paper's words, source): stated for a single model on the authors' hardware; a
sweep's wall time is shared by every model of a bucket, so these are quoted, not judged."""

TRAIN_ACCURACY_NOTE = (
    "Our train_accuracy is the accuracy of the whole train split evaluated in inference mode "
    "after each evaluation's epoch; the reference code logged a running mean of training-mode "
    "minibatch accuracies over the epoch, so its train curves look smoother and lag ours."
)

# --------------------------------------------------------------------------------------------
# Families

FAMILY_OF_MODEL: dict[str, str] = {
    "deconv_painter": "deconv",
    "deconv_painter_nobn": "deconv",
    "coordconv_classifier": "coordconv",
    "coordconv_renderer": "coordconv",
    "coordconv_regressor": "coordconv",
    "conv_regressor_uniform": "conv",
    "conv_regressor_quadrant": "conv",
}


def family_of(results: pd.DataFrame) -> pd.Series:
    """Each row's model family: from its ``model`` (:data:`FAMILY_OF_MODEL`), else its ``grid``.

    Returns a string Series aligned with ``results``.
    """
    if results.empty:
        return pd.Series([], index=results.index, dtype=object)
    fallback = results["grid"] if "grid" in results else results["model"]
    if "model" not in results:
        return fallback.astype(str)
    return results["model"].map(FAMILY_OF_MODEL).fillna(fallback).astype(str)


# --------------------------------------------------------------------------------------------
# Bar statistics

STATS_COLUMNS = (
    "run_id", "task", "family", "split", "metric", "evaluations", "first_epoch_at_bar",
    "fraction_at_bar", "ever_at_bar", "at_bar_end", "final", "best", "final_epoch", "diverged",
)  # fmt: skip


def bar_statistics(results: pd.DataFrame, side: str = "test") -> pd.DataFrame:
    """How each run's test (or train) metric stood against its task's bar, evaluation by evaluation.

    Exact-pixel metrics under a constant learning rate swing between evaluations, so a run's
    last evaluation alone under-reports what it reached; these statistics show both.

    Args:
      results: one row per model per evaluation (a sweep's ``results.csv``) with columns
        ``run_id``, ``task``, ``epoch``, ``split`` and the bar metric of each task present
        (``test_accuracy`` / ``test_iou`` / ``test_pixel_error``); ``model`` or ``grid`` name the
        family; ``diverged`` is optional. Rows of tasks without a bar are ignored.
      side: ``"test"`` (default) or ``"train"``: which split's metric is held to the bar.

    Returns:
      One row per run, sorted by ``run_id``, with :data:`STATS_COLUMNS`:
      ``metric`` the bar's column; ``evaluations`` (int) how many evaluations the run has;
      ``first_epoch_at_bar`` the first evaluated epoch at the bar (float, NaN if never);
      ``fraction_at_bar`` (float in [0, 1]) the share of its evaluations at the bar;
      ``ever_at_bar`` / ``at_bar_end`` (bool) at the bar at any / its last evaluation;
      ``final`` / ``best`` the metric at its last / best evaluation (NaN if diverged throughout);
      ``final_epoch`` (int) its last evaluated epoch; ``diverged`` (bool) at its last evaluation.
    """
    if side not in ("test", "train"):
        raise ValueError(f"side must be 'test' or 'train'; got {side!r}")
    if results.empty or "task" not in results:
        return pd.DataFrame(columns=list(STATS_COLUMNS))
    table = results.loc[results["task"].isin(BARS)].copy()
    if table.empty:
        return pd.DataFrame(columns=list(STATS_COLUMNS))
    table["family"] = family_of(table)
    table = table.sort_values(["run_id", "epoch"], kind="stable")
    rows = []
    for run_id, history in table.groupby("run_id", sort=True):
        task = history["task"].iloc[0]
        bar = BARS[task]
        metric = bar.metric.replace("test_", f"{side}_", 1)
        values = history[metric].to_numpy(dtype=np.float64)
        hit = bar.reached(values)
        epochs = history["epoch"].to_numpy()
        finite = values[np.isfinite(values)]
        best = np.nan
        if finite.size:
            best = finite.max() if bar.larger_is_better else finite.min()
        diverged = (
            bool(history["diverged"].astype(bool).iloc[-1]) if "diverged" in history else False
        )
        rows.append({
            "run_id": run_id,
            "task": task,
            "family": history["family"].iloc[0],
            "split": history["split"].iloc[0],
            "metric": metric,
            "evaluations": len(values),
            "first_epoch_at_bar": float(epochs[hit][0]) if hit.any() else math.nan,
            "fraction_at_bar": float(hit.mean()),
            "ever_at_bar": bool(hit.any()),
            "at_bar_end": bool(hit[-1]),
            "final": float(values[-1]),
            "best": float(best),
            "final_epoch": int(epochs[-1]),
            "diverged": diverged,
        })  # fmt: skip
    return pd.DataFrame(rows, columns=list(STATS_COLUMNS))


def bar_counts(stats: pd.DataFrame) -> pd.DataFrame:
    """Per (task, family, split): how many runs reached the bar at any evaluation and at the end.

    Args:
      stats: :func:`bar_statistics`.

    Returns:
      Columns ``task, family, split, runs, ever_at_bar, at_bar_end`` (ints) and
      ``median_first_epoch`` (float; NaN when no run reached the bar).
    """
    columns = ["task", "family", "split", "runs", "ever_at_bar", "at_bar_end",
               "median_first_epoch"]  # fmt: skip
    if stats.empty:
        return pd.DataFrame(columns=columns)
    grouped = stats.groupby(["task", "family", "split"], sort=True)
    counts = grouped.agg(
        runs=("run_id", "size"),
        ever_at_bar=("ever_at_bar", "sum"),
        at_bar_end=("at_bar_end", "sum"),
        median_first_epoch=("first_epoch_at_bar", "median"),
    ).reset_index()
    return counts[columns]


# --------------------------------------------------------------------------------------------
# Verdicts

VERDICT_COLUMNS = (
    "key", "task", "family", "split", "metric", "paper", "criterion", "ours", "ours_text", "runs",
    "seeds",
    "epochs", "verdict", "note", "source",
)  # fmt: skip


def verdicts(results: pd.DataFrame, claims: tuple[Claim, ...] = CLAIMS) -> pd.DataFrame:
    """Each claim of the paper beside our number and a plain verdict (:data:`VERDICTS`).

    Our number is the best run's last evaluation (the largest value for "at_most" claims, the
    best by the task's bar otherwise), over runs that had not diverged; for "count" claims it is
    the family's parameter count closest to the paper's.

    Args:
      results: a sweep's results table (one row per model per evaluation), possibly partial.
      claims: which claims (default :data:`CLAIMS`).

    Returns:
      One row per claim with :data:`VERDICT_COLUMNS`: ``paper`` (the paper's number, as text),
      ``criterion`` (the range ours is judged against, as text), ``ours`` (float, NaN when not run),
      ``ours_text`` (formatted like the paper: percent for accuracy), ``runs`` and ``seeds``
      (ints) behind it, ``epochs`` (int, the longest last evaluation among those runs, 0 when
      not run), ``verdict``, ``note`` (why, in a few words), ``source``.
    """
    final = final_rows(results)
    families = family_of(final)
    rows = []
    for claim in claims:
        mine = final
        if not final.empty:
            keep = (final["task"] == claim.task) & (families == claim.family)
            if claim.split is not None:
                keep &= final["split"] == claim.split
            mine = final.loc[keep]
        rows.append({**_judge(claim, mine, results), "key": claim.key, "task": claim.task,
                     "family": claim.family, "split": claim.split or "both",
                     "metric": claim.metric, "paper": claim.paper, "criterion": claim.criterion,
                     "source": claim.source})  # fmt: skip
    return pd.DataFrame(rows, columns=list(VERDICT_COLUMNS))


def final_rows(results: pd.DataFrame) -> pd.DataFrame:
    """The last evaluation of every run (rows of ``results`` at each run's largest epoch)."""
    if results.empty:
        return results
    last = results.groupby("run_id")["epoch"].transform("max")
    return results.loc[results["epoch"] == last]


def _judge(claim: Claim, mine: pd.DataFrame, results: pd.DataFrame) -> dict:
    out = {"ours": math.nan, "ours_text": "-", "runs": len(mine), "seeds": 0, "epochs": 0,
           "verdict": "not run in this sweep", "note": ""}  # fmt: skip
    if mine.empty:
        return out
    out["seeds"] = int(mine["seed"].nunique()) if "seed" in mine else 1
    out["epochs"] = int(mine["epoch"].max())
    if claim.kind == "count":
        counts = mine["param_count"].astype(float).unique()
        bounds = [b for b in (claim.low, claim.high) if b is not None]
        target = sum(bounds) / len(bounds)
        ours = float(counts[np.argmin(np.abs(counts - target))])
        out.update(ours=ours, ours_text=format_metric("param_count", ours))
        hit = bool(_in_range(np.asarray([ours]), claim.low, claim.high)[0])
        out["verdict"] = "reproduced" if hit else "not reproduced"
        if len(counts) > 1:
            out["note"] = f"{len(counts)} model sizes in the sweep; the closest shown"
        return out

    ok = mine.loc[~mine["diverged"].astype(bool)] if "diverged" in mine else mine
    values = ok[claim.metric].to_numpy(dtype=np.float64)
    values = values[np.isfinite(values)]
    if values.size == 0:
        out.update(verdict="not reproduced", note="every run diverged")
        return out
    if claim.kind == "at_most":
        ours = values.max()
    else:
        ours = values.max() if BARS[claim.task].larger_is_better else values.min()
    out.update(ours=float(ours), ours_text=format_metric(claim.metric, ours))
    short = claim.epochs is not None and out["epochs"] < claim.epochs
    trained = f"trained {out['epochs']} of the paper's {claim.epochs} epochs"
    inside = bool(_in_range(np.asarray([ours]), claim.low, claim.high)[0])

    if claim.kind == "at_most":
        if not inside:
            above = int((~_in_range(values, claim.low, claim.high)).sum())
            out.update(verdict="not reproduced",
                       note=f"{above} of {len(mine)} runs above the paper's bound")  # fmt: skip
        elif short:
            out.update(verdict="partial", note=f"bound held, but {trained}")
        else:
            out["verdict"] = "reproduced"
        return out

    if claim.kind == "reaches":
        runs = results.loc[results["run_id"].isin(mine["run_id"])]
        stats = bar_statistics(runs)
        ever, end = int(stats["ever_at_bar"].sum()), int(stats["at_bar_end"].sum())
        out["note"] = f"{end} of {len(stats)} runs at the bar at the end, {ever} at any evaluation"
        if end:
            out["verdict"] = "reproduced"
        elif ever:
            out["verdict"] = "partial"
        else:
            out["verdict"] = "not reproduced"
        if short and not end:
            out["note"] += f"; {trained}"
        return out

    # "about"
    if inside:
        out["verdict"] = "reproduced"
    else:
        side = "better" if _better(claim, ours) else "worse"
        out.update(verdict="not reproduced", note=f"{side} than the paper's range")
        if short:
            out["note"] += f"; {trained}"
    return out


def _better(claim: Claim, ours: float) -> bool:
    larger = BARS[claim.task].larger_is_better
    return (ours > (claim.high or -math.inf)) if larger else (ours < (claim.low or math.inf))


# --------------------------------------------------------------------------------------------
# Formatting

METRIC_LABELS: dict[str, str] = {
    "test_accuracy": "test accuracy (%)",
    "train_accuracy": "train accuracy (%)",
    "test_iou": "test IoU",
    "train_iou": "train IoU",
    "test_pixel_error": "test error (px)",
    "train_pixel_error": "train error (px)",
    "param_count": "parameters",
}


def format_metric(metric: str, value: float) -> str:
    """A metric value as the paper writes it: accuracy in percent, IoU as a fraction, pixels.

    100 % is printed only for an exact 100 %: 99.96 % is "99.96 %", never "100.0 %".
    """
    if value is None or not np.isfinite(value):
        return "-"
    if metric.endswith("accuracy"):
        percent = 100.0 * value
        text = f"{percent:.1f}"
        if percent < 1.0:
            text = f"{percent:.2f}"
        if value < 1.0 - _TOLERANCE and text.startswith("100"):
            text = f"{percent:.2f}" if f"{percent:.2f}" != "100.00" else ">99.99"
        elif value >= 1.0 - _TOLERANCE:
            text = "100"
        return f"{text} %"
    if metric.endswith("pixel_error"):
        return f"{value:.2f} px"
    if metric == "param_count":
        return f"{int(round(value)):,}"
    return f"{value:.3f}" if abs(value) < 1.0 or value == 1.0 else f"{value:.4g}"

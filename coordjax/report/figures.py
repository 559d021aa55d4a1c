"""The report's figures, drawn with matplotlib (Agg backend) in one style.

Each function draws one PNG from DataFrames or arrays and returns its path, or None when the data
it needs is absent. Accuracies are plotted in percent, IoU as a fraction, errors in pixels.
"""

from __future__ import annotations

import contextlib
import pathlib

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.collections import LineCollection  # noqa: E402
from matplotlib.ticker import FuncFormatter, NullFormatter  # noqa: E402

from coordjax import paper  # noqa: E402

STYLE = {
    "figure.dpi": 110,
    "savefig.dpi": 110,
    "savefig.bbox": "tight",
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.labelsize": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "grid.linewidth": 0.6,
    "legend.fontsize": 8,
    "legend.frameon": False,
    "image.interpolation": "nearest",
}
COLORS = {"deconv": "#1f77b4", "conv": "#1f77b4", "coordconv": "#d95f02"}
OTHER_COLORS = ("#7570b3", "#1b9e77", "#e7298a", "#66a61e")
SPLITS = ("uniform", "quadrant")
LABELS = {"deconv": "Deconv", "conv": "Conv", "coordconv": "CoordConv"}


def color(family: str) -> str:
    if family in COLORS:
        return COLORS[family]
    return OTHER_COLORS[sum(map(ord, family)) % len(OTHER_COLORS)]


def label(family: str) -> str:
    return LABELS.get(family, family)


def families(table: pd.DataFrame) -> list[str]:
    """Families present, the paper's baseline first, CoordConv last."""
    order = {"deconv": 0, "conv": 1, "coordconv": 9}
    return sorted(table["family"].unique(), key=lambda f: (order.get(f, 5), f))


def splits(table: pd.DataFrame) -> list[str]:
    present = list(table["split"].unique())
    return [s for s in SPLITS if s in present] + sorted(s for s in present if s not in SPLITS)


def scale(metric: str) -> float:
    """Accuracies are plotted in percent."""
    return 100.0 if metric.endswith("accuracy") else 1.0


@contextlib.contextmanager
def _figure(path: pathlib.Path, nrows: int, ncols: int, size: tuple[float, float], **kw):
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(
            nrows, ncols, figsize=size, squeeze=False, layout="constrained", **kw
        )
        try:
            yield fig, axes
            fig.savefig(path)
        finally:
            plt.close(fig)


def size_vs_metric(final: pd.DataFrame, task: str, path: pathlib.Path) -> pathlib.Path | None:
    """Fig S2: parameters (log) vs final test metric, one point per model, a panel per split.

    The best model at each size is joined into a frontier line per family. Runs that successive
    halving stopped at a rung are drawn hollow (their last evaluation) and kept off the line.
    """
    table = final.loc[(final["task"] == task) & ~final["diverged"]]
    if table.empty:
        return None
    stopped = table["status"].eq("pruned") if "status" in table else table["diverged"] & False
    metric = paper.BARS[task].metric
    k = scale(metric)
    panels = splits(table)
    with _figure(path, 1, len(panels), (4.2 * len(panels), 3.4), sharey=True) as (fig, axes):
        for ax, split in zip(axes[0], panels, strict=True):
            here = table.loc[table["split"] == split]
            for family in families(here):
                everyone = here.loc[here["family"] == family]
                gone = everyone.loc[stopped.loc[everyone.index]]
                if len(gone):  # successive halving stopped them at a rung: hollow markers
                    ax.scatter(gone["param_count"], k * gone[metric], s=14, alpha=0.6,
                               facecolors="none", edgecolors=color(family), linewidths=0.8,
                               label=f"{label(family)}: pruned ({len(gone)})")  # fmt: skip
                mine = everyone.loc[~stopped.loc[everyone.index]]
                if mine.empty:
                    continue
                ax.scatter(mine["param_count"], k * mine[metric], s=14, alpha=0.45,
                           color=color(family), edgecolors="none",
                           label=f"{label(family)} ({_models(len(mine))})")  # fmt: skip
                best = mine.groupby("param_count")[metric]
                best = best.max() if paper.BARS[task].larger_is_better else best.min()
                ax.plot(best.index, k * best.to_numpy(), "-o", ms=3.5, lw=1.2, color=color(family),
                        label=f"{label(family)}: best per size")  # fmt: skip
            _log_parameters(ax)
            ax.set_title(f"{split} split")
            ax.set_xlabel("parameters (log scale)")
            ax.legend(loc="best")
        axes[0, 0].set_ylabel(f"final {paper.METRIC_LABELS[metric]}")
        if paper.BARS[task].larger_is_better:
            axes[0, 0].set_ylim(*_limits(np.asarray([]), metric))
        _bar_line(axes[0], task)
    return path


def _models(n: int) -> str:
    return f"{n} model" if n == 1 else f"{n} models"


def _log_parameters(ax) -> None:
    """Log x axis of parameter counts, labelled 10k / 100k / 1M at the decades only."""
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(FuncFormatter(_count_label))
    ax.xaxis.set_minor_formatter(NullFormatter())


def _count_label(value: float, _position=None) -> str:
    for size, suffix in ((1e6, "M"), (1e3, "k")):
        if value >= size:
            return f"{value / size:g}{suffix}"
    return f"{value:g}"


def _bar_line(axes, task: str) -> None:
    bar = paper.BARS[task]
    value = bar.low if bar.low is not None else bar.high
    for ax in np.ravel(axes):
        ax.axhline(scale(bar.metric) * value, color="0.4", lw=0.8, ls=":", zorder=0)


def test_vs_train(
    final: pd.DataFrame, results: pd.DataFrame, task: str, path: pathlib.Path
) -> pathlib.Path | None:
    """Fig 4 / Fig 6: final test vs train metric per split, and test metric vs wall time.

    The right panel follows the uniform-split runs whose final test metric is within 80 % of the
    bar (the paper's "final test accuracy >= 0.8"), and always each family's best one.
    """
    table = final.loc[(final["task"] == task) & ~final["diverged"]]
    metric = paper.BARS[task].metric
    train = metric.replace("test_", "train_")
    if table.empty or train not in table:
        return None
    k = scale(metric)
    panels = splits(table)
    with _figure(path, 1, len(panels) + 1, (3.6 * (len(panels) + 1), 3.4)) as (fig, axes):
        for ax, split in zip(axes[0], panels, strict=False):
            here = table.loc[table["split"] == split]
            for family in families(here):
                mine = here.loc[here["family"] == family]
                ax.scatter(k * mine[train], k * mine[metric], s=16, alpha=0.6, color=color(family),
                           edgecolors="none", label=f"{label(family)} ({len(mine)})")  # fmt: skip
            lo, hi = _limits(k * here[[train, metric]].to_numpy(), metric)
            ax.plot(
                [lo, hi], [lo, hi], color="0.6", lw=0.8, ls="--", zorder=0, label="test = train"
            )
            ax.set_xlim(lo, hi)
            ax.set_ylim(lo, hi)
            ax.set_title(f"{split} split: final test vs train")
            ax.set_xlabel(f"final {paper.METRIC_LABELS[train]}")
            ax.set_ylabel(f"final {paper.METRIC_LABELS[metric]}")
            ax.legend(loc="best")
        _time_panel(axes[0, -1], table, results, task)
    return path


def _limits(values: np.ndarray, metric: str) -> tuple[float, float]:
    """Axis limits: the whole range for accuracies (%) and IoU, the data's range otherwise."""
    if metric.endswith("accuracy"):
        return -3.0, 103.0
    if metric.endswith("iou"):
        return -0.03, 1.03
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return 0.0, 1.0
    lo, hi = float(finite.min()), float(finite.max())
    pad = 0.05 * max(hi - lo, 1e-3 * max(abs(hi), 1.0))
    return lo - pad, hi + pad


def _time_panel(ax, table: pd.DataFrame, results: pd.DataFrame, task: str) -> None:
    bar = paper.BARS[task]
    metric, k = bar.metric, scale(bar.metric)
    uniform = table.loc[table["split"] == "uniform"]
    if uniform.empty:
        uniform = table
    chosen = []
    for family in families(uniform):
        mine = uniform.loc[uniform["family"] == family].sort_values(metric, ascending=False)
        best = mine.iloc[0] if bar.larger_is_better else mine.iloc[-1]
        good = mine.loc[mine[metric] >= 0.8 * bar.low] if bar.larger_is_better else mine.iloc[:0]
        chosen += [(family, best["run_id"], True)]
        chosen += [(family, r, False) for r in good["run_id"] if r != best["run_id"]][:8]
    seconds = model_seconds(results)
    for family, run_id, is_best in chosen:
        mine = results["run_id"] == run_id
        history = results.loc[mine].assign(seconds=seconds[mine]).sort_values("epoch")
        ax.plot(history["seconds"], k * history[metric], "-o" if is_best else "-", ms=3,
                lw=1.4 if is_best else 0.7, alpha=1.0 if is_best else 0.5, color=color(family),
                label=f"{label(family)} best" if is_best else None)  # fmt: skip
    _time_axis(ax, seconds[results["run_id"].isin([c[1] for c in chosen])])
    ax.set_title(f"{uniform['split'].iloc[0]} split: best runs over time")
    ax.set_ylabel(paper.METRIC_LABELS[metric])
    if bar.larger_is_better:
        ax.set_ylim(*_limits(np.asarray([]), metric))
    ax.axhline(k * (bar.low if bar.low is not None else bar.high), color="0.4", lw=0.8, ls=":")
    ax.legend(loc="best")


def model_seconds(results: pd.DataFrame) -> pd.Series:
    """Each row's training seconds per model: its run's share of its bucket's ``wall_time``.

    The models of a bucket train together (M at once), so a bucket's seconds are shared: the
    share is the bucket's seconds x the run's ``step`` / the bucket's ``bucket_model_steps``
    (its model-steps so far), or the bucket's seconds / its runs in a results table without that
    column. A bucket that grows from 1 to M models divides its time by M: a model is not drawn
    M times slower for the company it trained in.
    """
    wall = results["wall_time"].astype(float)
    if "bucket_model_steps" in results:
        spent = results["bucket_model_steps"].astype(float)
        share = results["step"].astype(float) / spent.where(spent > 0)
    else:
        share = 1.0 / results.groupby("bucket_id")["run_id"].transform("nunique")
    return (wall * share).fillna(wall)


def _time_axis(ax, seconds: pd.Series) -> None:
    """Log scale when the times span more than a decade (the paper's Fig 4 / 6), else linear."""
    seconds = seconds[seconds > 0]
    if len(seconds) and seconds.max() / seconds.min() > 10:
        ax.set_xscale("log")
        ax.set_xlabel("training seconds per model (log scale)")
    else:
        ax.set_xlabel("training seconds per model")


def training_curves(results: pd.DataFrame, best: pd.DataFrame, path: pathlib.Path):
    """Test metric vs epoch for the best run of each family x split; a row per task.

    ``best``: :func:`coordjax.paper.summary.best_per_family`. The paper's bar is dotted.
    """
    if best.empty:
        return None
    tasks = [t for t in ("classification", "rendering", "regression") if t in set(best["task"])]
    panels = [(t, s) for t in tasks for s in splits(best.loc[best["task"] == t])]
    ncols = max(sum(1 for p in panels if p[0] == t) for t in tasks)
    with _figure(path, len(tasks), ncols, (4.0 * ncols, 3.0 * len(tasks))) as (fig, axes):
        for row, task in enumerate(tasks):
            metric = paper.BARS[task].metric
            k = scale(metric)
            mine = [s for t, s in panels if t == task]
            for col in range(ncols):
                ax = axes[row, col]
                if col >= len(mine):
                    ax.set_visible(False)
                    continue
                split = mine[col]
                here = best.loc[(best["task"] == task) & (best["split"] == split)]
                here = here.set_index("family", drop=False).loc[families(here)]
                for _, b in here.iterrows():
                    history = results.loc[results["run_id"] == b["best_run"]].sort_values("epoch")
                    ax.plot(history["epoch"], k * history[metric], "-o", ms=2.5, lw=1.2,
                            color=color(b["family"]), label=label(b["family"]))  # fmt: skip
                _bar_line([ax], task)
                if metric.endswith("pixel_error"):
                    ax.set_yscale("log")
                ax.set_title(f"{task}, {split} split")
                ax.set_xlabel("epoch")
                ax.set_ylabel(paper.METRIC_LABELS[metric])
                ax.legend(loc="best")
    return path


def bar_reached(counts: pd.DataFrame, path: pathlib.Path) -> pathlib.Path | None:
    """Per task x family x split: runs at the paper's bar at any evaluation vs at the end.

    ``counts``: :func:`coordjax.paper.bar_counts`.
    """
    if counts.empty:
        return None
    labels = [f"{t}\n{label(f)}, {s}" for t, f, s in
              zip(counts["task"], counts["family"], counts["split"], strict=True)]  # fmt: skip
    y = np.arange(len(counts))
    runs = counts["runs"].to_numpy(dtype=float)
    ever = counts["ever_at_bar"].to_numpy(dtype=float)
    end = counts["at_bar_end"].to_numpy(dtype=float)
    height = max(1.8, 0.55 * len(counts) + 0.8)
    with _figure(path, 1, 1, (6.4, height)) as (fig, axes):
        ax = axes[0, 0]
        ax.barh(y - 0.18, 100 * ever / runs, 0.36, color="#7fa7d0", label="at any evaluation")
        ax.barh(y + 0.18, 100 * end / runs, 0.36, color="#1f4e79", label="at the last evaluation")
        for i in range(len(counts)):
            ax.text(100 * ever[i] / runs[i] + 1, y[i] - 0.18, f"{ever[i]:.0f}/{runs[i]:.0f}",
                    va="center", fontsize=7)  # fmt: skip
            ax.text(100 * end[i] / runs[i] + 1, y[i] + 0.18, f"{end[i]:.0f}/{runs[i]:.0f}",
                    va="center", fontsize=7)  # fmt: skip
        ax.set_yticks(y, labels)
        ax.invert_yaxis()
        ax.set_xlim(0, 115)
        ax.set_xlabel("runs at the paper's bar (% of the group's runs)")
        ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=2)
        ax.grid(axis="y", visible=False)
    return path


def probability_sums(panels: list[tuple[str, str, str, np.ndarray]], path: pathlib.Path):
    """Fig 5 (left): sums of maps over a set, each scaled to the full black-to-white range.

    ``panels``: ``[(row key, column key, title, (64, 64) array), ...]``; rows and columns in
    order of first appearance.
    """
    if not panels:
        return None
    columns = list(dict.fromkeys(c for _, c, _, _ in panels))
    rows = list(dict.fromkeys(r for r, _, _, _ in panels))
    with _figure(path, len(rows), len(columns), (2.3 * len(columns), 2.4 * len(rows))) as (
        fig,
        axes,
    ):
        for ax in axes.ravel():
            ax.set_axis_off()
        for row, col, title, image in panels:
            ax = axes[rows.index(row), columns.index(col)]
            span = float(image.max() - image.min())
            ax.imshow((image - image.min()) / (span if span > 0 else 1.0), cmap="gray",
                      vmin=0, vmax=1)  # fmt: skip
            ax.set_title(title, fontsize=8)
    return path


def render_samples(rows: list[tuple[str, list[tuple[str, np.ndarray]]]], path: pathlib.Path):
    """Fig 6 / S4-S5 samples: per row, images side by side (target, probabilities, painted).

    ``rows``: ``[(row label, [(column label, (64, 64) array in [0, 1]), ...]), ...]``.
    """
    if not rows:
        return None
    ncols = max(len(images) for _, images in rows)
    with _figure(path, len(rows), ncols, (1.9 * ncols, 2.0 * len(rows))) as (fig, axes):
        for ax in axes.ravel():
            ax.set_axis_off()
        for i, (row_label, images) in enumerate(rows):
            for j, (col_label, image) in enumerate(images):
                axes[i, j].imshow(image, cmap="gray", vmin=0, vmax=1)
                axes[i, j].set_title(col_label if i == 0 else "", fontsize=8)
            axes[i, 0].text(-6, 32, row_label, rotation=90, ha="right", va="center", fontsize=8)
    return path


def regression_scatter(panels: list[dict], path: pathlib.Path) -> pathlib.Path | None:
    """True vs predicted centres: a segment from each true centre to its prediction.

    ``panels``: dicts with ``family``, ``split``, ``side`` ("train" / "test"), ``true`` and
    ``pred`` ((N, 2) pixel coordinates [x, y]) and ``error`` (mean pixel error); one row per
    family, one column per split and side.
    """
    if not panels:
        return None
    rows = list(dict.fromkeys(p["family"] for p in panels))
    columns = list(dict.fromkeys((p["split"], p["side"]) for p in panels))
    size = (2.7 * len(columns), 2.8 * len(rows))
    with _figure(path, len(rows), len(columns), size, sharex=True, sharey=True) as (fig, axes):
        for ax in axes.ravel():
            ax.set_visible(False)
        for p in panels:
            ax = axes[rows.index(p["family"]), columns.index((p["split"], p["side"]))]
            ax.set_visible(True)
            true, pred = p["true"], p["pred"]
            segments = np.stack([true, pred], axis=1)
            ax.add_collection(LineCollection(segments, colors=color(p["family"]), lw=0.4,
                                             alpha=0.5))  # fmt: skip
            ax.scatter(pred[:, 0], pred[:, 1], s=1.5, color=color(p["family"]), edgecolors="none")
            ax.set_xlim(0, 64)
            ax.set_ylim(64, 0)  # image convention: row 0 at the top
            ax.set_aspect("equal")
            ax.set_title(f"{label(p['family'])}, {p['split']} {p['side']}\n"
                         f"mean error {p['error']:.2f} px", fontsize=8)  # fmt: skip
            ax.set_xlabel("x (column, px)")
            ax.set_ylabel("y (row, px)")
    return path

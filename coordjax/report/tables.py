"""The report's tables as DataFrames, and a Markdown renderer for them. Pure pandas."""

from __future__ import annotations

import numpy as np
import pandas as pd

from coordjax import paper
from coordjax.paper import summary
from coordjax.report.source import SweepRecord

SPLIT_ORDER = {"uniform": 0, "quadrant": 1}
# Each model's shape arguments, as coordjax.models.MODELS declares them (a test checks); kept
# here so that tables need not import the models (and JAX).
SHAPE_ARGS = {
    "deconv_painter": ("filter_size", "channel_mult"),
    "deconv_painter_nobn": ("filter_size", "channel_mult"),
    "coordconv_classifier": ("channel_mult",),
    "coordconv_renderer": ("filter_size", "channel_mult"),
    "conv_regressor_uniform": ("channel_mult",),
    "conv_regressor_quadrant": ("channel_mult",),
    "coordconv_regressor": (),
    "tiny": ("channel_mult",),
}
TASK_ORDER = {"classification": 0, "rendering": 1, "regression": 2}
FAMILY_ORDER = {"deconv": 0, "conv": 1, "coordconv": 9}  # the paper's baseline first


def markdown(table: pd.DataFrame, *, align_right: tuple[str, ...] = ()) -> str:
    """A GitHub Markdown table; ``|`` in cells is escaped."""
    columns = [str(c) for c in table.columns]
    lines = [
        "| " + " | ".join(columns) + " |",
        "|" + "|".join("---:" if c in align_right else "---" for c in columns) + "|",
    ]
    for row in table.itertuples(index=False):
        cells = ["" if _missing(v) else str(v).replace("|", "\\|") for v in row]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value))


def paper_vs_ours(record: SweepRecord) -> pd.DataFrame:
    """Every claim of :data:`coordjax.paper.CLAIMS`: the paper, ours, the verdict.

    Columns: claim, paper, source, judged as, ours, runs (seeds), epochs, verdict, note.
    """
    table = paper.verdicts(record.results)
    return pd.DataFrame(
        {
            "claim": [_claim_name(r) for r in table.itertuples()],
            "paper": table["paper"],
            "source": table["source"],
            "judged as": table["criterion"],
            "ours": table["ours_text"],
            "runs (seeds)": [
                "-" if r.runs == 0 else f"{r.runs} ({r.seeds})" for r in table.itertuples()
            ],
            "epochs": [("-" if r.runs == 0 else str(r.epochs)) for r in table.itertuples()],
            "verdict": [f"**{v}**" for v in table["verdict"]],
            "note": table["note"],
        }
    )


def _claim_name(row) -> str:
    what = "parameters" if row.metric == "param_count" else paper.METRIC_LABELS[row.metric]
    split = "" if row.split == "both" else f", {row.split}"
    return f"{row.task}: {row.family}{split}: {what}"


def best_models(record: SweepRecord) -> pd.DataFrame:
    """Best run per task x family x split (last evaluation) with its hyperparameters."""
    best = summary.best_per_family(record.results)
    if best.empty:
        return best
    best = ordered(best)
    config = record.final.set_index("run_id")
    rows = []
    for _, b in best.iterrows():
        metric, _ = summary.PRIMARY_METRIC[b["task"]]
        train = metric.replace("test_", "train_")
        run = config.loc[b["best_run"]]
        rows.append(
            {
                "task": b["task"],
                "family": b["family"],
                "split": b["split"],
                "runs": int(b["models"]),
                "params": f"{b['params']:,}",
                "filter size": _shape(run, "filter_size"),
                "channels x": _shape(run, "channel_mult"),
                "batch": int(b["batch_size"]),
                "lr": f"{b['lr']:g}",
                "l2": f"{b['l2']:g}",
                "schedule": run.get("schedule", ""),
                "seed": int(run["seed"]) if "seed" in run else "",
                "epoch": int(b["epoch"]),
                "test": paper.format_metric(metric, b[metric]),
                "train": paper.format_metric(train, b[train]),
                "peak test (epoch)": f"{paper.format_metric(metric, b[f'peak_{metric}'])} "
                f"({b['peak_epoch']})",
                "run": f"`{b['best_run']}`",
            }
        )
    return pd.DataFrame(rows)


def _shape(run: pd.Series, key: str):
    """A shape argument of the run's model, or "-" when the model has no such argument."""
    if key not in run or key not in SHAPE_ARGS.get(run["model"], (key,)):
        return "-"
    return int(run[key])


def _rate(steps: int, seconds: float) -> str:
    return f"{steps / seconds:,.3g}" if seconds > 0 else "-"


def ordered(table: pd.DataFrame) -> pd.DataFrame:
    """Rows in the paper's order: classification, rendering, regression; uniform, quadrant."""
    keys = table.assign(
        _t=table["task"].map(TASK_ORDER).fillna(9),
        _f=table["family"].map(FAMILY_ORDER).fillna(5),
        _s=table["split"].map(SPLIT_ORDER).fillna(9),
    )
    return keys.sort_values(["_t", "_f", "family", "_s"]).drop(columns=["_t", "_f", "_s"])


def bar_table(record: SweepRecord) -> pd.DataFrame:
    """Per task x family x split: runs at the paper's bar at any evaluation vs at the end."""
    counts = paper.bar_counts(paper.bar_statistics(record.results))
    if counts.empty:
        return counts
    counts = ordered(counts)
    return pd.DataFrame(
        {
            "task": counts["task"],
            "family": counts["family"],
            "split": counts["split"],
            "bar": [paper.BARS[t].label for t in counts["task"]],
            "runs": counts["runs"].astype(int),
            "at the bar at any evaluation": counts["ever_at_bar"].astype(int),
            "at the bar at the end": counts["at_bar_end"].astype(int),
            "median first epoch at the bar": [
                "-" if np.isnan(e) else f"{e:g}" for e in counts["median_first_epoch"]
            ],
        }
    )


def sensitivity(record: SweepRecord, rows: str, columns: str) -> list[tuple[str, pd.DataFrame]]:
    """Final test metric by two hyperparameters, per task x family x split.

    Each cell is the best run's last evaluation over the other axes (seeds, batch sizes, ...).
    Only groups where both axes take more than one value, or one takes several, are shown.

    Returns:
      ``[(title, table), ...]``: a table with ``rows`` down and ``columns`` across, formatted.
    """
    out = []
    final = record.final.loc[~record.final["diverged"]]
    if rows not in final or columns not in final:
        return out
    for (task, family, split), group in final.groupby(["task", "family", "split"]):
        if task not in paper.BARS:
            continue
        if group[rows].nunique() * group[columns].nunique() < 2:
            continue
        bar = paper.BARS[task]
        pivot = group.pivot_table(
            index=rows, columns=columns, values=bar.metric,
            aggfunc="max" if bar.larger_is_better else "min",
        )  # fmt: skip
        text = pivot.map(lambda v, metric=bar.metric: paper.format_metric(metric, v))
        text.index = [f"{rows} {v:g}" for v in text.index]
        text.columns = [f"{columns} {v:g}" for v in text.columns]
        text = text.reset_index(names="")
        title = f"{task}, {family}, {split}: {paper.METRIC_LABELS[bar.metric]}"
        out.append((title, text))
    return sorted(out, key=lambda item: item[0])


def diverged(record: SweepRecord) -> pd.DataFrame:
    """Runs flagged diverged at their last evaluation, with their hyperparameters."""
    bad = record.final.loc[record.final["diverged"]]
    columns = ["run_id", "task", "family", "split", "filter_size", "channel_mult", "batch_size",
               "lr", "l2", "seed", "diverged_step"]  # fmt: skip
    return ordered(bad[[c for c in columns if c in bad]]).reset_index(drop=True)


def cost(record: SweepRecord) -> tuple[pd.DataFrame, pd.DataFrame]:
    """What the sweep cost: a key/value overview and one row per bucket.

    Wall time is the bucket's training time (its models train together in one program); the
    sweep's is their sum. Model-steps are optimizer updates summed over models.
    """
    config = record.config
    final = record.final
    buckets = []
    for bucket in config.get("plan", []):
        mine = final.loc[final["bucket_id"] == bucket["bucket_id"]] if "bucket_id" in final else []
        wall = float(mine["wall_time"].max()) if len(mine) else 0.0
        steps = int(mine["step"].sum()) if len(mine) else 0
        strategy = mine["strategy"].iloc[0] if len(mine) and "strategy" in mine else "-"
        static = bucket.get("static", {})
        buckets.append(
            {
                "bucket": bucket["bucket_id"],
                "model": static.get("model", "?"),
                "models": bucket.get("num_models", len(bucket.get("run_ids", []))),
                "padded": ", ".join(bucket.get("padded", [])) or "-",
                "strategy": strategy,
                "wall time (s)": f"{wall:.1f}",
                "model-steps": f"{steps:,}",
                "model-steps/s": _rate(steps, wall),
            }
        )
    per_bucket = pd.DataFrame(buckets)
    compiles = 0
    for bucket in config.get("plan", []):
        static = bucket.get("static", {})
        epochs, every = int(static.get("epochs", 1)), int(static.get("eval_every", 1))
        compiles += 1 + (1 if epochs // every else 0) + (1 if epochs % every else 0)
    wall = sum(float(b["wall time (s)"]) for b in buckets)
    steps = int(final["step"].sum()) if "step" in final else 0
    pruning_rows = []
    if record.pruning and "bucket_model_steps" in record.results:
        # What the buckets' programs trained (compacted stacks, their padding included) against
        # the same grid trained to the end.
        spent = record.results.groupby("bucket_id")["bucket_model_steps"].max().sum()
        unpruned = sum(
            b.get("num_models", 0) * int(b.get("static", {}).get("epochs", 0))
            * int(b.get("steps_per_epoch", 0))
            for b in config.get("plan", [])
        )  # fmt: skip
        saving = f" ({unpruned / spent:.2f}x fewer)" if spent else ""
        pruning_rows = [
            ("model-steps spent by the programs (padding included)", f"{int(spent):,}"),
            ("model-steps of the same grid unpruned", f"{unpruned:,}{saving}"),
            ("runs pruned at a rung", str(len(record.pruned))),
        ]
    versions = config.get("versions", {})
    engine = config.get("engine", {})
    overview = pd.DataFrame(
        [
            ("models (finished / planned)", f"{len(record.finished)} / {len(record.planned)}"),
            ("buckets", str(len(buckets))),
            ("compiled programs (init + one per chunk length, per bucket)", str(compiles)),
            ("training wall time, sum over buckets", f"{wall:.1f} s"),
            ("model-steps", f"{steps:,}"),
            ("model-steps/s", _rate(steps, wall)),
            *pruning_rows,
            ("device", f"{config.get('device_kind', '?')} x {len(config.get('devices', []))}"),
            ("engine", ", ".join(f"{k}={v}" for k, v in engine.items())),
            ("versions", ", ".join(f"{k} {v}" for k, v in versions.items())),
        ],
        columns=["", "value"],
    )
    return overview, per_bucket

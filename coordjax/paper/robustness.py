"""How robust a result is across seeds: runs at the paper's bar per recipe variant and split.

The paper reports one run per setting (seed 0). A robustness sweep (e.g. ``classification``
preset ``robustness``) trains many seeds and learning rates per recipe variant (its grids); this
module counts, per grid (variant), split and learning rate, how many runs met the paper's bar
(:data:`coordjax.paper.BARS`) at any evaluation and at the last one, the mean share of
evaluations at the bar, and the median first epoch at the bar. Pure pandas, no JAX.

    python -m coordjax.paper.robustness WORKDIR [--by-lr | --by KEY[,KEY...]]
"""

from __future__ import annotations

import argparse
import pathlib
import sys

import pandas as pd

from coordjax import paper

COLUMNS = (
    "task", "variant", "split", "runs", "ever_at_bar", "at_bar_end", "mean_fraction_at_bar",
    "median_first_epoch", "epochs",
)  # fmt: skip


def robustness_table(results: pd.DataFrame, *, by: tuple[str, ...] = ()) -> pd.DataFrame:
    """Per (task, variant = grid, split, *by): runs at the paper's bar.

    Args:
      results: a sweep's results (one row per model per evaluation) with ``run_id``, ``task``,
        ``grid``, ``split``, ``epoch`` and each task's bar metric (see
        :func:`coordjax.paper.bar_statistics`).
      by: further config columns to split on (e.g. ``("lr",)``).

    Returns:
      :data:`COLUMNS` (with ``by`` after ``split``): ``runs``, ``ever_at_bar`` and
      ``at_bar_end`` counts (ints), ``mean_fraction_at_bar`` (mean over runs of the share of
      their evaluations at the bar), ``median_first_epoch`` (NaN when no run got there) and
      ``epochs`` (the longest run's last epoch).
    """
    columns = [*COLUMNS[:3], *by, *COLUMNS[3:]]
    stats = paper.bar_statistics(results)
    if stats.empty:
        return pd.DataFrame(columns=columns)
    config = results.drop_duplicates("run_id").set_index("run_id")
    stats["variant"] = stats["run_id"].map(config["grid"])
    for key in by:
        stats[key] = stats["run_id"].map(config[key])
    grouped = stats.groupby(["task", "variant", "split", *by], sort=True)
    table = grouped.agg(
        runs=("run_id", "size"),
        ever_at_bar=("ever_at_bar", "sum"),
        at_bar_end=("at_bar_end", "sum"),
        mean_fraction_at_bar=("fraction_at_bar", "mean"),
        median_first_epoch=("first_epoch_at_bar", "median"),
        epochs=("final_epoch", "max"),
    ).reset_index()
    return table[columns]


def robustness_text(results: pd.DataFrame, *, by: tuple[str, ...] = ()) -> str:
    """:func:`robustness_table` as plain text, with the bar each task is judged by."""
    table = robustness_table(results, by=by)
    if table.empty:
        return "no runs of a task with a bar"
    bars = [f"{t}: {paper.BARS[t].label}" for t in sorted(table["task"].unique())]
    text = table.to_string(index=False, float_format=lambda v: f"{v:.3g}")
    return "\n".join([text, "", "bar (test metric, per evaluation): " + "; ".join(bars)])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m coordjax.paper.robustness",
        description="runs at the paper's bar per variant and split",
    )
    parser.add_argument("workdir", type=pathlib.Path)
    split_on = parser.add_mutually_exclusive_group()
    split_on.add_argument("--by-lr", action="store_true", help="also split by learning rate")
    split_on.add_argument(
        "--by", default="", metavar="KEYS",
        help="also split by these run-config columns, comma-separated (e.g. seed,order_seed)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    path = args.workdir / "results.csv"
    if not path.is_file():
        print(f"coordjax: no results.csv in {args.workdir}", file=sys.stderr)  # noqa: T201
        return 2
    results = pd.read_csv(path)
    by = ("lr",) if args.by_lr else tuple(k for k in args.by.split(",") if k)
    unknown = [k for k in by if k not in results.columns]
    if unknown:
        print(f"coordjax: --by must name columns of {path}; got {unknown}",  # noqa: T201
              file=sys.stderr)  # fmt: skip
        return 2
    print(robustness_text(results, by=by))  # noqa: T201
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Successive halving against the same grid unpruned: wall time, model-steps, and the winners.

One grid of the paper's deconv painter (Fig S2's classification recipe: l2 1e-3, the step
schedule) trained twice through the engine, in one run, one after the other: unpruned, and with
rungs (default 10/20/40, keep 1/3, ranked by train accuracy within family x split). Reported:
wall time of each (compiles included: both pay them), model-steps trained (the engine's
``bucket_model_steps``, ladder padding included), the ratios, and whether the best run per
family and split (by final test accuracy, :func:`coordjax.paper.summary.best_per_family`) is the
same run both ways, with the two metrics.

    python benchmarks/pruning.py                 # 16 models (fs 2, c 1), 60 epochs
    python benchmarks/pruning.py --channels 1,2  # 32 models (about 3x longer)

Writes ``benchmarks/results/pruning-<device>.md`` and ``.json``; the workdirs stay in
``--workdir`` (rerunning resumes them, so an interrupted benchmark can be finished; delete them
for a fresh measurement).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time

import benchlib
import pandas as pd

from coordjax.paper.summary import best_per_family
from coordjax.sweep import EngineOptions, Grid, Prune, run_sweep, union

DEFAULT_OUT_DIR = pathlib.Path(__file__).resolve().parent / "results"
LRS = [0.001, 0.002, 0.005, 0.01]


def grid(epochs: int, channels: list[int]) -> Grid:
    base = {"task": "classification", "model": "deconv_painter", "filter_size": 2, "l2": 0.001,
            "epochs": epochs, "eval_every": 10, "schedule": "step", "lr_decay": 0.1,
            "lr_decay_every": 200, "lr_max_decays": 4}  # fmt: skip
    axes = {"channel_mult": channels, "batch_size": [16, 32], "lr": LRS,
            "split": ["uniform", "quadrant"]}  # fmt: skip
    if len(channels) == 1:
        base["channel_mult"] = channels[0]
        del axes["channel_mult"]
    return Grid("deconv", base=base, axes=axes)


def timed(sweep, workdir: pathlib.Path) -> tuple[pd.DataFrame, float]:
    tick = time.perf_counter()
    results = run_sweep(sweep, workdir, options=EngineOptions(progress=False))
    return results, time.perf_counter() - tick


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--rungs", default="10,20,40")
    parser.add_argument("--keep", type=float, default=1 / 3)
    parser.add_argument("--channels", default="1")
    parser.add_argument("--workdir", type=pathlib.Path, default=pathlib.Path("runs/bench-pruning"))
    parser.add_argument("--out-dir", type=pathlib.Path, default=DEFAULT_OUT_DIR)
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="rewrite the report from the last run's JSON timings and its workdirs (no training)",
    )
    args = parser.parse_args(argv)
    channels = [int(c) for c in args.channels.split(",")]
    rule = Prune(at=tuple(int(e) for e in args.rungs.split(",")), keep=args.keep)
    the_grid = grid(args.epochs, channels)
    json_path = benchlib.output_path(args.out_dir, "pruning").with_suffix(".json")
    if args.report_only:  # the measured run's timings and header; the workdirs' results
        saved = json.loads(json_path.read_text())
        header, (full_s, pruned_s) = saved["header"], saved["wall_s"].values()
        full, pruned = (pd.read_csv(args.workdir / n / "results.csv") for n in ("full", "pruned"))
    else:
        header = benchlib.environment_lines("Successive halving vs the unpruned grid")
        full, full_s = timed(union("bench-full", [the_grid]), args.workdir / "full")
        pruned, pruned_s = timed(
            union("bench-pruned", [the_grid], prune=rule), args.workdir / "pruned"
        )

    def spent(results):
        return int(results.groupby("bucket_id")["bucket_model_steps"].max().sum())

    steps = {"full": spent(full), "pruned": spent(pruned)}
    best = {name: best_per_family(r).set_index(["family", "split"])
            for name, r in (("full", full), ("pruned", pruned))}  # fmt: skip
    # The rule ranks by train accuracy: which run would it pick with every run trained to the end?
    by_train = {}
    last = full.loc[full["epoch"] == full["epochs"]].assign(family="deconv")
    for (family, split), group in last.groupby(["family", "split"]):
        top = group.sort_values(["train_accuracy", "run_id"], ascending=[False, True]).iloc[0]
        by_train[(family, split)] = (top["run_id"], float(top["train_accuracy"]))
    survivors = set(pruned.loc[pruned["status"] == "finished", "run_id"])
    winners = []
    for key, row in best["full"].iterrows():
        other = best["pruned"].loc[key]
        train_best, train_value = by_train[key]
        winners.append({
            "best_by_train_unpruned": train_best, "its_train_accuracy": train_value,
            "it_survived": train_best in survivors,
            "family": key[0], "split": key[1],
            "full_best": row["best_run"], "full_test_accuracy": float(row["test_accuracy"]),
            "pruned_best": other["best_run"], "pruned_test_accuracy": float(other["test_accuracy"]),
            "same_run": bool(row["best_run"] == other["best_run"]),
        })  # fmt: skip
    record = {
        "grid": the_grid.to_json(), "rule": rule.to_json(), "models": int(full["run_id"].nunique()),
        "wall_s": {"full": full_s, "pruned": pruned_s}, "model_steps": steps,
        "wall_ratio": full_s / pruned_s, "model_steps_ratio": steps["full"] / steps["pruned"],
        "winners": winners, "header": header,
    }  # fmt: skip
    lines = [
        *header,
        "",
        f"Grid: deconv painter fs 2, c {channels}, batch {{16, 32}}, lr {LRS}, both splits, "
        f"l2 1e-3, {args.epochs} epochs ({record['models']} models). Rule: rungs "
        f"{list(rule.at)}, keep {rule.keep:.3g} by train accuracy within family x split.",
        "",
        "| | unpruned | pruned | ratio |",
        "|---|---:|---:|---:|",
        f"| wall time (s, compiles included) | {full_s:,.0f} | {pruned_s:,.0f} | "
        f"{record['wall_ratio']:.2f}x |",
        f"| model-steps trained | {steps['full']:,} | {steps['pruned']:,} | "
        f"{record['model_steps_ratio']:.2f}x |",
        "",
        "Best run per family and split by final test accuracy "
        "(`coordjax.paper.summary.best_per_family`), and whether the run that the rule's own "
        "metric (train accuracy) ranks first when every run trains to the end survived:",
        "",
        "| family | split | unpruned best | test acc | pruned best | test acc | same run | "
        "best by train acc, unpruned | survived |",
        "|---|---|---|---:|---|---:|---|---|---|",
        *(
            f"| {w['family']} | {w['split']} | {w['full_best']} | {w['full_test_accuracy']:.3f} | "
            f"{w['pruned_best']} | {w['pruned_test_accuracy']:.3f} | "
            f"{'yes' if w['same_run'] else 'no'} | {w['best_by_train_unpruned']} "
            f"({w['its_train_accuracy']:.3f}) | {'yes' if w['it_survived'] else 'no'} |"
            for w in winners
        ),  # fmt: skip
    ]
    report = "\n".join(lines) + "\n"
    benchlib.write_report(args.out_dir, "pruning", report)
    json_path.write_text(json.dumps(record, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())

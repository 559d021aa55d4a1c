"""One process against N fanned-out processes on the same sweep: wall time, and equal results.

The same preset is run through the CLI twice, in one run of this script, one after the other:
by one process, then by ``--tasks`` processes started together with ``--task-index i
--task-count N`` on one shared workdir (``coordjax.sweep.fanout``). Reported: each wall time (from
launch to the last process's exit: imports, compiles and training included), their ratio, the
buckets each task trained, and whether the two results tables agree bit for bit (every column
but wall time).

    python benchmarks/fanout.py                          # classification smoke, 3 processes
    python benchmarks/fanout.py --sweep rendering --tasks 2

On one machine the processes share its cores: what fan-out buys here is overlapping one
process's imports and compiles with another's training. Across machines each task has its own.
Writes ``benchmarks/results/fanout-<device>.md`` and ``.json``.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import shutil
import subprocess
import sys
import time

import benchlib
import pandas as pd

DEFAULT_OUT_DIR = pathlib.Path(__file__).resolve().parent / "results"


def command(sweep: str, preset: str, workdir: pathlib.Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "coordjax.cli", "sweep", sweep, "--preset", preset,
            "--workdir", str(workdir), "--no-progress", "--no-report", *extra]  # fmt: skip


def timed(commands: list[list[str]]) -> float:
    """Starts every command at once; seconds until the last one exits (each must succeed)."""
    tick = time.perf_counter()
    workers = [subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
               for c in commands]  # fmt: skip
    for worker in workers:
        output = worker.communicate()[0]
        if worker.returncode:
            raise SystemExit(f"{' '.join(worker.args)} failed:\n{output[-2000:]}")
    return time.perf_counter() - tick


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sweep", default="classification")
    parser.add_argument("--preset", default="smoke")
    parser.add_argument("--tasks", type=int, default=3)
    parser.add_argument("--workdir", type=pathlib.Path, default=pathlib.Path("runs/bench-fanout"))
    parser.add_argument("--out-dir", type=pathlib.Path, default=DEFAULT_OUT_DIR)
    args = parser.parse_args(argv)
    if args.tasks < 1:
        parser.error(f"--tasks must be >= 1; got {args.tasks}")
    single, fanned = args.workdir / "single", args.workdir / "fanned"
    for workdir in (single, fanned):  # a fresh measurement each time
        shutil.rmtree(workdir, ignore_errors=True)
    header = benchlib.environment_lines(f"One process vs {args.tasks} fanned-out processes")
    single_s = timed([command(args.sweep, args.preset, single)])
    fanned_s = timed(
        [command(args.sweep, args.preset, fanned, "--task-index", str(i), "--task-count",
                 str(args.tasks)) for i in range(args.tasks)]
    )  # fmt: skip
    trained = {}
    for marker in sorted((fanned / "claims").glob("*/*.done")):
        trained.setdefault(json.loads(marker.read_text())["task_index"], []).append(
            marker.parent.name
        )

    def table(workdir):
        results = pd.read_csv(workdir / "results.csv").drop(columns="wall_time")
        return results.sort_values(["run_id", "epoch"]).reset_index(drop=True)

    same = table(single).equals(table(fanned))
    record = {
        "sweep": args.sweep, "preset": args.preset, "tasks": args.tasks,
        "wall_s": {"single": single_s, "fanned": fanned_s}, "ratio": single_s / fanned_s,
        "buckets_by_task": {str(k): v for k, v in sorted(trained.items())},
        "results_equal": same, "header": header,
    }  # fmt: skip
    lines = [
        *header,
        "",
        f"`coordjax sweep {args.sweep} --preset {args.preset}`: one process, then {args.tasks} "
        "processes on one workdir (`--task-index i --task-count "
        f"{args.tasks}`), each wall time from launch to the last exit.",
        "",
        "| | one process | fanned out | ratio |",
        "|---|---:|---:|---:|",
        f"| wall time (s) | {single_s:.1f} | {fanned_s:.1f} | {record['ratio']:.2f}x |",
        "",
        "Buckets trained per task: "
        + "; ".join(f"task {k}: {len(v)}" for k, v in sorted(trained.items()))
        + f". Results tables equal bit for bit (all but wall time): {'yes' if same else 'NO'}.",
    ]
    benchlib.write_report(args.out_dir, "fanout", "\n".join(lines) + "\n")
    benchlib.output_path(args.out_dir, "fanout").with_suffix(".json").write_text(
        json.dumps(record, indent=1, default=str)
    )
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())

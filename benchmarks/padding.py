"""Shape axes: one bucket per shape vs one padded program (``EngineOptions(pad=...)``).

A grid over filter size or channel multiplier changes parameter shapes. The engine serves such
axes two ways: **bucketed** (one compiled program per distinct shape, its models vmapped inside)
or **padded** (one program of the largest shape; each smaller model is embedded exactly and
masked, ``coordjax.paper.padding``). Padding saves compiles and launches and keeps one large
vmapped batch, but every model pays for the largest shape's FLOPs. This benchmark measures both
for the paper's shape grids, through the engine's own planner and initialisation:

  renderer  CoordConv renderer, filter size {1, 2} x channel mult {1, 2} (Fig 6 grid, rendering
            task), 2 models per shape (lr 1e-3 and 5e-3);
  deconv    deconv painter, filter size {2, 3} x channel mult {1, 2} (part of Fig S2's grid,
            classification), 2 models per shape (``--full``: fs {2, 3, 4} x c {1, 2, 3}).

Per mode it reports the total compile time (ahead of time), the time of K train steps of all
models (each bucket's program called in turn: the engine's ``compiled_steps``, vmap lowering, the
program its ``"tune"`` strategy times; median of a few calls after a warm-up),
model-steps/s, the ratio padded / bucketed, and the largest difference of the K training losses
between the two modes (the padded models must train like the true ones).

    python benchmarks/padding.py            # writes benchmarks/results/padding-<device>.md
"""

from __future__ import annotations

import argparse
import pathlib
import statistics
import sys
import time
from collections.abc import Sequence

import benchlib
import jax
import numpy as np

from coordjax.sweep import Grid, plan, programs, union

K_STEPS = 5
REPEATS = 3
DEFAULT_OUT_DIR = pathlib.Path(__file__).resolve().parent / "results"
PAD = ("channel_mult", "filter_size")


def grids(full: bool) -> dict[str, Grid]:
    """The benchmarked shape grids (2 learning rates per shape, uniform split)."""
    deconv_fs, deconv_c = ([2, 3, 4], [1, 2, 3]) if full else ([2, 3], [1, 2])
    return {
        "renderer": Grid(
            "renderer",
            base={"task": "rendering", "loss": "sigmoid", "model": "coordconv_renderer",
                  "batch_size": 16, "l2": 0.001},
            axes={"filter_size": [1, 2], "channel_mult": [1, 2], "lr": [0.001, 0.005]},
        ),
        "deconv": Grid(
            "deconv",
            base={"task": "classification", "model": "deconv_painter", "batch_size": 16,
                  "l2": 0.001},
            axes={"filter_size": deconv_fs, "channel_mult": deconv_c, "lr": [0.002, 0.01]},
        ),
    }  # fmt: skip


def measure(buckets, repeats: int) -> dict:
    """Compiles and times every bucket's K-step program (the engine's ``compiled_steps``, vmap
    lowering, on the bucket as the engine initialises it); returns totals and losses."""
    compile_s, call_s, losses = 0.0, 0.0, {}
    for bucket in buckets:
        setup, data, runs, state, _ = programs.bucket_inputs(bucket, None)
        program = programs.compiled_steps(setup, K_STEPS, "vmap", 1, None, return_losses=True)
        tick = time.perf_counter()
        compiled = program.lower(data, runs, state).compile()
        compile_s += time.perf_counter() - tick
        _, out = jax.block_until_ready(compiled(data, runs, state))  # warm-up
        times = []
        for _ in range(repeats):
            tick = time.perf_counter()
            _, out = jax.block_until_ready(compiled(data, runs, state))
            times.append(time.perf_counter() - tick)
        call_s += statistics.median(times)
        for config, row in zip(bucket.runs, np.asarray(out), strict=True):
            losses[config["run_id"]] = row
    models = sum(b.num_models for b in buckets)
    return {"buckets": len(buckets), "models": models, "compile_s": compile_s, "call_s": call_s,
            "rate": models * K_STEPS / call_s, "losses": losses}  # fmt: skip


def table(results: dict[str, dict[str, dict]]) -> str:
    lines = [
        "| grid | mode | programs | models | compile (s) | K steps, all models (s) "
        "| model-steps/s | vs bucketed | max abs Δloss vs bucketed |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, modes in results.items():
        base = modes["bucketed"]
        for mode, r in modes.items():
            delta = max(
                float(np.max(np.abs(r["losses"][k] - base["losses"][k]))) for k in base["losses"]
            )
            lines.append(
                f"| {name} | {mode} | {r['buckets']} | {r['models']} | {r['compile_s']:.1f} "
                f"| {r['call_s']:.3f} | {r['rate']:.1f} | {r['rate'] / base['rate']:.2f}× "
                f"| {delta:.1e} |"
            )
    return "\n".join(lines)


def header(repeats: int, full: bool) -> str:
    return "\n".join([
        *benchlib.environment_lines("Shape axes: bucketed vs padded"),
        f"- K = {K_STEPS} train steps per call, batch 16, median of {repeats} calls after a "
        f"warm-up; grids: {'full' if full else 'small'} (see the script's docstring). Bucketed "
        "times are the sum over its programs. Compare ratios within this run.",
    ])  # fmt: skip


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--full", action="store_true", help="deconv fs {2,3,4} x c {1,2,3}")
    parser.add_argument("--grids", nargs="+", choices=["renderer", "deconv"])
    parser.add_argument("--repeats", type=int, default=REPEATS)
    parser.add_argument("--out-dir", type=pathlib.Path, default=DEFAULT_OUT_DIR)
    args = parser.parse_args(argv)
    head = header(args.repeats, args.full)
    results = {}
    for name, grid in grids(args.full).items():
        if args.grids and name not in args.grids:
            continue
        runs = union(name, [grid]).expand()
        results[name] = {}
        for mode, pad in (("bucketed", ()), ("padded", PAD)):
            results[name][mode] = measure(plan(runs, pad=pad), args.repeats)
            print(f"  {name} {mode}: {results[name][mode]['call_s']:.3f} s", file=sys.stderr)
    benchlib.write_report(args.out_dir, "padding", f"{head}\n\n{table(results)}\n")


if __name__ == "__main__":
    main()

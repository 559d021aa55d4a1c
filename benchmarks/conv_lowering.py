"""Convolution lowerings on one model's training step: ``lax`` vs ``matmul`` (coordjax.conv).

For each model and batch size, the engine's program of ``--steps`` training steps
(``coordjax.sweep.programs.compiled_steps``: ``train_step`` = forward, all gradients, Adam, in a
``lax.scan``, vmapped over the bucket's models) is compiled once per lowering, run
once to warm up, then timed ``--repeats`` times (best kept). Both lowerings run in this one
process, interleaved, so their *ratio* is meaningful even on a loaded machine; absolute steps/s
are not a benchmark result unless the machine was idle (the report records the load average).
With ``--models M > 1`` the step is vmapped over M models (a sweep bucket).

    python benchmarks/conv_lowering.py [--quick] [--models 1] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import functools
import pathlib
import time

import benchlib
import jax

from coordjax import conv, models
from coordjax.sweep import Grid, plan, programs, union

CASES = [
    ("deconv_painter", {"filter_size": 2, "channel_mult": 1}),
    ("deconv_painter", {"filter_size": 2, "channel_mult": 2}),
    ("deconv_painter", {"filter_size": 4, "channel_mult": 1}),
    ("deconv_painter", {"filter_size": 4, "channel_mult": 2}),
    ("coordconv_classifier", {}),
    ("conv_regressor_quadrant", {}),
]


def _program(name, kwargs, lowering, batch, steps, n_models):
    """The engine's ``steps``-step program (``compiled_steps``, vmap lowering) on a bucket of
    ``n_models`` models (seeds 0..M-1, uniform split) that the engine's planner builds."""
    kind = models.MODELS[name].input_kind
    base = {"task": "classification" if kind == "coords" else "regression", "model": name,
            "batch_size": batch, "lr": 1e-3, "l2": 1e-4, "epochs": 1, "eval_every": 1,
            **kwargs}  # fmt: skip
    grid = Grid(name, base=base, axes={"seed": list(range(n_models))})
    (bucket,) = plan(union(name, [grid]).expand())
    setup, data, runs, states, _ = programs.bucket_inputs(bucket, None, lowering)
    program = programs.compiled_steps(setup, steps, "vmap", 1, None)
    return functools.partial(program, data), runs, states


def _time(program, runs, states, repeats):
    tick = time.perf_counter()
    jax.block_until_ready(program(runs, states))  # compile + warm-up
    compile_s = time.perf_counter() - tick
    best = float("inf")
    for _ in range(repeats):
        tick = time.perf_counter()
        jax.block_until_ready(program(runs, states))
        best = min(best, time.perf_counter() - tick)
    return compile_s, best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="batch 16 only, 2 steps, 1 repeat")
    parser.add_argument("--models", type=int, default=1, help="models vmapped per program (M)")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", default=str(pathlib.Path(__file__).parent / "results"))
    args = parser.parse_args()
    batches = (16,) if args.quick else (16, 32)
    steps, repeats = (2, 1) if args.quick else (args.steps, args.repeats)
    lines = benchlib.environment_lines("Convolution lowerings: lax vs matmul, one training step")
    lines += [
        "",
        f"M = {args.models} model(s) per program, {steps} steps per timed scan, best of "
        f"{repeats}; both lowerings interleaved in one process: compare the ratio. "
        f"`auto` resolves to `{conv.resolve_lowering('auto')}` here.",
        "",
        "| model | batch | lax steps/s | matmul steps/s | matmul / lax | compile lax s | "
        "compile matmul s |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, kwargs in CASES:
        for batch in batches:
            rates, compiles = {}, {}
            for lowering in ("lax", "matmul"):
                program, runs, states = _program(name, kwargs, lowering, batch, steps, args.models)
                compiles[lowering], seconds = _time(program, runs, states, repeats)
                rates[lowering] = steps * args.models / seconds
            label = name + "".join(f" {k[0]}{v}" for k, v in kwargs.items())
            row = (
                f"| {label} | {batch} | {rates['lax']:.2f} | {rates['matmul']:.2f} | "
                f"**{rates['matmul'] / rates['lax']:.2f}x** | {compiles['lax']:.1f} | "
                f"{compiles['matmul']:.1f} |"
            )
            lines.append(row)
            print(row, flush=True)
    report = "\n".join(lines) + "\n"
    benchlib.write_report(pathlib.Path(args.out), f"conv_lowering-m{args.models}", report)


if __name__ == "__main__":
    main()

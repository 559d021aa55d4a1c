"""How to lower a bucket's model axis: a Python loop, ``jit(vmap)`` or ``lax.map``.

The sweep engine trains the models of a bucket (same shapes, different hyperparameters, seeds and
splits) in one program; ``EngineOptions.strategy`` picks how the model axis is lowered. Vmapped
convolutions become grouped convolutions, which can be slow, so this
benchmark measures, for M models of one bucket:

  loop  M calls of the engine's program for one model, one model at a time (the baseline);
  vmap  the engine's program with ``strategy="vmap"`` over the M stacked models;
  map   the engine's program with ``strategy="map"`` and ``k = max(1, M // 4)`` models per
        ``lax.map`` slice.

Every program is the engine's own (``coordjax.sweep.programs.compiled_steps``: K consecutive
``train_step``s on its fixed batch, the program its ``"tune"`` strategy times), on a bucket the
engine's planner builds and initialises, on the classification task. Each program is compiled
ahead of time (timed separately), called once to warm up, then timed over a few repetitions
(median). Every number in the output is measured in this one run, so compare the ratios, not
absolute times from different runs or machines.

    python benchmarks/strategies.py --quick       # M in {1, 4}
    python benchmarks/strategies.py               # M in {1, 4, 8}

Writes ``benchmarks/results/strategies-<device_kind>.md`` and prints the table.
"""

from __future__ import annotations

import argparse
import pathlib
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import benchlib
import jax
import numpy as np

from coordjax.sweep import Grid, plan, programs, union

TASK = "classification"
BATCH_SIZE = 16
K_STEPS = 5
REPEATS = 3
L2 = 1e-3
LRS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05)  # the classification sweep's learning rates
SPLITS = ("uniform", "quadrant")
MODEL_KWARGS: dict[str, dict[str, int]] = {
    "coordconv_classifier": {"channel_mult": 1},
    "deconv_painter": {"filter_size": 2, "channel_mult": 1},
}
STRATEGIES = ("loop", "vmap", "map")
FULL_SIZES = (1, 4, 8)
QUICK_SIZES = (1, 4)
DEFAULT_OUT_DIR = pathlib.Path(__file__).resolve().parent / "results"


class Result(NamedTuple):
    """One measurement: a strategy at a model count, with its compiled program's outputs."""

    model: str
    num_models: int
    strategy: str
    map_batch_size: int | None
    compile_s: float
    call_times_s: tuple[float, ...]
    losses: np.ndarray  # (M, K) training losses, to check the strategies agree


# --------------------------------------------------------------------------------------------
# Inputs


def make_bucket(model: str, num_models: int):
    """The engine's bucket of M models: lr cycles through the sweep's values, splits
    alternate, seed = index (one grid point per model, planned by the engine's planner)."""
    base = {"task": TASK, "model": model, "batch_size": BATCH_SIZE, "l2": L2, "epochs": 1,
            "eval_every": 1, **MODEL_KWARGS[model]}  # fmt: skip
    grids = [
        Grid(f"m{i}", base={**base, "lr": LRS[i % len(LRS)], "split": SPLITS[i % 2], "seed": i})
        for i in range(num_models)
    ]
    (bucket,) = plan(union("strategies", grids).expand())
    return bucket


def map_batch_size(num_models: int) -> int:
    """Models per ``lax.map`` slice: ``max(1, M // 4)``."""
    return max(1, num_models // 4)


def compile_timed(setup, strategy: str, k: int, args) -> tuple[Callable, float]:
    """The engine's K-step program for ``strategy``, AOT-compiled for ``args``, and the
    compile seconds; the program returns ``(states, (M, K) losses)``."""
    program = programs.compiled_steps(setup, K_STEPS, strategy, k, None, return_losses=True)
    tick = time.perf_counter()
    compiled = program.lower(*args).compile()
    return compiled, time.perf_counter() - tick


def loop_program(setup, inputs) -> tuple[Callable[[], np.ndarray], float]:
    """ "loop": M calls of the one-model program; returns a thunk giving (M, K) losses.

    Per-model inputs are sliced out before timing; the M calls are dispatched back to back.
    """
    num_models = inputs.runs.seed.shape[0]
    per_model = [
        jax.tree.map(lambda x, i=i: x[i : i + 1], (inputs.runs, inputs.states))
        for i in range(num_models)
    ]
    single, seconds = compile_timed(setup, "vmap", 1, (inputs.data, *per_model[0]))

    def call():
        outs = jax.block_until_ready([single(inputs.data, *args) for args in per_model])
        return np.concatenate([np.asarray(losses) for _, losses in outs])

    return call, seconds


def stacked_program(setup, inputs, strategy: str, k: int) -> tuple[Callable[[], Any], float]:
    """ "vmap" / "map": the engine's program over the M stacked models (data shared)."""
    args = (inputs.data, inputs.runs, inputs.states)
    compiled, seconds = compile_timed(setup, strategy, k, args)
    return lambda: jax.block_until_ready(compiled(*args))[1], seconds


def time_calls(call: Callable[[], Any], repeats: int) -> tuple[tuple[float, ...], np.ndarray]:
    """One warm-up call, then ``repeats`` timed calls; returns the times and the last output.

    ``call`` must block until its result is ready. Inputs are not donated, so every call starts
    from the same state and does the same work.
    """
    call()
    times = []
    for _ in range(repeats):
        tick = time.perf_counter()
        out = call()
        times.append(time.perf_counter() - tick)
    return tuple(times), np.asarray(out)


# --------------------------------------------------------------------------------------------
# Driver


def bench_model(model: str, sizes: Sequence[int], repeats: int) -> list[Result]:
    """Every strategy at every M for one model, logging progress to stderr."""
    results = []
    for num_models in sizes:
        inputs = programs.bucket_inputs(make_bucket(model, num_models), None)
        setup = inputs.setup
        k = map_batch_size(num_models)
        contenders = {
            "loop": loop_program(setup, inputs),
            "vmap": stacked_program(setup, inputs, "vmap", k),
            "map": stacked_program(setup, inputs, "map", k),
        }
        for strategy in STRATEGIES:
            call, compile_s = contenders[strategy]
            times, losses = time_calls(call, repeats)
            result = Result(
                model,
                num_models,
                strategy,
                k if strategy == "map" else None,
                compile_s,
                times,
                losses,
            )
            results.append(result)
            print(
                f"  {model} M={num_models} {strategy}: {statistics.median(times):.3f} s/call",
                file=sys.stderr,
                flush=True,
            )
    return results


def throughput(result: Result) -> float:
    """Model-steps per second: M * K over the median call time."""
    return result.num_models * K_STEPS / statistics.median(result.call_times_s)


def format_rate(value: float) -> str:
    """A throughput with about three significant digits, without scientific notation."""
    return f"{value:,.0f}" if value >= 100 else f"{value:.3g}"


def format_table(results: Sequence[Result]) -> str:
    """The results as a markdown table; ratios and loss differences are against "loop"."""
    baseline = {(r.model, r.num_models): r for r in results if r.strategy == "loop"}
    lines = [
        "| model | M | strategy | compile (s) | step time (ms) | model-steps/s | vs loop "
        "| spread | max abs Δloss vs loop |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        loop = baseline[(r.model, r.num_models)]
        median = statistics.median(r.call_times_s)
        spread = (max(r.call_times_s) - min(r.call_times_s)) / median
        strategy = r.strategy if r.map_batch_size is None else f"map (k={r.map_batch_size})"
        delta = float(np.max(np.abs(r.losses - loop.losses)))
        lines.append(
            f"| {r.model} | {r.num_models} | {strategy} | {r.compile_s:.2f} "
            f"| {1e3 * median / K_STEPS:.2f} | {format_rate(throughput(r))} "
            f"| {throughput(r) / throughput(loop):.2f}× | {100 * spread:.0f}% | {delta:.1e} |"
        )
    return "\n".join(lines)


def header(sizes: Sequence[int], repeats: int) -> str:
    """The report's header: what was measured, where, with which versions, and how."""
    return "\n".join(
        [
            *benchlib.environment_lines("Model-axis strategies: loop vs jit(vmap) vs lax.map"),
            f"- setup: task {TASK}, batch size {BATCH_SIZE}, K = {K_STEPS} train_steps per call "
            f"(the engine's compiled_steps), M in {list(sizes)}, median of {repeats} timed "
            "calls after one warm-up; "
            "models: " + "; ".join(f"{m} {kw}" for m, kw in MODEL_KWARGS.items()),
            "- step time: wall time of one train_step of all M models (call time / K); "
            "vs loop: model-steps/s over loop's at the same M (same run); spread: (max - min) / "
            "median of the timed calls; loop's compile is the one-model program, compiled once "
            "per M and reused for its M calls.",
        ]
    )


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help=f"M in {list(QUICK_SIZES)} only")
    parser.add_argument(
        "--models", nargs="+", choices=list(MODEL_KWARGS), default=list(MODEL_KWARGS)
    )
    parser.add_argument("--repeats", type=int, default=REPEATS, help="timed calls per program")
    parser.add_argument("--out-dir", type=pathlib.Path, default=DEFAULT_OUT_DIR)
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    """Runs the benchmark, writes the markdown report and prints it."""
    args = parse_args(argv)
    sizes = QUICK_SIZES if args.quick else FULL_SIZES
    head = header(sizes, args.repeats)
    results = []
    for model in args.models:
        results.extend(bench_model(model, sizes, args.repeats))
    benchlib.write_report(args.out_dir, "strategies", f"{head}\n\n{format_table(results)}\n")


if __name__ == "__main__":
    main()

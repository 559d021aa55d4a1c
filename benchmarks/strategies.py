"""How to lower a bucket's model axis: a Python loop, ``jit(vmap)`` or ``lax.map``.

The sweep engine trains the models of a bucket (same shapes, different hyperparameters, seeds and
splits) in one program; ``EngineOptions.strategy`` picks how the model axis is lowered. Vmapped
convolutions become grouped convolutions (sweep_anchors.md §6.1), which can be slow, so this
benchmark measures, for M models of one bucket:

  loop  M calls of the jitted single-model function, one model at a time (the baseline);
  vmap  ``jit(vmap(f))`` over the M stacked states (``EngineOptions(strategy="vmap")``);
  map   ``jit(lax.map(f, ..., batch_size=k))`` with ``k = max(1, M // 4)`` (``strategy="map"``).

``f`` runs K consecutive ``train_step``s (a ``lax.scan`` over K fixed index batches per model) on
the classification task. Each program is compiled ahead of time (timed separately), called once to
warm up, then timed over a few repetitions (median). Every number in the output is measured in this
one run, so compare the ratios, not absolute times from different runs or machines.

    python benchmarks/strategies.py --quick       # M in {1, 4}
    python benchmarks/strategies.py               # M in {1, 4, 8}

Writes ``benchmarks/results/strategies-<device_kind>.md`` and prints the table.
"""

from __future__ import annotations

import argparse
import functools
import pathlib
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import benchlib
import jax
import jax.numpy as jnp
import numpy as np

from coordjax import models, tasks
from coordjax.train import (
    RunSpec,
    TrainSetup,
    TrainState,
    device_data,
    init_state,
    make_hparams,
    split_indices,
    stack_hparams,
    stack_splits,
    train_step,
)

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


class Bucket(NamedTuple):
    """One bucket's inputs, stacked along a leading model axis of size M.

    data is shared by every model; idx and mask are (M, K, B): each model's K fixed batches.
    """

    data: Any
    runs: RunSpec
    states: TrainState
    idx: jax.Array
    mask: jax.Array


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


def make_train_setup(model: str) -> TrainSetup:
    """The static setup of the bucket: the model at its benchmark shape, batch size 16."""
    return TrainSetup(
        model=models.build(model, **MODEL_KWARGS[model]),
        task=tasks.get(TASK),
        batch_size=BATCH_SIZE,
        steps_per_epoch=K_STEPS,  # unused by train_step; the K steps stand for one epoch
    )


def make_runs(num_models: int) -> RunSpec:
    """Per-model runs: lr cycles through the sweep's values, splits alternate, seed = index."""
    hparams = stack_hparams([make_hparams(LRS[i % len(LRS)], L2) for i in range(num_models)])
    # Pad every split to the largest of SPLITS so that the per-model shapes do not depend on M
    # (the single-model program of "loop" is compiled once and reused for every M).
    full = [split_indices(name) for name in SPLITS]
    pads = {
        "pad_train": max(s.train_idx.shape[0] for s in full),
        "pad_test": max(s.test_idx.shape[0] for s in full),
    }
    names = [SPLITS[i % len(SPLITS)] for i in range(num_models)]
    splits = stack_splits([split_indices(name, **pads) for name in names])
    seeds = jnp.arange(num_models, dtype=jnp.int32)
    return RunSpec(hparams=hparams, seed=seeds, split=splits)


def fixed_batches(runs: RunSpec, num_steps: int, batch_size: int) -> tuple[jax.Array, jax.Array]:
    """K index batches per model, drawn (on the host, seeded by the model) from its train split.

    Returns (idx, mask), each (M, K, B); every example is valid.
    """
    train_idx, n_train = np.asarray(runs.split.train_idx), np.asarray(runs.split.n_train)
    seeds = np.asarray(runs.seed)
    batches = []
    for row, n, seed in zip(train_idx, n_train, seeds, strict=True):
        order = np.random.default_rng(int(seed)).permutation(row[:n])
        batches.append(order[: num_steps * batch_size].reshape(num_steps, batch_size))
    idx = jnp.asarray(np.stack(batches), jnp.int32)
    return idx, jnp.ones(idx.shape, bool)


def make_bucket(setup: TrainSetup, data: Any, num_models: int) -> Bucket:
    """Builds and initialises a bucket of ``num_models`` models (states from ``init_state``)."""
    runs = make_runs(num_models)
    init = jax.jit(jax.vmap(functools.partial(init_state, setup), in_axes=(None, 0)))
    states = jax.block_until_ready(init(data, runs))
    idx, mask = fixed_batches(runs, K_STEPS, setup.batch_size)
    return Bucket(data=data, runs=runs, states=states, idx=idx, mask=mask)


def model_slice(bucket: Bucket, i: int) -> tuple[Any, ...]:
    """Model ``i``'s (run, state, idx, mask), without the model axis."""
    return jax.tree.map(lambda x: x[i], (bucket.runs, bucket.states, bucket.idx, bucket.mask))


# --------------------------------------------------------------------------------------------
# The benchmarked function and the three strategies


def k_steps(setup: TrainSetup, data, run, state, idx, mask) -> tuple[TrainState, jax.Array]:
    """One model: ``train_step`` on each of the K batches ``idx[k]`` (a ``lax.scan``).

    Returns the final state and the K training losses.
    """

    def body(state, batch):
        return train_step(setup, data, run, state, *batch)

    return jax.lax.scan(body, state, (idx, mask))


def map_batch_size(num_models: int) -> int:
    """Models per ``lax.map`` slice: ``max(1, M // 4)``."""
    return max(1, num_models // 4)


def compile_timed(fn: Callable, *args) -> tuple[Callable, float]:
    """AOT-compiles ``jax.jit(fn)`` for ``args``; returns the executable and compile seconds."""
    tick = time.perf_counter()
    compiled = jax.jit(fn).lower(*args).compile()
    return compiled, time.perf_counter() - tick


def compile_single(setup: TrainSetup, bucket: Bucket) -> tuple[Callable, float]:
    """The single-model program used by "loop" (one compile serves every M)."""
    return compile_timed(functools.partial(k_steps, setup), bucket.data, *model_slice(bucket, 0))


def loop_program(single: Callable, bucket: Bucket) -> Callable[[], np.ndarray]:
    """ "loop": M calls of the single-model executable; returns a thunk giving (M, K) losses.

    Per-model inputs are sliced out before timing; the M calls are dispatched back to back.
    """
    per_model = [model_slice(bucket, i) for i in range(bucket.idx.shape[0])]

    def call():
        outs = [single(bucket.data, *args) for args in per_model]
        return jnp.stack([losses for _, losses in jax.block_until_ready(outs)])

    return call


def vmap_program(setup: TrainSetup, bucket: Bucket) -> tuple[Callable[[], jax.Array], float]:
    """ "vmap": ``jit(vmap(k_steps))`` over the stacked models (data shared)."""
    fn = jax.vmap(functools.partial(k_steps, setup), in_axes=(None, 0, 0, 0, 0))
    args = (bucket.data, bucket.runs, bucket.states, bucket.idx, bucket.mask)
    compiled, seconds = compile_timed(fn, *args)
    return lambda: jax.block_until_ready(compiled(*args))[1], seconds


def map_program(
    setup: TrainSetup, bucket: Bucket, batch_size: int
) -> tuple[Callable[[], jax.Array], float]:
    """ "map": ``jit(lax.map(k_steps, ..., batch_size=k))`` over the stacked models."""
    single = functools.partial(k_steps, setup)

    def mapped(data, runs, states, idx, mask):
        return jax.lax.map(
            lambda xs: single(data, *xs), (runs, states, idx, mask), batch_size=batch_size
        )

    args = (bucket.data, bucket.runs, bucket.states, bucket.idx, bucket.mask)
    compiled, seconds = compile_timed(mapped, *args)
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
    setup = make_train_setup(model)
    data = device_data(setup.task)
    single, single_compile_s = None, 0.0
    results = []
    for num_models in sizes:
        bucket = make_bucket(setup, data, num_models)
        if single is None:
            single, single_compile_s = compile_single(setup, bucket)
        k = map_batch_size(num_models)
        programs = {
            "loop": (loop_program(single, bucket), single_compile_s),
            "vmap": vmap_program(setup, bucket),
            "map": map_program(setup, bucket, k),
        }
        for strategy in STRATEGIES:
            call, compile_s = programs[strategy]
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
            f"(lax.scan), M in {list(sizes)}, median of {repeats} timed calls after one warm-up; "
            "models: " + "; ".join(f"{m} {kw}" for m, kw in MODEL_KWARGS.items()),
            "- step time: wall time of one train_step of all M models (call time / K); "
            "vs loop: model-steps/s over loop's at the same M (same run); spread: (max - min) / "
            "median of the timed calls; loop's compile is the single-model program, compiled once "
            "per model and reused for every M.",
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

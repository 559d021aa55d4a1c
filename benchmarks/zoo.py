"""The paper's zoo, trained by the sweep engine against the per-model loops people write.

For every model family of Fig S2 (deconv painter fs {2,3,4} x c {1,2,3}, the CoordConv
classifier, the CoordConv renderer, the three regressors), on the same batch and parameter
counts, this measures steady-state model-steps/s and, separately, compile time of:

  engine     the sweep engine with its default choices (``EngineOptions()``): its own program
             builder ``programs.compiled_steps`` (the program its ``"tune"`` strategy times), and
             the strategy its fixed rule ``programs.default_strategy`` picks for the bucket;
  vmap, map  that builder with each model-axis lowering (``jit(vmap)``; ``lax.map`` over
             slices of 1 model);
  lax, matmul each convolution lowering (``coordjax.conv``), when the library has them;
  loop       a Python loop over a jitted single-model ``train_step`` (M models one by one);
  torch      PyTorch eager, one model at a time, ``torch.optim.Adam`` (needs the ``bench``
             extra: ``pip install -e ".[bench]"``; skipped with a note when torch is missing).

at bucket sizes M (models per program). Per-model loops cost the same per model at every M, so
``loop`` and ``torch`` are measured at M = 1 and their rate is compared with every M.
Achieved FLOP/s use FLOPs counted from layer shapes (``coordjax.sweep.rates.train_step_flops``:
2 FLOPs per multiply-add, forward + input gradient + weight gradient = 3x the forward's kernel
layers, 2x for the first; XLA's cost analysis is not used: it counts a loop body once), against
a dense float32 GEMM measured in the same run. A roofline section sets each rate against the
floors of one step: its FLOPs at that GEMM rate, and the bytes our compiled single-model step
moves (XLA's cost analysis of the unlooped step) at a streaming bandwidth measured in the run.

    python benchmarks/zoo.py --quick     # <= 10 min on 2 idle cores
    python benchmarks/zoo.py             # every M in {1, 8, 32} (hours on a 2-core CPU)

Writes ``benchmarks/results/zoo-<device_kind>.{md,json,png}`` and the measured-rates table
``coordjax/sweep/measured_rates.json`` (the dry run's time estimates) for this device kind.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import functools
import json
import os
import pathlib
import sys
import time
from collections.abc import Sequence
from typing import Any

import benchlib
import jax
import jax.numpy as jnp
import numpy as np

from coordjax import conv, models
from coordjax.paper.data import device_data
from coordjax.sweep import EngineOptions, Grid, plan, programs, rates, union
from coordjax.train import train_step

ROOT = pathlib.Path(__file__).resolve().parent
DEFAULT_OUT_DIR = ROOT / "results"
L2 = 1e-3
LR = 2e-3
K_STEPS = programs.TUNE_PROBE_STEPS  # the engine's builder is shared with its "tune" probe
FULL_SIZES = (1, 8, 32)
QUICK_SIZES = (1, 8)
QUICK_BUDGET_S = 480.0  # no new extra measurement after this, so --quick stays under 10 min
TORCH_HINT = 'torch is not installed: pip install -e ".[bench]" (torch==2.13.0, CPU build)'


@dataclasses.dataclass(frozen=True)
class Case:
    """One benchmarked model: registry name, shape kwargs, task and batch size."""

    model: str
    shape: tuple[tuple[str, int], ...]
    task: str
    batch_size: int

    @property
    def kwargs(self) -> dict[str, int]:
        return dict(self.shape)

    @property
    def label(self) -> str:
        """``deconv_painter:fs2,c1`` (``--cases`` takes these)."""
        short = {"filter_size": "fs", "channel_mult": "c"}
        kw = self.kwargs
        parts = [f"{short[k]}{kw[k]}" for k in ("filter_size", "channel_mult") if k in kw]
        return f"{self.model}:{','.join(parts)}" if parts else self.model


def _case(model: str, task: str, batch: int, **shape: int) -> Case:
    return Case(model, tuple(sorted(shape.items())), task, batch)


CASES = (
    *(
        _case("deconv_painter", "classification", 32, filter_size=fs, channel_mult=c)
        for fs in (2, 3, 4)
        for c in (1, 2, 3)
    ),
    _case("coordconv_classifier", "classification", 16, channel_mult=1),
    _case("coordconv_renderer", "rendering", 16, filter_size=2, channel_mult=2),
    _case("conv_regressor_uniform", "regression", 256, channel_mult=1),
    _case("conv_regressor_quadrant", "regression", 256, channel_mult=1),
    _case("coordconv_regressor", "regression", 256),
)
"""The measured models: Fig S2's deconv grid at batch 32 (the grid also uses 16), the paper's
CoordConv classifier and renderer (its largest shape) at batch 16, regressors at 256."""

QUICK_EXTRAS = (
    "deconv_painter:fs2,c1",
    "deconv_painter:fs4,c3",
    "coordconv_classifier:c1",
    "conv_regressor_quadrant:c1",
)
"""--quick measures M > 1 and the other conv lowerings for these only (within its budget)."""
assert set(QUICK_EXTRAS) <= {case.label for case in CASES}


@dataclasses.dataclass
class Row:
    """One measurement of a contender on a case at M models."""

    case: Case
    contender: str
    num_models: int
    model_steps_per_s: float | None
    compile_s: float | None = None
    spread: float | None = None
    note: str = ""

    def as_json(self) -> dict[str, Any]:
        return {
            "model": self.case.model,
            "shape": self.case.kwargs,
            "task": self.case.task,
            "batch_size": self.case.batch_size,
            "contender": self.contender,
            "num_models": self.num_models,
            "model_steps_per_s": self.model_steps_per_s,
            "compile_s": self.compile_s,
            "spread": self.spread,
            "note": self.note,
        }


# --------------------------------------------------------------------------------------------
# JAX contenders (the engine's own builders)


def lowerings() -> tuple[str, ...]:
    """The concrete convolution lowerings the library offers."""
    return tuple(n for n in conv.LOWERINGS if n != "auto")


def default_lowering() -> str:
    """The engine's lowering on this platform (its model axis is vmapped)."""
    return conv.resolve_lowering("auto")


def make_bucket(case: Case, num_models: int):
    """The engine's bucket for M copies of the case (seeds 0..M-1), via its planner."""
    grid = Grid(
        case.model,
        base={
            "task": case.task,
            "model": case.model,
            "batch_size": case.batch_size,
            "lr": LR,
            "l2": L2,
            "epochs": 1,
            "eval_every": 1,
            **case.kwargs,
            **({"loss": "sigmoid"} if case.task == "rendering" else {}),
        },
        axes={"seed": list(range(num_models))},
    )
    (bucket,) = plan(union(case.model, [grid]).expand())
    return bucket


def engine_inputs(case: Case, num_models: int, lowering: str | None = None):
    """(setup, data, runs, states, mesh, param count) of an M-model bucket, as the engine
    builds them (``programs.bucket_inputs``: sharded over the devices, padded to their count);
    the engine's default conv lowering when ``lowering`` is None."""
    bucket = make_bucket(case, num_models)
    mesh = programs.make_mesh(True)
    setup, data, runs, states, counts = programs.bucket_inputs(
        bucket, mesh, lowering or default_lowering()
    )
    return setup, data, runs, states, mesh, counts[0]


def measure_program(case: Case, contender: str, program, inputs, min_time: float) -> Row:
    """Times ``program(data, runs, states)`` of the engine on an M-model bucket."""
    data, runs, states = inputs
    num_models = jax.tree.leaves(states)[0].shape[0]

    def call():
        return jax.block_until_ready(program(data, runs, states))

    rate, compile_s, spread = benchlib.steady_rate(
        *benchlib.time_calls(call, min_time), num_models * K_STEPS
    )
    return Row(case, contender, num_models, rate, compile_s, spread)


def bench_engine(case: Case, num_models: int, min_time: float, log) -> list[Row]:
    """The engine's default choice, and the vmap and map programs it chose from."""
    options = EngineOptions()
    setup, data, runs, states, mesh, _ = engine_inputs(case, num_models)
    rows = {}
    for name, strategy in (("vmap", ("vmap", options.map_batch_size)), ("map", ("map", 1))):
        program = programs.compiled_steps(setup, K_STEPS, *strategy, mesh)
        rows[strategy] = measure_program(case, name, program, (data, runs, states), min_time)
        log(
            f"{case.label} M={num_models} {name}: {rows[strategy].model_steps_per_s:.3g} "
            "model-steps/s"
        )
    per_device = -(-num_models // (1 if mesh is None else mesh.size))
    platform = jax.devices()[0].platform
    chosen = programs.default_strategy(platform, per_device, options.map_batch_size)
    note = f"strategy {chosen[0]}, lowering {default_lowering()}"
    return [dataclasses.replace(rows[tuple(chosen)], contender="engine", note=note), *rows.values()]


def bench_lowerings(case: Case, num_models: int, min_time: float, log) -> list[Row]:
    """The engine's vmap program with each convolution lowering that is not the default."""
    options = EngineOptions()
    out = []
    for other in lowerings():
        if other == default_lowering():
            continue
        setup, data, runs, states, mesh, _ = engine_inputs(case, num_models, other)
        program = programs.compiled_steps(setup, K_STEPS, "vmap", options.map_batch_size, mesh)
        name = f"vmap, {other} lowering"
        out.append(measure_program(case, name, program, (data, runs, states), min_time))
        log(f"{case.label} M={num_models} {name}: {out[-1].model_steps_per_s:.3g} model-steps/s")
    return out


def single_model_step(case: Case):
    """``(step, (data, run, state, idx, mask))``: the jitted single-model ``train_step`` on
    the case's first batch, as the engine's bucket of one builds its inputs."""
    setup, data, runs, states, _, _ = engine_inputs(case, 1)
    run, state = jax.tree.map(lambda x: x[0], (runs, states))
    idx = jnp.arange(setup.batch_size, dtype=jnp.int32) % data.inputs.shape[0]
    mask = jnp.ones((setup.batch_size,), bool)
    return jax.jit(functools.partial(train_step, setup)), (data, run, state, idx, mask)


def bench_loop(case: Case, min_time: float, log) -> Row:
    """A Python loop of K calls of the jitted single-model ``train_step`` (M = 1)."""
    step, (data, run, state, idx, mask) = single_model_step(case)

    def call():
        s = state
        for _ in range(K_STEPS):
            s = step(data, run, s, idx, mask)[0]
        return jax.block_until_ready(s)

    rate, compile_s, spread = benchlib.steady_rate(*benchlib.time_calls(call, min_time), K_STEPS)
    log(f"{case.label} loop: {rate:.3g} model-steps/s")
    return Row(case, "loop", 1, rate, compile_s, spread)


@functools.cache
def step_flops(case: Case) -> float:
    """FLOPs of one training step of one model, counted from layer shapes."""
    model = models.build(case.model, **case.kwargs)
    return rates.train_step_flops(model, models.MODELS[case.model].input_shape, case.batch_size)


@functools.cache
def step_bytes(case: Case) -> float | None:
    """Bytes one single-model training step moves, by XLA's cost analysis of the compiled step
    (every op's operands and results, after fusion: what our program moves, not the least any
    program must). None where the backend reports no figure."""
    step, args = single_model_step(case)
    cost = step.lower(*args).compile().cost_analysis()
    if isinstance(cost, list):  # older jaxlibs: one dict per computation
        cost = cost[0] if cost else None
    value = (cost or {}).get("bytes accessed")
    return float(value) if value else None


@functools.cache
def param_count(case: Case) -> int:
    spec = models.MODELS[case.model]
    model = models.build(case.model, **case.kwargs)
    x = jnp.zeros((1, *spec.input_shape), jnp.float32)
    return models.count_params(
        jax.eval_shape(lambda: model.init(jax.random.key(0), x, train=False))
    )


# --------------------------------------------------------------------------------------------
# PyTorch eager


def import_torch():
    try:
        import torch
        import torch_zoo
    except ImportError:
        return None, None
    return torch, torch_zoo


def bench_torch(case: Case, min_time: float, log) -> list[Row]:
    """PyTorch eager, one model, the same first batch as the engine's program, Adam: the
    twin of our layers, and each other natural formulation ``torch_zoo`` has for the model
    (the CoordConv classifier as ``nn.Linear`` over channels-last pixels)."""
    torch, torch_zoo = import_torch()
    if torch is None:
        return [Row(case, "torch", 1, None, note=TORCH_HINT)]
    data = device_data(make_bucket(case, 1).setup().task)
    inputs, targets = np.asarray(data.inputs), np.asarray(data.targets)
    idx = np.arange(case.batch_size) % inputs.shape[0]
    x, y = inputs[idx], targets[idx]
    if x.ndim == 4:  # NHWC -> NCHW
        x = x.transpose(0, 3, 1, 2)
    if case.task == "classification":
        y = y.reshape(len(idx), -1).argmax(axis=1)
    elif y.ndim == 4:
        y = y.transpose(0, 3, 1, 2)
    x, y = torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(np.ascontiguousarray(y))
    rows = []
    for variant in torch_zoo.variants(case.model):
        torch.manual_seed(0)
        model = torch_zoo.build(case.model, variant=variant, **case.kwargs)
        ours = param_count(case)
        assert torch_zoo.count_params(model) == ours, (case, torch_zoo.count_params(model), ours)
        step = torch_zoo.make_step(model, case.task, LR, L2)

        def call(step=step):
            for _ in range(K_STEPS):
                loss = step(x, y)
            return float(loss)

        call()  # the first steps allocate Adam's state and warm the allocator
        rate, _, spread = benchlib.steady_rate(*benchlib.time_calls(call, min_time), K_STEPS)
        name = "torch" if variant is None else f"torch, {variant}"
        log(f"{case.label} {name}: {rate:.3g} model-steps/s")
        note = f"{torch.get_num_threads()} threads"
        rows.append(Row(case, name, 1, rate, None, spread, note=note))
    return rows


# --------------------------------------------------------------------------------------------
# Report


def times(ratio: float | None) -> str:
    return "–" if ratio is None else f"{benchlib.fmt(ratio)}×"


def rate(row: Row | None) -> float | None:
    """Model-steps/s (for a per-model loop: at any M, since it trains one model at a time)."""
    return None if row is None else row.model_steps_per_s


def find(rows: Sequence[Row], case: Case, contender: str, m: int = 1) -> Row | None:
    for row in rows:
        if row.case == case and row.contender == contender and row.num_models == m:
            return row
    return None


def gemm_percent(row: Row, step_flops: float, gemm: float) -> float | None:
    """Achieved FLOP/s of a measurement as a percentage of the GEMM FLOP/s."""
    return None if not row.model_steps_per_s else 100 * row.model_steps_per_s * step_flops / gemm


def results_table(rows: Sequence[Row], cases: Sequence[Case], gemm: float) -> list[str]:
    lines = [
        "| model | batch | params | GFLOP/step | contender | M | model-steps/s "
        "| vs torch | vs loop | % GEMM | compile (s) | spread | note |",
        "|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for case in cases:
        flops = step_flops(case)
        t, lp = rate(find(rows, case, "torch")), rate(find(rows, case, "loop"))
        for r in (r for r in rows if r.case == case):
            pm = rate(r)
            lines.append(
                f"| {case.label} | {case.batch_size} | {param_count(case):,} | {flops / 1e9:.2f} "
                f"| {r.contender} | {r.num_models} | {benchlib.fmt(pm)} "
                f"| {times(pm / t if pm and t else None)} "
                f"| {times(pm / lp if pm and lp else None)} "
                f"| {benchlib.fmt(gemm_percent(r, flops, gemm))} "
                f"| {benchlib.fmt(r.compile_s)} "
                f"| {'–' if r.spread is None else f'{100 * r.spread:.0f}%'} "
                f"| {r.note} |"
            )
    return lines


def roofline_table(
    rows: Sequence[Row], cases: Sequence[Case], gemm: float, bandwidth: float
) -> list[str]:
    """Per case, the least time a step can take on this machine by its FLOPs (at the GEMM rate)
    and by the bytes our compiled step moves (at the streaming bandwidth), and the M = 1 rates
    of the engine and torch against the larger of the two floors."""
    lines = [
        "| model | GFLOP/step | GB/step (XLA) | compute floor (ms) | memory floor (ms) | bound "
        "| roofline steps/s | engine M=1 | % roofline | torch | torch % roofline |",
        "|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    for case in cases:
        flops, moved = step_flops(case), step_bytes(case)
        compute_s = flops / gemm
        memory_s = None if moved is None else moved / bandwidth
        floor = max(compute_s, memory_s or 0.0)
        engine, torch = rate(find(rows, case, "engine")), rate(find(rows, case, "torch"))

        def share(steps_per_s, floor=floor):
            return benchlib.fmt(None if not steps_per_s else 100 * steps_per_s * floor)

        lines.append(
            f"| {case.label} | {flops / 1e9:.2f} "
            f"| {benchlib.fmt(None if moved is None else moved / 1e9)} "
            f"| {benchlib.fmt(1e3 * compute_s)} "
            f"| {benchlib.fmt(None if memory_s is None else 1e3 * memory_s)} "
            f"| {'memory' if (memory_s or 0.0) > compute_s else 'compute'} "
            f"| {benchlib.fmt(1 / floor)} | {benchlib.fmt(engine)} | {share(engine)} "
            f"| {benchlib.fmt(torch)} | {share(torch)} |"
        )
    return lines


def plot(rows: Sequence[Row], cases: Sequence[Case], path: pathlib.Path) -> None:
    """Model-steps/s vs M per contender, one panel per case (per-model loops: flat)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = min(4, len(cases))
    nrows = -(-len(cases) // cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4 * cols, 3.2 * nrows), squeeze=False)
    sizes = sorted({r.num_models for r in rows})
    for ax, case in zip(axes.flat, cases, strict=False):
        mine = [r for r in rows if r.case == case and r.model_steps_per_s]
        for contender in dict.fromkeys(r.contender for r in mine):
            pts = sorted(
                (r.num_models, r.model_steps_per_s) for r in mine if r.contender == contender
            )
            if contender == "loop" or contender.startswith("torch"):  # one model at a time
                ax.plot(sizes, [pts[0][1]] * len(sizes), "--", label=f"{contender} (one by one)")
            elif contender == "engine":  # drawn wide under the candidate it picked
                ax.plot(
                    *zip(*pts, strict=True), "s-", lw=6, ms=14, alpha=0.3, label="engine (default)"
                )
            else:
                ax.plot(*zip(*pts, strict=True), "o-", label=contender)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_title(f"{case.label}, batch {case.batch_size}", fontsize=9)
        ax.set_xlabel("models per program M")
        ax.set_ylabel("model-steps/s")
        ax.legend(fontsize=6)
    for ax in list(axes.flat)[len(cases) :]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def row_lowering(row: Row) -> str | None:
    """The conv lowering of an engine measurement (None for the other contenders)."""
    if row.contender == "engine":
        return default_lowering()
    if row.contender.startswith("vmap, ") and row.contender.endswith(" lowering"):
        return row.contender.removeprefix("vmap, ").removesuffix(" lowering")
    return None


def measured_rates(rows: Sequence[Row]) -> list[rates.Rate]:
    """The engine's rows as the library's rates (its default, and the other lowerings' rows
    for ``EngineOptions(lowering=)``); the per-model loops are not the engine's rates."""
    return [
        rates.Rate(
            model=r.case.model,
            shape=r.case.shape,
            batch_size=r.case.batch_size,
            num_models=r.num_models,
            model_steps_per_s=r.model_steps_per_s,
            step_flops=step_flops(r.case),
            compile_s=r.compile_s,
            lowering=row_lowering(r),
            note=r.note,
        )
        for r in rows
        if row_lowering(r) and r.model_steps_per_s
    ]


# --------------------------------------------------------------------------------------------
# Driver


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    labels = [c.label for c in CASES]
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"M in {list(QUICK_SIZES)}; M > 1 and other lowerings only for "
        f"{list(QUICK_EXTRAS)}, started within {QUICK_BUDGET_S:.0f} s",
    )
    parser.add_argument(
        "--cases", nargs="+", metavar="LABEL", choices=labels, help=f"a subset of: {labels}"
    )
    parser.add_argument("--sizes", nargs="+", type=int, help="bucket sizes M (default by mode)")
    parser.add_argument("--min-time", type=float, help="seconds timed per measurement")
    parser.add_argument(
        "--budget-s",
        type=float,
        help="start no M > 1 or other-lowering measurement after this many s",
    )
    parser.add_argument("--no-torch", action="store_true", help="skip the PyTorch contender")
    parser.add_argument("--no-loop", action="store_true", help="skip the jitted-step loop")
    parser.add_argument("--out-dir", type=pathlib.Path, default=DEFAULT_OUT_DIR)
    parser.add_argument(
        "--rates-file",
        type=pathlib.Path,
        default=rates.RATES_FILE,
        help="the library's measured-rates table to update",
    )
    parser.add_argument("--no-rates", action="store_true", help="do not update the rates table")
    parser.add_argument(
        "--provisional",
        action="store_true",
        help="label the report and rates table provisional (a validation run)",
    )
    args = parser.parse_args(argv)
    if args.sizes and any(m < 1 for m in args.sizes):
        parser.error("--sizes must be positive ints")
    return args


@dataclasses.dataclass(frozen=True)
class Settings:
    """What one run measures: the cases, bucket sizes, seconds per measurement, time budget."""

    cases: tuple[Case, ...]
    sizes: tuple[int, ...]
    min_time: float
    budget_s: float
    quick: bool
    torch: bool
    loop: bool

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Settings:
        default_budget = QUICK_BUDGET_S if args.quick else float("inf")
        return cls(
            cases=tuple(c for c in CASES if not args.cases or c.label in args.cases),
            sizes=tuple(args.sizes or (QUICK_SIZES if args.quick else FULL_SIZES)),
            min_time=args.min_time if args.min_time is not None else (0.3 if args.quick else 2.0),
            budget_s=args.budget_s if args.budget_s is not None else default_budget,
            quick=args.quick,
            torch=not args.no_torch,
            loop=not args.no_loop,
        )


def measure(settings: Settings, log, start: float) -> tuple[list[Row], list[str]]:
    """Every measurement of the run, and what the time budget or memory skipped.

    First, at M = 1, the per-model contenders and the engine for every case (always measured);
    then, while the budget lasts (counted from ``start``, the run's ``perf_counter``), larger
    buckets and the other conv lowerings.
    """
    rows: list[Row] = []
    for case in settings.cases:
        if settings.torch:
            rows.extend(bench_torch(case, settings.min_time, log))
        if settings.loop:
            rows.append(bench_loop(case, settings.min_time, log))
        if 1 in settings.sizes:
            rows.extend(bench_engine(case, 1, settings.min_time, log))
    extras = [(bench_engine, case, m) for m in settings.sizes if m > 1 for case in settings.cases]
    # Other lowerings at M <= 8 (1 with --quick): lax's transposed convs on CPU take many
    # seconds per step, and the question is which lowering wins, not how it scales.
    max_m = 1 if settings.quick else 8
    extras += [
        (bench_lowerings, case, m) for m in settings.sizes if m <= max_m for case in settings.cases
    ]
    skipped: list[str] = []
    for bench, case, m in extras:
        if settings.quick and case.label not in QUICK_EXTRAS:
            continue
        what = f"{case.label} M={m}" + (" lowerings" if bench is bench_lowerings else "")
        if time.perf_counter() - start > settings.budget_s:
            skipped.append(what)
            continue
        try:
            rows.extend(bench(case, m, settings.min_time, log))
        except Exception as err:  # noqa: BLE001 - out of memory at large M is a result
            if "RESOURCE_EXHAUSTED" not in str(err):
                raise
            skipped.append(f"{what} (out of memory)")
    return rows, skipped


def run_meta(
    args: argparse.Namespace, torch: Any, gemm: dict[str, float], bandwidth: float, load
) -> dict:
    """How this run was measured: device, CPU, load, GEMM and bandwidth ceilings, date, command,
    versions."""
    device = jax.devices()[0]
    return {
        "device_kind": device.device_kind,
        "platform": device.platform,
        "cpu_model": benchlib.cpu_model(),
        "cpu_count": os.cpu_count(),
        "load_average_at_start": None if load is None else list(load),
        "gemm_flops_per_s": gemm["jax"],
        "memory_bytes_per_s": bandwidth,
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": benchlib.command_line(),
        "versions": benchlib.versions(torch),
        "provisional": args.provisional or bool(args.cases),
    }


def report_markdown(
    head: list[str],
    meta: dict,
    settings: Settings,
    rows: Sequence[Row],
    skipped: Sequence[str],
    gemm: dict[str, float],
    elapsed: float,
    torch: Any,
    plot_name: str,
) -> str:
    """The report: how it was measured (with the warnings that void it), then the table."""
    gemm_text = ", ".join(f"{k} {v / 1e9:.0f} GFLOP/s" for k, v in gemm.items())
    torch_line = (
        f"torch {meta['versions']['torch']}, {torch.get_num_threads()} threads"
        if torch is not None
        else TORCH_HINT
    )
    lines = [
        *head,
        f"- CPU: {meta['cpu_model']}, {meta['cpu_count']} cores; {torch_line}",
        f"- run: {elapsed:.0f} s; sizes M {list(settings.sizes)}; {K_STEPS} train steps per "
        f"timed call (the engine's `compiled_steps`, shared with its `auto` probe); "
        f"≥ {settings.min_time} s timed per measurement (median call); learning rate {LR}, "
        f"L2 {L2}; the first batch of the data.",
        f"- dense float32 GEMM (2048², best of 5): {gemm_text}",
        f"- streaming memory bandwidth (jax, a 256 MiB float32 array scaled, read + write, best "
        f"of 5): {meta['memory_bytes_per_s'] / 1e9:.1f} GB/s",
        "- FLOPs per step: counted from layer shapes (`coordjax.sweep.rates.train_step_flops`): "
        "2 per multiply-add of every conv, transposed conv and dense layer, × 3 for forward, "
        "input gradient and weight gradient (× 2 for the first layer); elementwise work not "
        "counted. A transposed conv counts the input grid × its kernel (no dilation zeros).",
        "- compile (s): first call minus a steady call. The per-model loops (loop, torch) train "
        "M models one after another, at their M = 1 model-steps/s whatever M; `vs` columns "
        "divide model-steps/s by theirs (vmapping pays where the engine's model-steps/s at "
        "M > 1 exceed its M = 1 rate).",
        "- **The machine must be otherwise idle**: torch's threads collapse under contention; "
        "compare ratios within one run.",
    ]
    load = meta["load_average_at_start"]
    if load is not None and load[0] > 0.5 * (meta["cpu_count"] or 1):
        lines.append(
            f"- **BUSY MACHINE**: load average {load[0]:.1f} on {meta['cpu_count']} cores "
            "at the start; torch's thread pool collapses under contention (measured here: 27x "
            "slower with 2 threads than with 1 at load 13), so `vs torch` is not valid."
        )
    if meta["provisional"]:
        lines.append(
            "- **PROVISIONAL**: a validation run (a subset of cases or a shared machine); "
            "not the report of record."
        )
    if skipped:
        lines.append(
            f"- skipped (time budget {settings.budget_s:.0f} s or memory): {', '.join(skipped)}"
        )
    return "\n".join(
        [
            *lines,
            "",
            "## Measurements",
            "",
            *results_table(rows, settings.cases, gemm["jax"]),
            "",
            f"![model-steps/s vs M]({plot_name})",
            "",
            "## Roofline",
            "",
            "Why a rate is what it is: the floors of one step on this machine, from its FLOPs "
            "(counted from layer shapes, at the jax GEMM rate) and from the bytes our compiled "
            "single-model step moves (XLA's cost analysis: every op's operands and results after "
            "fusion, so a lowering that materializes patches pays here), at the streaming "
            "bandwidth. `% roofline` is a rate over 1 / max(floors); torch's program moves its "
            "own bytes, so its share can exceed 100 % of ours.",
            "",
            *roofline_table(rows, settings.cases, gemm["jax"], meta["memory_bytes_per_s"]),
            "",
        ]
    )


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    settings = Settings.from_args(args)
    start = time.perf_counter()
    head = benchlib.environment_lines("The zoo: sweep engine vs per-model loops")
    load_at_start = os.getloadavg() if hasattr(os, "getloadavg") else None

    def log(message: str) -> None:
        print(f"[{time.perf_counter() - start:6.0f}s] {message}", file=sys.stderr, flush=True)

    torch, _ = import_torch()
    if torch is None and settings.torch:
        log(TORCH_HINT + "; the torch contender is skipped")
    gemm = benchlib.gemm_flop_rate(torch=torch)
    log("GEMM: " + ", ".join(f"{k} {v / 1e9:.0f} GFLOP/s" for k, v in gemm.items()))
    bandwidth = benchlib.memory_bandwidth()
    log(f"memory bandwidth: {bandwidth / 1e9:.1f} GB/s")
    rows, skipped = measure(settings, log, start)
    elapsed = time.perf_counter() - start
    meta = run_meta(args, torch, gemm, bandwidth, load_at_start)

    stem = benchlib.output_path(args.out_dir, "zoo").with_suffix("")
    stem.parent.mkdir(parents=True, exist_ok=True)
    report = report_markdown(
        head, meta, settings, rows, skipped, gemm, elapsed, torch, f"{stem.name}.png"
    )
    record = {**meta, "gemm": gemm, "sizes": list(settings.sizes), "k_steps": K_STEPS,
              "skipped": skipped, "rows": [r.as_json() for r in rows],
              "step_bytes": {c.label: step_bytes(c) for c in settings.cases}}  # fmt: skip
    stem.with_suffix(".json").write_text(json.dumps(record, indent=1) + "\n")
    plot(rows, settings.cases, stem.with_suffix(".png"))
    stem.with_suffix(".md").write_text(report)
    print(report)
    written = [stem.with_suffix(s) for s in (".md", ".json", ".png")]
    if not args.no_rates:
        rates.save_rates(meta["device_kind"], measured_rates(rows), meta, args.rates_file)
        written.append(args.rates_file)
    print("wrote " + ", ".join(str(p) for p in written))


if __name__ == "__main__":
    main()

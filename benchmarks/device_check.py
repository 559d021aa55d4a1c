"""One device check: is every platform on its fast path? (at most 8 min on one GPU).

    PYTHONPATH=. python benchmarks/device_check.py --out DIR      # GPU/TPU: about 8 minutes
    PYTHONPATH=. python benchmarks/device_check.py --smoke        # CPU: a tiny run, < 3 minutes

No install step: it needs jax, flax, optax, orbax-checkpoint, pandas and matplotlib, and reads
the sweeps from this checkout. Writes ``DIR/device-<device_kind>.{md,json,png}`` (default DIR
``benchmarks/results``), after every section, so a run cut short still leaves its results.
Measured, in this order (what matters most first; an item that would not fit the time budget
``--budget-s`` is skipped and listed as such). First, before anything else fills the device:

7. **Memory**: for three (family, M), XLA's analysis of the engine's one-epoch chunk by the
   host's CPU compiler (what ``coordjax sweep --dry-run --device-memory`` plans with on a CPU
   host) and by the device's compiler, and the device's ``peak_bytes_in_use`` after running it.
6. **The programs the device gets**: every family's training chunk (M = 2) lowered for this
   device's platform, ``cuda`` and ``tpu``: convolutions by ``lhs_dilate`` (transposed) or
   grouped where the rule promises the matmul forms, ops below HIGHEST precision.

Then:

1. **Lowerings**: ``coordjax.conv.conv`` (3x3, stride 1) and ``conv_transpose`` (4x4, stride 2:
   a painter layer) with every lowering (``lax``, ``matmul``, ``zero_insertion``; for plain
   convs ``zero_insertion`` is ``lax``), forward + both gradients, unvmapped and under a vmap
   over M in {1, 16, 64, 256} models (weights and inputs per model); with the lowering
   ``coordjax.conv.default_lowering`` picks, and the fastest.
2. **Fig S2 families** (deconv painter fs {2,3,4} x c {1,2,3}, batch 32; CoordConv classifier,
   batch 16) at M = 64, then 256, then 1: the engine's own program (``programs.bucket_inputs``
   + ``programs.compiled_steps``: K Adam steps in a ``lax.scan``, its default strategy and
   lowering, ``precision="highest"``, the RunConfig default): model-steps/s, compile seconds,
   the program's memory (``compiled.memory_analysis()``) and the device's peak
   (``device.memory_stats()["peak_bytes_in_use"]``, where the backend reports it).
3. **Engine vs loop**: a Python loop over the jitted single-model ``train_step`` (one model at a
   time, M-independent) against the engine's rate at each M.
4. **Precision**: ``precision="default"`` (TF32 on recent NVIDIA GPUs, bf16 passes on TPU)
   against ``"highest"``, same programs, M = 64.
5. **Model-level lowerings**: two families at M = 64 with every other lowering.
8. **The model axis** (``benchmarks/scale.py``): the classifier at M = 1 .. 4096, the smallest
   and largest painters at M = 1 .. 1024 (model-steps/s, compile, memory).
9. **The zoo against torch**: PyTorch eager on the same device at M = 1 per family (where torch
   is installed), beside the engine at M = 1 and 256.
5. **Estimate**: the classification presets ``paper`` and ``paper-halving`` (444 models; the
   latter pruned and unpruned) from these rates (``coordjax.sweep.rates.estimate_seconds``).

Timing as in ``benchmarks/zoo.py``: each program is compiled ahead of time
(``lower(...).compile()``, timed apart), called once to warm up, then called until
``min_time`` seconds and 3 calls (at most ``max_repeats``); the median call counts. An item
whose one call would take more than ``max_call_s`` (predicted from the previous M) or whose
memory would exceed 80 % of the device's limit is skipped with the reason.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import importlib.util
import json
import math
import pathlib
import statistics
import time
import traceback
from collections.abc import Callable
from typing import Any

import benchlib
import jax
import jax.numpy as jnp
import scale

from coordjax import conv, models
from coordjax.sweep import EngineOptions, Grid, memory, plan, programs, rates, target, union
from coordjax.sweep.dry_run import pruned_estimate
from coordjax.sweep.durations import format_duration
from coordjax.train import train_step

ROOT = pathlib.Path(__file__).resolve().parent
REPO = ROOT.parent
DEFAULT_OUT_DIR = ROOT / "results"
CONCRETE = tuple(name for name in conv.LOWERINGS if name != "auto")
MEMORY_FRACTION = 0.8  # of the device's bytes_limit: larger programs are skipped


@dataclasses.dataclass(frozen=True)
class OpShape:
    """One convolution measured alone: ``x (B, S, S, C_in)``, kernel ``(k, k, C_in, C_out)``."""

    batch: int
    spatial: int
    c_in: int
    c_out: int
    kernel: int
    stride: int


@dataclasses.dataclass(frozen=True)
class Settings:
    """What one run measures (``FULL`` on an accelerator, ``SMOKE`` on CPU in CI)."""

    op_sizes: tuple[int, ...]
    conv_shape: OpShape
    transpose_shape: OpShape
    families: tuple[tuple[str, tuple[tuple[str, int], ...], int], ...]  # model, shape, batch
    family_sizes: tuple[int, ...]  # in order of priority
    loop_families: int  # the first n families
    precision_families: int
    lowering_families: int
    other_lowerings: tuple[str, ...]  # compared with the engine's default on those families
    compare_size: int  # M of the precision and model-level lowering comparisons
    steps: int  # training steps per timed call
    min_time: float
    max_repeats: int
    max_call_s: float
    compile_guess_s: float  # until one is measured
    budget_s: float
    lowering_check_families: tuple  # lowered for the device's platform, cuda and tpu (M = 2)
    memory_items: tuple[tuple[Any, int], ...]  # (family, M): estimate vs measured, smallest first
    scale_families: tuple  # scale.Family
    scale_sizes: dict[str, tuple[int, ...]]  # model -> M of its scale curve


def _deconv(fs: int, c: int, batch: int = 32):
    return ("deconv_painter", (("channel_mult", c), ("filter_size", fs)), batch)


COORDCONV = ("coordconv_classifier", (("channel_mult", 1),), 16)
# fs 2 c 1, fs 4 c 3 (the smallest and largest), fs 3 c 2 and the CoordConv classifier first: the
# loop, precision and lowering comparisons take the first few.
FAMILY_ORDER = (_deconv(2, 1), _deconv(4, 3), COORDCONV, _deconv(3, 2)) + tuple(
    f
    for f in (_deconv(fs, c) for fs in (2, 3, 4) for c in (1, 2, 3))
    if f not in (_deconv(2, 1), _deconv(4, 3), _deconv(3, 2))
)

FULL = Settings(
    op_sizes=(1, 16, 64, 256),
    conv_shape=OpShape(32, 16, 32, 32, 3, 1),
    transpose_shape=OpShape(32, 16, 32, 32, 4, 2),
    families=FAMILY_ORDER,
    family_sizes=(64, 256, 1),
    loop_families=3,
    precision_families=3,
    lowering_families=2,
    other_lowerings=CONCRETE,
    compare_size=64,
    steps=5,
    min_time=0.5,
    max_repeats=10,
    max_call_s=10.0,
    compile_guess_s=10.0,
    budget_s=420.0,
    lowering_check_families=FAMILY_ORDER,
    memory_items=((_deconv(2, 1), 64), (COORDCONV, 16), (_deconv(4, 3), 64)),
    scale_families=scale.FAMILIES,
    scale_sizes={
        "coordconv_classifier": (1, 8, 64, 256, 1024, 4096),
        "deconv_painter": (1, 8, 64, 256, 1024),
    },
)
SMOKE = Settings(
    op_sizes=(2,),
    conv_shape=OpShape(2, 4, 3, 4, 3, 1),
    transpose_shape=OpShape(2, 4, 3, 4, 4, 2),
    families=(_deconv(2, 1, batch=4),),
    family_sizes=(2,),
    loop_families=1,
    precision_families=1,
    lowering_families=1,
    other_lowerings=("lax",),
    compare_size=2,
    steps=2,
    min_time=0.0,
    max_repeats=2,
    max_call_s=5.0,
    compile_guess_s=2.0,
    budget_s=200.0,
    lowering_check_families=(_deconv(2, 1, batch=4),),
    memory_items=((("tiny", (), 8), 2),),
    scale_families=scale.SMOKE_FAMILIES,
    scale_sizes={"tiny": (1, 2)},
)


# --------------------------------------------------------------------------------------------
# Time, memory and the budget


class Budget:
    """Seconds left; an item runs only if its compiles (at the slowest seen so far) fit."""

    def __init__(self, seconds: float, compile_guess_s: float):
        self.start = time.perf_counter()
        self.seconds = seconds
        self.compile_s = compile_guess_s

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def allows(self, compiles: int = 1, extra_s: float = 0.0) -> bool:
        return self.elapsed() + compiles * self.compile_s * 1.2 + extra_s < self.seconds

    def saw_compile(self, seconds: float) -> None:
        self.compile_s = max(self.compile_s, seconds) if seconds > 0 else self.compile_s


def device_memory() -> tuple[int | None, int | None]:
    """``(peak_bytes_in_use, bytes_limit)`` of the first device, None where not reported."""
    try:
        stats = jax.devices()[0].memory_stats()
    except Exception:  # some backends raise instead of returning None
        stats = None
    if not stats:
        return None, None
    return stats.get("peak_bytes_in_use"), stats.get("bytes_limit")


def program_bytes(compiled) -> int | None:
    """Arguments + outputs + temporaries of a compiled program (``memory_analysis``)."""
    try:
        m = compiled.memory_analysis()
    except Exception:
        return None
    if m is None:
        return None
    total = m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes
    return int(total - getattr(m, "alias_size_in_bytes", 0))


def measure(build, args: tuple, units: int, settings: Settings, budget: Budget) -> dict:
    """Compile (timed apart), warm up, time calls; ``units`` work items per call.

    ``build(*args)`` compiles and returns ``(call, compiled)``: what to time and the compiled
    XLA program (for its memory). Returns ``compile_s``, ``call_s`` (median), ``rate``
    (units/s), ``spread``, ``calls``, ``program_bytes`` and ``peak_bytes`` (the device's running
    peak, None on CPU).
    """
    tick = time.perf_counter()
    call, compiled = build(*args)
    compile_s = time.perf_counter() - tick
    budget.saw_compile(compile_s)
    tick = time.perf_counter()
    jax.block_until_ready(call(*args))
    first = time.perf_counter() - tick
    times: list[float] = []
    if first > settings.max_call_s:
        times = [first]
    while len(times) < 3 or sum(times) < settings.min_time:
        if len(times) >= settings.max_repeats or (
            times and first + sum(times) > settings.max_call_s
        ):
            break  # enough calls, or slow ones: at most ~max_call_s of timing per item
        tick = time.perf_counter()
        jax.block_until_ready(call(*args))
        times.append(time.perf_counter() - tick)
    median = statistics.median(times)
    return {
        "compile_s": round(compile_s, 3),
        "call_s": median,
        "rate": units / median,
        "spread": (max(times) - min(times)) / median if len(times) > 1 else 0.0,
        "calls": len(times),
        "program_bytes": program_bytes(compiled),
        "peak_bytes": device_memory()[0],
    }


def aot(jitted) -> Callable:
    """``build`` for :func:`measure`: ``jitted.lower(*args).compile()``, called as is."""

    def build(*args):
        compiled = jitted.lower(*args).compile()
        return compiled, compiled

    return build


def too_big(previous: dict | None, m_prev: int, m: int, settings: Settings) -> str:
    """Why measuring at ``m`` is skipped, predicted from the measurement at ``m_prev``."""
    if previous is None or "call_s" not in previous:
        return ""
    scale = m / max(m_prev, 1)
    if previous["call_s"] * scale > settings.max_call_s:
        return f"predicted call {previous['call_s'] * scale:.1f} s > {settings.max_call_s} s"
    limit = device_memory()[1]
    if (
        limit
        and previous.get("program_bytes")
        and previous["program_bytes"] * scale > (MEMORY_FRACTION * limit)
    ):
        return (
            f"predicted memory {previous['program_bytes'] * scale / 2**30:.1f} GiB > "
            f"{MEMORY_FRACTION:.0%} of {limit / 2**30:.1f} GiB"
        )
    return ""


def guarded(item: dict, fn: Callable[[], dict]) -> dict:
    """``item`` updated with ``fn()``'s measurement, or with the error (never raises)."""
    try:
        item.update(fn())
    except Exception as err:  # an out-of-memory or a compiler failure is a result here
        item["error"] = f"{type(err).__name__}: {str(err).splitlines()[0][:300]}"
        item["traceback"] = traceback.format_exc(limit=3)[-1500:]
    return item


# --------------------------------------------------------------------------------------------
# 1. Lowerings of one convolution


def op_program(op: str, lowering: str, shape: OpShape, vmapped: bool):
    """Forward + d/dx + d/dkernel of ``sum(sin(conv(x, w)))``, vmapped over models or not."""
    fn = conv.conv_transpose if op == "conv_transpose" else conv.conv

    def loss(x, w):
        y = fn(
            x,
            w,
            strides=shape.stride,
            padding="SAME",
            lowering=lowering,
            precision=jax.lax.Precision.HIGHEST,
        )
        return jnp.sum(jnp.sin(y))

    grad = jax.value_and_grad(loss, argnums=(0, 1))
    return jax.jit(jax.vmap(grad) if vmapped else grad)


def op_inputs(shape: OpShape, num_models: int | None):
    kx, kw = jax.random.split(jax.random.key(0))
    lead = () if num_models is None else (num_models,)
    x = jax.random.normal(kx, (*lead, shape.batch, shape.spatial, shape.spatial, shape.c_in))
    w = jax.random.normal(kw, (*lead, shape.kernel, shape.kernel, shape.c_in, shape.c_out))
    return x, w * (shape.kernel**2 * shape.c_in) ** -0.5


def bench_lowerings(settings: Settings, budget: Budget, platform: str, out: list) -> None:
    for op, shape in (("conv", settings.conv_shape), ("conv_transpose", settings.transpose_shape)):
        for lowering in CONCRETE:
            if op == "conv" and lowering == "zero_insertion":
                continue  # the lax conv under that name
            previous, m_prev = None, 1
            for m in (None, *settings.op_sizes):  # None: one model, no vmap
                vmapped = m is not None
                item = {
                    "op": op,
                    "lowering": lowering,
                    "vmapped": vmapped,
                    "num_models": m or 1,
                    "shape": dataclasses.asdict(shape),
                    "auto": conv.default_lowering(
                        platform, transposed=op != "conv", vmapped=vmapped
                    ),
                }
                why = too_big(previous, m_prev, m or 1, settings) if vmapped else ""
                if not why and not budget.allows():
                    why = "time budget"
                if why:
                    out.append({**item, "skipped": why})
                    continue
                program = op_program(op, lowering, shape, vmapped)
                args = op_inputs(shape, m)
                guarded(
                    item,
                    lambda p=program, a=args, n=m or 1: measure(aot(p), a, n, settings, budget),
                )
                out.append(item)
                if vmapped and "call_s" in item:
                    previous, m_prev = item, m


def lowering_verdicts(rows: list[dict]) -> list[dict]:
    """Per (op, vmapped, M): the fastest lowering, ``auto``'s pick and how far behind it is."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        if "call_s" in r:
            groups.setdefault((r["op"], r["vmapped"], r["num_models"]), []).append(r)
    verdicts = []
    for (op, vmapped, m), group in groups.items():
        best = min(group, key=lambda r: r["call_s"])
        auto = next((r for r in group if r["lowering"] == group[0]["auto"]), None)
        verdicts.append(
            {
                "op": op,
                "vmapped": vmapped,
                "num_models": m,
                "fastest": best["lowering"],
                "auto": group[0]["auto"],
                "auto_vs_fastest": None if auto is None else auto["call_s"] / best["call_s"],
            }
        )
    return verdicts


# --------------------------------------------------------------------------------------------
# 2-5. The engine's programs on Fig S2's families


def family_label(family) -> str:
    model, shape, batch = family
    short = {"filter_size": "fs", "channel_mult": "c"}
    keys = ",".join(f"{short.get(k, k)}{v}" for k, v in shape)
    return " ".join(part for part in (model, keys, f"b{batch}") if part)


def family_bucket(family, num_models: int, precision: str = "highest"):
    """The engine's bucket of ``num_models`` seeds of one family (its planner's own)."""
    model, shape, batch = family
    base = {
        "task": "classification",
        "model": model,
        "batch_size": batch,
        "lr": 2e-3,
        "l2": 1e-3,
        "epochs": 1,
        "eval_every": 1,
        "precision": precision,
        **dict(shape),
    }
    grid = Grid(model, base=base, axes={"seed": list(range(num_models))})
    (bucket,) = plan(union(model, [grid]).expand())
    return bucket


def bench_family(
    family,
    m: int,
    settings: Settings,
    budget: Budget,
    *,
    precision: str = "highest",
    lowering: str | None = None,
) -> dict:
    """model-steps/s of the engine's ``compiled_steps`` program on an M-model bucket."""
    strategy, map_size, default = scale.engine_choice(m)
    lowering = lowering or default
    item = {
        "family": family_label(family),
        "model": family[0],
        "shape": dict(family[1]),
        "batch_size": family[2],
        "num_models": m,
        "strategy": strategy,
        "lowering": lowering,
        "precision": precision,
    }

    def run() -> dict:
        mesh = programs.make_mesh(True)
        tick = time.perf_counter()
        inputs = programs.bucket_inputs(family_bucket(family, m, precision), mesh, lowering)
        jax.block_until_ready(inputs.states)
        setup_s = time.perf_counter() - tick
        program = programs.compiled_steps(inputs.setup, settings.steps, strategy, map_size, mesh)
        args = (inputs.data, inputs.runs, inputs.states)
        result = measure(aot(program), args, m * settings.steps, settings, budget)
        return {**result, "setup_s": round(setup_s, 3), "params": inputs.param_counts[0]}

    return guarded(item, run)


def op_ratio(op_rows: list[dict], lowering: str, engine: str, m: int) -> float | None:
    """How many times longer one transposed conv took with ``lowering`` than with ``engine``
    at the measured M nearest ``m`` (inf: skipped there as too slow; None: unknown)."""
    rows = [r for r in op_rows if r["op"] == "conv_transpose" and r["vmapped"]]
    for k in sorted({r["num_models"] for r in rows}, key=lambda k: abs(math.log(k / m))):
        mine = next((r for r in rows if r["num_models"] == k and r["lowering"] == lowering), None)
        base = next(
            (r for r in rows if r["num_models"] == k and r["lowering"] == engine and "call_s" in r),
            None,
        )
        if mine is None or base is None:
            continue
        if "call_s" in mine:
            return mine["call_s"] / base["call_s"]
        if str(mine.get("skipped", "")).startswith("predicted call"):
            return math.inf
    return None


def family_skip_reason(
    families: list[dict],
    op_rows: list[dict],
    fam,
    m: int,
    lowering: str,
    engine: str,
    settings: Settings,
) -> str:
    """Why a family's program at M = ``m`` is not measured ('' when it is): too slow or too big
    predicted from the engine's own program at a smaller M (or, for another lowering, from the
    engine's program at ``m`` and the lowerings' ratio on one transposed conv)."""
    own = [
        r
        for r in families
        if r["family"] == family_label(fam)
        and "call_s" in r
        and r["precision"] == "highest"
        and r["lowering"] == engine
    ]
    if lowering == engine:
        return too_big(own[-1], own[-1]["num_models"], m, settings) if own else ""
    twin = next((r for r in own if r["num_models"] == m), None)
    ratio = op_ratio(op_rows, lowering, engine, m)
    if twin is None or ratio is None or not fam[0].startswith("deconv"):
        return ""
    if twin["call_s"] * ratio > settings.max_call_s:
        return (
            f"predicted call {twin['call_s'] * ratio:.1f} s > {settings.max_call_s} s "
            f"({lowering} took {ratio:.1f}x {engine}'s time on one transposed conv)"
        )
    return ""


def bench_loop(family, settings: Settings, budget: Budget) -> dict:
    """A Python loop of ``steps`` calls of the jitted single-model ``train_step`` (M = 1)."""
    *_, lowering = scale.engine_choice(1)
    item = {"family": family_label(family), "contender": "loop", "lowering": lowering}

    def run() -> dict:
        inputs = programs.bucket_inputs(family_bucket(family, 1), None, lowering)
        run_, state = jax.tree.map(lambda x: x[0], (inputs.runs, inputs.states))
        step = jax.jit(functools.partial(train_step, inputs.setup))
        size = inputs.setup.batch_size
        idx = jnp.arange(size, dtype=jnp.int32) % inputs.data.inputs.shape[0]
        mask = jnp.ones((size,), bool)

        def build(*args):
            compiled = step.lower(*args).compile()

            def call(data, run, state, idx, mask):
                for _ in range(settings.steps):
                    state = compiled(data, run, state, idx, mask)[0]
                return state

            return call, compiled

        args = (inputs.data, run_, state, idx, mask)
        return measure(build, args, settings.steps, settings, budget)

    return guarded(item, run)


# --------------------------------------------------------------------------------------------
# 0. The programs this device gets, lowered (and for cuda and tpu from here)


def target_platform() -> str:
    """The lowering platform of the first device (``cuda`` / ``rocm`` for a GPU)."""
    device = jax.devices()[0]
    if device.platform == "gpu":
        version = str(getattr(device.client, "platform_version", "")).lower()
        return "rocm" if "rocm" in version else "cuda"
    return device.platform


def check_lowerings(settings: Settings, budget: Budget, out: list) -> None:
    """Each family's training chunk (M = 2) lowered for this device's platform, cuda and tpu:
    its convolutions by ``lhs_dilate`` (transposed) or grouped (a vmapped convolution), where
    the rule promises the matmul forms, and ops below HIGHEST precision (TF32 on a GPU)."""
    platforms = list(dict.fromkeys([target_platform(), "cuda", "tpu"]))
    for fam in settings.lowering_check_families:
        bucket = family_bucket(fam, 2)
        for platform in platforms:
            item = {"family": family_label(fam), "platform": platform,
                    "lowering": target.target_lowering(platform)}  # fmt: skip
            if not budget.allows(compiles=0, extra_s=5.0):
                out.append({**item, "skipped": "time budget"})
                continue

            def run(bucket=bucket, platform=platform):
                ops = target.program_ops(target.lowered_chunk(bucket, platform).as_text())
                convs = [op for op in ops if op.kind == "convolution"]
                return {"convs": len(convs), "dots": len(ops) - len(convs),
                        "transposed": sum(op.transposed for op in convs),
                        "grouped": sum(op.grouped for op in convs),
                        "below_highest": sum(not op.full_precision for op in ops)}  # fmt: skip

            guarded(item, run)
            if "convs" in item:
                matmul = item["lowering"] == "matmul"
                item["ok"] = item["below_highest"] == 0 and not (
                    matmul and (item["transposed"] or item["grouped"])
                )
            out.append(item)


# --------------------------------------------------------------------------------------------
# 7. Memory: the host's estimate against the device's own analysis and its measured peak


def check_memory(settings: Settings, budget: Budget, out: list) -> None:
    """For each (family, M): XLA's analysis of the engine's one-epoch chunk by the host's CPU
    compiler (what ``coordjax sweep --dry-run --device-memory`` reports on a CPU host) and by
    this device's compiler, and the device's peak after running the chunk once. Run first and
    smallest first: ``peak_bytes_in_use`` is the process's running peak."""
    try:
        host = jax.devices("cpu")[0]
    except RuntimeError:  # JAX_PLATFORMS leaves the CPU backend out: no host estimate
        host = None
    device = jax.devices()[0]
    for fam, m in settings.memory_items:
        strategy, map_size, lowering = scale.engine_choice(m)
        item = {"family": family_label(fam), "num_models": m, "strategy": strategy,
                "lowering": lowering}  # fmt: skip
        if not budget.allows(compiles=3):
            out.append({**item, "skipped": "time budget"})
            continue

        def run(fam=fam, m=m, strategy=strategy, map_size=map_size, lowering=lowering):
            bucket = family_bucket(fam, m)
            own = memory.chunk_memory(bucket, m, strategy, map_size, lowering, device)
            estimate_ = (
                own
                if device.platform == "cpu" or host is None
                else memory.chunk_memory(bucket, m, strategy, map_size, lowering, host)
            )
            result = {"device_analysis_bytes": own.peak}
            if host is not None:
                result["host_bytes"] = estimate_.peak
            limit = device_memory()[1]
            if limit and own.peak > MEMORY_FRACTION * limit:
                return {**result, "note": f"not run: > {MEMORY_FRACTION:.0%} of the device"}
            inputs = programs.bucket_inputs(bucket, None, lowering)
            program = programs.compiled_chunk(inputs.setup, 1, strategy, map_size, None)
            tick = time.perf_counter()
            jax.block_until_ready(program(inputs.data, inputs.runs, inputs.states))
            return {
                **result,
                "run_s": time.perf_counter() - tick,
                "peak_bytes": device_memory()[0],
                "peak_rss_bytes": scale.peak_rss_bytes(),
            }

        out.append(guarded(item, run))


# --------------------------------------------------------------------------------------------
# 9. The zoo against torch on this device (M = 1)


def bench_torch(fam, settings: Settings, budget: Budget) -> dict:
    """PyTorch eager on this device (CUDA when torch sees one), one model, the engine's first
    batch, Adam: model-steps/s (``benchmarks/torch_zoo.py``)."""
    item = {"family": family_label(fam), "contender": "torch"}
    try:
        import torch
        import torch_zoo
    except ImportError:
        return {**item, "skipped": "torch is not installed"}
    if not budget.allows(compiles=1):
        return {**item, "skipped": "time budget"}
    model_name, shape, batch = fam
    where = "cuda" if torch.cuda.is_available() and jax.devices()[0].platform == "gpu" else "cpu"

    def run():
        import numpy as np

        inputs = programs.bucket_inputs(family_bucket(fam, 1), None, "lax")
        x, y = np.asarray(inputs.data.inputs), np.asarray(inputs.data.targets)
        idx = np.arange(batch) % x.shape[0]
        x, y = x[idx], y[idx].reshape(batch, -1).argmax(axis=1)
        if x.ndim == 4:  # NHWC -> NCHW
            x = x.transpose(0, 3, 1, 2)
        x = torch.from_numpy(np.ascontiguousarray(x)).to(where)
        y = torch.from_numpy(np.ascontiguousarray(y)).to(where)
        torch.manual_seed(0)
        model = torch_zoo.build(model_name, **dict(shape)).to(where)
        step = torch_zoo.make_step(model, "classification", 2e-3, 1e-3)

        def call():
            for _ in range(settings.steps):
                loss = step(x, y)
            return float(loss)  # waits for the device

        call()
        times = [benchlib.timed(call) for _ in range(3)]
        return {"rate": settings.steps / statistics.median(times), "device": where,
                "torch": torch.__version__}  # fmt: skip

    return guarded(item, run)


# --------------------------------------------------------------------------------------------
# 6. The paper grid's estimate


def paper_sweep(preset: str = "paper"):
    """A preset of ``sweeps/classification.py``, loaded from this checkout."""
    path = REPO / "sweeps" / "classification.py"
    spec = importlib.util.spec_from_file_location("device_check_classification", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.PRESETS[preset]()


def estimate(family_rows: list[dict], precision: str, preset: str = "paper") -> dict:
    """A classification preset's estimated time from the rates measured at ``precision``
    (with its pruning rule, the time pruned as well)."""
    kind, platform = jax.devices()[0].device_kind, jax.devices()[0].platform
    devices = len(jax.local_devices())
    table = []
    for r in family_rows:
        if "rate" not in r or r["precision"] != precision:
            continue
        spec = models.MODELS[r["model"]]
        model = models.build(r["model"], **r["shape"])
        table.append(
            rates.Rate(
                model=r["model"],
                shape=tuple(sorted(r["shape"].items())),
                batch_size=r["batch_size"],
                num_models=-(-r["num_models"] // devices),
                model_steps_per_s=r["rate"],
                step_flops=rates.train_step_flops(model, spec.input_shape, r["batch_size"]),
                compile_s=r["compile_s"],
                lowering=r["lowering"],
            )
        )
    if not table:
        return {"precision": precision, "preset": preset, "skipped": "no rates measured"}
    sweep = paper_sweep(preset)
    est = rates.estimate_seconds(
        sweep,
        EngineOptions(progress=False),
        device_kind=kind,
        platform=platform,
        rates={kind: table},
    )
    bases: dict[str, int] = {}
    for b in est.buckets:
        bases[b.basis] = bases.get(b.basis, 0) + 1
    pruned = {}
    if sweep.rules():
        buckets = plan(sweep.expand(), experiment=sweep.experiment)
        *_, seconds = pruned_estimate(sweep, buckets, est)
        pruned = {"pruned_seconds": seconds, "pruned_duration": format_duration(seconds)}
    return {
        "preset": preset,
        "models": len(sweep.expand()),
        **pruned,
        "precision": precision,
        "seconds": est.seconds,
        "duration": format_duration(est.seconds),
        "buckets": len(est.buckets),
        "bases": bases,
        "compile_s": sum(b.compile_s for b in est.buckets),
        "rates_used": len(table),
    }


# --------------------------------------------------------------------------------------------
# Report


def _fmt(value, spec: str = ".3g", missing: str = "-") -> str:
    return missing if value is None else format(value, spec)


def _status(r: dict) -> str:
    return r.get("skipped") and f"skipped: {r['skipped']}" or r.get("error", "")


def markdown(result: dict) -> str:
    lines = [*result["header"], ""]
    s = result["settings"]
    lines += [
        f"Mode: {'smoke' if result['smoke'] else 'full'}; elapsed {result['elapsed_s']:.0f} s "
        f"of a {s['budget_s']:.0f} s budget; engine default lowering `{result['engine_lowering']}`"
        f" (`conv.resolve_lowering('auto')`), {s['steps']} steps per timed call, median of up "
        f"to {s['max_repeats']} calls. Memory: the program's (`memory_analysis`) and the "
        "device's running peak (`memory_stats`, where reported).",
        "",
        "## 1. Lowerings of one convolution (forward + both gradients, precision highest)",
        "",
        "| op | lowering | vmapped | M | auto | ms / model | compile s | program MiB | note |",
        "|---|---|---|---:|---|---:|---:|---:|---|",
    ]
    for r in result["lowerings"]:
        per_model = r["call_s"] / r["num_models"] * 1e3 if "call_s" in r else None
        lines.append(
            f"| {r['op']} | {r['lowering']} | {r['vmapped']} | {r['num_models']} | {r['auto']} | "
            f"{_fmt(per_model)} | {_fmt(r.get('compile_s'), '.1f')} | "
            f"{_fmt(r.get('program_bytes') and r['program_bytes'] / 2**20, '.0f')} | "
            f"{_status(r)} |"
        )
    lines += [
        "",
        "Verdict per op and M (auto's time / the fastest; 1.00 = auto is fastest):",
        "",
        "| op | vmapped | M | fastest | auto | auto / fastest |",
        "|---|---|---:|---|---|---:|",
    ]
    for v in result["verdicts"]:
        lines.append(
            f"| {v['op']} | {v['vmapped']} | {v['num_models']} | {v['fastest']} | {v['auto']} | "
            f"{_fmt(v['auto_vs_fastest'], '.2f')} |"
        )
    lines += [
        "",
        "## 2. Fig S2 families: the engine's program",
        "",
        "| family | M | strategy | lowering | precision | model-steps/s | compile s | setup s | "
        "program MiB | peak MiB | note |",
        "|---|---:|---|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in result["families"]:
        lines.append(
            f"| {r['family']} | {r['num_models']} | {r['strategy']} | {r['lowering']} | "
            f"{r['precision']} | {_fmt(r.get('rate'))} | {_fmt(r.get('compile_s'), '.1f')} | "
            f"{_fmt(r.get('setup_s'), '.1f')} | "
            f"{_fmt(r.get('program_bytes') and r['program_bytes'] / 2**20, '.0f')} | "
            f"{_fmt(r.get('peak_bytes') and r['peak_bytes'] / 2**20, '.0f')} | {_status(r)} |"
        )
    lines += [
        "",
        "## 3. Engine vs a per-model jitted loop",
        "",
        "| family | loop model-steps/s | engine M | engine model-steps/s | engine / loop |",
        "|---|---:|---:|---:|---:|",
    ]
    engine_rows = [
        r
        for r in result["families"]
        if "rate" in r
        and r["precision"] == "highest"
        and r["lowering"] == result["engine_lowering"]
    ]
    for loop in result["loop"]:
        if "rate" not in loop:
            lines.append(f"| {loop['family']} | - | | | {_status(loop)} |")
            continue
        for r in (r for r in engine_rows if r["family"] == loop["family"]):
            lines.append(
                f"| {loop['family']} | {loop['rate']:.3g} | {r['num_models']} | {r['rate']:.3g} |"
                f" {r['rate'] / loop['rate']:.2f}x |"
            )
    lines += [
        "",
        "## 4. Precision: default vs highest (same program otherwise)",
        "",
        "| family | M | highest model-steps/s | default model-steps/s | default / highest |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in result["families"]:
        if r["precision"] != "default":
            continue
        twin = next(
            (
                h
                for h in engine_rows
                if h["family"] == r["family"] and h["num_models"] == r["num_models"]
            ),
            None,
        )
        ratio = r["rate"] / twin["rate"] if twin and "rate" in r else None
        lines.append(
            f"| {r['family']} | {r['num_models']} | {_fmt(twin and twin['rate'])} | "
            f"{_fmt(r.get('rate'))} | {_fmt(ratio, '.2f')} |"
        )
    lines += ["", "## 5. Estimated time of the classification presets on this device", ""]
    for e in result["estimates"]:
        name = f"`{e.get('preset', 'paper')}`"
        if "seconds" in e:
            pruned = (f"; **{e['pruned_duration']} with its successive halving** (if no run "
                      "diverges)" if "pruned_duration" in e else "")  # fmt: skip
            lines.append(
                f"- {name} ({e['models']} models), precision {e['precision']}: "
                f"**{e['duration']}** unpruned{pruned} ({e['buckets']} buckets; bases "
                f"{e['bases']}; compiles {e['compile_s']:.0f} s; from {e['rates_used']} "
                "measured rates)"
            )
        else:
            lines.append(f"- {name}, precision {e['precision']}: "
                         f"{e.get('skipped') or e.get('error')}")  # fmt: skip
    lines += [
        "",
        "## 6. The programs the device gets (training chunk at M = 2, lowered)",
        "",
        "Convolutions by `lhs_dilate` are transposed, grouped ones are vmapped convolutions; "
        "with the `matmul` lowering neither should appear. Every op should request HIGHEST "
        "precision (no TF32).",
        "",
        "| family | platform | lowering | convs | dots | lhs_dilate | grouped | below HIGHEST "
        "| ok |",
        "|---|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in result["lowering_check"]:
        if "convs" not in r:
            lines.append(f"| {r['family']} | {r['platform']} | {r['lowering']} | | | | | | "
                         f"{_status(r)} |")  # fmt: skip
            continue
        lines.append(
            f"| {r['family']} | {r['platform']} | {r['lowering']} | {r['convs']} | {r['dots']} "
            f"| {r['transposed']} | {r['grouped']} | {r['below_highest']} | "
            f"{'yes' if r['ok'] else '**no**'} |"
        )
    lines += [
        "",
        "## 7. Memory: the host's estimate against the device",
        "",
        "XLA's analysis (arguments + outputs not aliased + temporaries) of the engine's one-epoch "
        "chunk compiled by the host's CPU compiler (what `coordjax sweep --dry-run "
        "--device-memory` plans with on a CPU host) and by this device's compiler, and the "
        "device's `peak_bytes_in_use` after running it (a running peak: the items run first, "
        "smallest first).",
        "",
        "| family | M | strategy | host estimate MiB | device analysis MiB | device peak MiB "
        "| peak / estimate | note |",
        "|---|---:|---|---:|---:|---:|---:|---|",
    ]
    for r in result["memory"]:
        ratio = (r["peak_bytes"] / r["host_bytes"]
                 if r.get("peak_bytes") and r.get("host_bytes") else None)  # fmt: skip
        lines.append(
            f"| {r['family']} | {r['num_models']} | {r['strategy']} | "
            f"{_fmt(r.get('host_bytes') and r['host_bytes'] / 2**20, '.0f')} | "
            f"{_fmt(r.get('device_analysis_bytes') and r['device_analysis_bytes'] / 2**20, '.0f')}"
            f" | {_fmt(r.get('peak_bytes') and r['peak_bytes'] / 2**20, '.0f')} | "
            f"{_fmt(ratio, '.2f')} | {r.get('note') or _status(r)} |"
        )
    lines += ["", "## 8. The model axis: the engine's cost from 1 model to thousands", ""]
    lines += scale.table_lines(result["scale"])
    lines += [
        "",
        "## 9. The zoo against torch on this device",
        "",
        "| family | torch model-steps/s (M = 1) | engine M = 1 | engine M = 256 | "
        "engine 256 / torch | note |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for t in result["torch"]:
        mine = {r["num_models"]: r.get("rate") for r in engine_rows if r["family"] == t["family"]}
        ratio = mine.get(256) / t["rate"] if mine.get(256) and t.get("rate") else None
        lines.append(
            f"| {t['family']} | {_fmt(t.get('rate'))} | {_fmt(mine.get(1))} | "
            f"{_fmt(mine.get(256))} | {_fmt(ratio, '.2f')} | "
            f"{t.get('device', '')} {_status(t)} |"
        )
    return "\n".join(lines) + "\n"


def plot(result: dict, path: pathlib.Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for (op, low), marker in zip(
        [(o, lo) for o in ("conv", "conv_transpose") for lo in CONCRETE], "osD^v<", strict=False
    ):
        pts = [
            (r["num_models"], r["call_s"] / r["num_models"] * 1e3)
            for r in result["lowerings"]
            if r["op"] == op and r["lowering"] == low and r["vmapped"] and "call_s" in r
        ]
        if pts:
            axes[0].plot(*zip(*pts, strict=True), marker=marker, label=f"{op} {low}")
    axes[0].set(
        xscale="log",
        yscale="log",
        xlabel="models M (vmapped)",
        ylabel="ms per model",
        title="one convolution, fwd + grads",
    )
    axes[0].legend(fontsize=7)
    fams = sorted({r["family"] for r in result["families"]})
    for fam in fams:
        pts = sorted(
            (r["num_models"], r["rate"])
            for r in result["families"]
            if r["family"] == fam
            and "rate" in r
            and r["precision"] == "highest"
            and r["lowering"] == result["engine_lowering"]
        )
        if pts:
            axes[1].plot(*zip(*pts, strict=True), marker="o", label=fam)
    axes[1].set(
        xscale="log",
        yscale="log",
        xlabel="models M",
        ylabel="model-steps/s",
        title="Fig S2 families: the engine's program",
    )
    axes[1].legend(fontsize=7)
    fig.suptitle(f"device check: {jax.devices()[0].device_kind}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write(result: dict, out_dir: pathlib.Path, final: bool) -> pathlib.Path:
    """Writes the json and md (and at the end the png); returns the md path."""
    result["elapsed_s"] = time.perf_counter() - result["_start"]
    md = benchlib.output_path(out_dir, "device")
    md.parent.mkdir(parents=True, exist_ok=True)
    public = {k: v for k, v in result.items() if not k.startswith("_")}
    md.with_suffix(".json").write_text(json.dumps(public, indent=1, default=str))
    md.write_text(markdown(public))
    if final:
        plot(public, md.with_suffix(".png"))
    return md


# --------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(DEFAULT_OUT_DIR), help="output folder")
    parser.add_argument("--smoke", action="store_true", help="a tiny run (CPU, < 2 min)")
    parser.add_argument("--budget-s", type=float, help="seconds of measurement (default: mode's)")
    args = parser.parse_args(argv)
    settings = SMOKE if args.smoke else FULL
    if args.budget_s is not None:
        settings = dataclasses.replace(settings, budget_s=args.budget_s)
    budget = Budget(settings.budget_s, settings.compile_guess_s)
    out_dir = pathlib.Path(args.out)
    platform = jax.devices()[0].platform
    result: dict[str, Any] = {
        "_start": budget.start,
        "header": benchlib.environment_lines("Device check: every platform on its fast path"),
        "smoke": args.smoke,
        "settings": dataclasses.asdict(settings),
        "platform": platform,
        "device_kind": jax.devices()[0].device_kind,
        "num_devices": len(jax.devices()),
        "engine_lowering": conv.resolve_lowering("auto"),
        "default_lowering_table": {
            f"transposed={t},vmapped={v}": conv.default_lowering(platform, transposed=t, vmapped=v)
            for t in (False, True)
            for v in (False, True)
        },
        "lowerings": [],
        "verdicts": [],
        "families": [],
        "loop": [],
        "estimates": [],
        "lowering_check": [],
        "memory": [],
        "scale": [],
        "torch": [],
    }

    def log(message: str) -> None:
        print(f"[{budget.elapsed():6.1f} s] {message}", flush=True)

    log("7. memory: the host's estimate against the device (first: the peak is running)")
    check_memory(settings, budget, result["memory"])
    for r in result["memory"]:
        log(f"{r['family']} M={r['num_models']}: host {_fmt(r.get('host_bytes'))} B, "
            f"device peak {_fmt(r.get('peak_bytes'))} B {_status(r)}")  # fmt: skip
    log("6. the programs the device gets, lowered")
    check_lowerings(settings, budget, result["lowering_check"])
    bad = [r for r in result["lowering_check"] if r.get("ok") is False]
    log(f"{len(result['lowering_check'])} lowered, {len(bad)} off the fast path")
    write(result, out_dir, final=False)

    log(f"1. lowerings on {result['device_kind']}")
    bench_lowerings(settings, budget, platform, result["lowerings"])
    result["verdicts"] = lowering_verdicts(result["lowerings"])
    write(result, out_dir, final=False)

    families = result["families"]
    first = settings.family_sizes[0]

    def family(fam, m, lowering=None, precision="highest"):
        engine = result["engine_lowering"]
        lowering = lowering or engine
        why = family_skip_reason(families, result["lowerings"], fam, m, lowering, engine, settings)
        if not why and not budget.allows():
            why = "time budget"
        if why:
            families.append(
                {
                    "family": family_label(fam),
                    "num_models": m,
                    "strategy": "-",
                    "lowering": lowering,
                    "precision": precision,
                    "skipped": why,
                }
            )
        else:
            families.append(
                bench_family(fam, m, settings, budget, precision=precision, lowering=lowering)
            )
        r = families[-1]
        log(
            f"{r['family']} M={m} {lowering} {precision}: {_fmt(r.get('rate'))} model-steps/s "
            f"{_status(r)}"
        )

    log(f"2. families at M={first}")
    for fam in settings.families:
        family(fam, first)
    write(result, out_dir, final=False)

    log("3. engine vs loop")
    for fam in settings.families[: settings.loop_families]:
        if budget.allows():
            result["loop"].append(bench_loop(fam, settings, budget))
        else:
            result["loop"].append({"family": family_label(fam), "skipped": "time budget"})
        log(f"{family_label(fam)} loop: {_fmt(result['loop'][-1].get('rate'))} model-steps/s")
    log("4. precision default vs highest")
    for fam in settings.families[: settings.precision_families]:
        family(fam, settings.compare_size, precision="default")
    log("5. model-level lowerings")
    for fam in settings.families[: settings.lowering_families]:
        for low in settings.other_lowerings:
            if low != result["engine_lowering"]:
                family(fam, settings.compare_size, lowering=low)
    write(result, out_dir, final=False)

    log("8. the model axis")
    result["scale"] = scale.measure_curve(
        settings.scale_families,
        scale.Settings(sizes=(), steps=settings.steps, min_time=settings.min_time,
                       max_call_s=settings.max_call_s),
        log=log,
        allows=budget.allows,
        sizes_for=lambda f: settings.scale_sizes.get(f.model, ()),
    )  # fmt: skip
    write(result, out_dir, final=False)

    for m in settings.family_sizes[1:]:
        log(f"2. families at M={m}")
        for fam in settings.families:
            family(fam, m)
        write(result, out_dir, final=False)

    log("9. the zoo against torch")
    for fam in settings.families:
        result["torch"].append(bench_torch(fam, settings, budget))
        log(f"{family_label(fam)} torch: {_fmt(result['torch'][-1].get('rate'))} "
            f"{_status(result['torch'][-1])}")  # fmt: skip

    log("5. estimates of the classification presets")
    for preset in ("paper", "paper-halving"):
        for precision in ("highest", "default"):
            try:
                result["estimates"].append(estimate(families, precision, preset))
            except Exception as err:
                result["estimates"].append(
                    {"preset": preset, "precision": precision, "error": repr(err)[:300]}
                )
    md = write(result, out_dir, final=True)
    print(md.read_text())
    print(f"wrote {md} (+ .json, .png)")


if __name__ == "__main__":
    main()

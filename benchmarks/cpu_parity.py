"""CPU parity: where the engine trails PyTorch eager on one model, and which floor stops it.

    python benchmarks/cpu_parity.py            # about 12 min on an idle 2-core CPU
    python benchmarks/cpu_parity.py --smoke    # seconds: one small case, short timings

The zoo (``benchmarks/zoo.py``) found the conv regressors at 0.29-0.73x torch eager and the
filter-size-4 deconv painters at 0.42-0.70x at M = 1. This script measures, in one report:

1. **Page faults.** XLA:CPU allocates each call's buffers with ``malloc``; glibc serves blocks
   above its mmap threshold (32 MiB at most) with fresh ``mmap`` pages, so every call
   first-touches (page-faults and zeroes) its large temporaries. The engine's zoo timing runs 2
   steps per call; a real chunk runs an epoch or more per call. Each case is timed at 2 and at
   8 steps per call, with the minor page faults and system time per step, and the whole
   measurement runs twice: with the default allocator and with
   ``GLIBC_TUNABLES=glibc.malloc.hugetlb=1`` (glibc >= 2.35: malloc's mmap'd blocks use
   transparent huge pages, 512x fewer faults). Each run times torch in the same process, so
   each ratio is within one run.
2. **The layers behind the gap**, in one process: a 2x2 max pool's forward and gradient (flax's
   ``reduce_window``, whose gradient is a ``select_and_scatter``, against the zoo's
   ``coordjax.models.blocks.max_pool``), and a 3x3 16 -> 16 convolution's forward and gradients
   at the regressors' size, inside ``lax.scan`` as the engine runs it, lowered as XLA
   convolutions (``lax``) and as patches + matmul (the engine's CPU default), against torch.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import resource
import subprocess
import sys
import time
from collections.abc import Sequence

import benchlib
import jax
import jax.numpy as jnp
import zoo

from coordjax import conv as cconv
from coordjax.models.blocks import max_pool
from coordjax.sweep import programs

CASES = ("conv_regressor_uniform:c1", "conv_regressor_quadrant:c1", "coordconv_regressor",
         "deconv_painter:fs4,c1", "deconv_painter:fs4,c2", "deconv_painter:fs4,c3",
         "deconv_painter:fs2,c1", "coordconv_classifier:c1")  # fmt: skip
"""The families the zoo found below parity, then two at parity for comparison."""

STEPS_PER_CALL = (2, 8)
HUGE_PAGES = "glibc.malloc.hugetlb=1"
DEFAULT_OUT_DIR = pathlib.Path(__file__).parent / "results"


def engine_rate(case: zoo.Case, num_models: int, steps: int, strategy: str, min_time: float):
    """``(model-steps/s, minor faults per model-step, system s per model-step)`` of the
    engine's ``steps``-step program on an M-model bucket."""
    setup, data, runs, states, mesh, _ = zoo.engine_inputs(case, num_models)
    program = programs.compiled_steps(setup, steps, strategy, 1, mesh)

    def call():
        return jax.block_until_ready(program(data, runs, states))

    call()
    before, calls, start = resource.getrusage(resource.RUSAGE_SELF), 0, time.perf_counter()
    while calls < 2 or time.perf_counter() - start < min_time:
        call()
        calls += 1
    seconds, after = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF)
    units = calls * steps * num_models
    return (units / seconds, (after.ru_minflt - before.ru_minflt) / units,
            (after.ru_stime - before.ru_stime) / units)  # fmt: skip


def measure_cases(labels: Sequence[str], min_time: float, log) -> list[dict]:
    """Torch, then the engine at M = 1 (each steps-per-call) and M = 8 (its CPU strategy)."""
    rows = []
    for label in labels:
        case = next(c for c in zoo.CASES if c.label == label)
        torch_rows = zoo.bench_torch(case, min_time, log)
        row = {"case": label, "torch": torch_rows[0].model_steps_per_s}
        for steps in STEPS_PER_CALL:
            rate, faults, system = engine_rate(case, 1, steps, "vmap", min_time)
            row[f"m1_k{steps}"], row[f"faults_k{steps}"] = rate, faults
            row[f"sys_k{steps}"] = system
            log(f"{label} M=1, {steps} steps/call: {rate:.3g} model-steps/s, {faults:.0f} faults")
        row["m8_map"] = engine_rate(case, 8, STEPS_PER_CALL[0], "map", min_time)[0]
        log(f"{label} M=8 map: {row['m8_map']:.3g} model-steps/s")
        rows.append(row)
    return rows


def _rate(fn, min_time: float) -> float:
    fn()
    calls, start = 0, time.perf_counter()
    while calls < 2 or time.perf_counter() - start < min_time:
        fn()
        calls += 1
    return calls / (time.perf_counter() - start)


def measure_layers(min_time: float, smoke: bool) -> list[tuple[str, float, float, float]]:
    """``(layer, flax-or-lax calls/s, ours calls/s, torch calls/s)`` for the pool and a conv."""
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(os.cpu_count() or 1)
    batch, side, channels = (8, 16, 16) if smoke else (256, 64, 16)
    x = jax.random.normal(jax.random.key(0), (batch, side, side, channels))
    pools = {
        "flax": lambda x: jax.lax.reduce_window(
            x, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID"
        ),
        "ours": lambda x: max_pool(x, (2, 2)),
    }
    pool_rates = {}
    for name, pool in pools.items():
        grad = jax.jit(jax.grad(lambda x, pool=pool: jnp.sum(pool(x) ** 2)))
        pool_rates[name] = _rate(lambda grad=grad: jax.block_until_ready(grad(x)), min_time)
    tx = torch.randn(batch, channels, side, side, requires_grad=True)
    pool_torch = _rate(lambda: (F.max_pool2d(tx, 2) ** 2).sum().backward(), min_time)
    rows = [(f"2x2 max pool of ({batch}, {side}, {side}, {channels}), forward + gradient",
             pool_rates["flax"], pool_rates["ours"], pool_torch)]  # fmt: skip

    side //= 2
    x = jax.random.normal(jax.random.key(1), (batch, side, side, channels))
    w = jax.random.normal(jax.random.key(2), (3, 3, channels, channels)) * 0.1
    conv_rates = {}
    for lowering in ("lax", "matmul"):

        def loss(x, w, lowering=lowering):
            return jnp.sum(cconv.conv(x, w, padding="SAME", lowering=lowering) ** 2)

        def two_steps(x, w, loss=loss):
            def body(w, _):
                gx, gw = jax.grad(loss, argnums=(0, 1))(x, w)
                return w - 1e-6 * gw + 0 * jnp.sum(gx), None

            return jax.lax.scan(body, w, None, length=2)[0]

        program = jax.jit(two_steps)
        rate = _rate(lambda program=program: jax.block_until_ready(program(x, w)), min_time)
        conv_rates[lowering] = 2 * rate
    tx = torch.randn(batch, channels, side, side, requires_grad=True)
    tw = torch.randn(channels, channels, 3, 3, requires_grad=True)
    conv_torch = _rate(lambda: (F.conv2d(tx, tw, padding=1) ** 2).sum().backward(), min_time)
    layer = (f"3x3 conv {channels} -> {channels} of ({batch}, {side}, {side}), forward + both "
             "gradients, in lax.scan")  # fmt: skip
    rows.append((layer, conv_rates["lax"], conv_rates["matmul"], conv_torch))
    return rows


def child(args: argparse.Namespace) -> None:
    """One measurement process: the cases (and the layers), as JSON on stdout."""
    labels = ["deconv_painter:fs2,c1"] if args.smoke else list(CASES)
    min_time = 0.05 if args.smoke else args.min_time
    out = {"cases": measure_cases(labels, min_time, lambda m: print(m, file=sys.stderr))}
    if args.layers:
        out["layers"] = measure_layers(min_time, args.smoke)
    print(json.dumps(out))


def run_child(args: argparse.Namespace, tunables: str | None, layers: bool) -> dict:
    env = dict(os.environ)
    env.pop("GLIBC_TUNABLES", None)
    if tunables:
        env["GLIBC_TUNABLES"] = tunables
    command = [sys.executable, __file__, "--child", "--min-time", str(args.min_time)]
    command += ["--smoke"] * args.smoke + ["--layers"] * layers
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode:
        raise SystemExit(f"cpu_parity: the measuring process failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def ratio(a: float | None, b: float | None) -> str:
    return "–" if not a or not b else f"{a / b:.2f}×"


def report(default: dict, huge: dict, elapsed: float) -> str:
    lines = benchlib.environment_lines("CPU parity: the engine against PyTorch eager, one model")
    torch, _ = zoo.import_torch()
    lines += [
        f"- CPU: {benchlib.cpu_model()}, {os.cpu_count()} cores; torch "
        f"{torch.__version__ if torch else 'not installed'}; glibc "
        f"{os.confstr('CS_GNU_LIBC_VERSION') if hasattr(os, 'confstr') else 'n/a'}",
        f"- run: {elapsed:.0f} s; two measuring processes, one with the default allocator and "
        f"one with `GLIBC_TUNABLES={HUGE_PAGES}`, each timing torch and the engine; "
        "**compare ratios within a process**.",
        "",
        "## The engine at M = 1 and M = 8 against torch eager",
        "",
        "`k2` / `k8`: the engine's single-model program at 2 and 8 training steps per call "
        "(a real chunk is an epoch or more); `faults`: minor page faults per step; `M = 8`: the "
        "per-model rate of 8 models under the CPU strategy (`lax.map`), against torch's M = 1.",
        "",
        "| model | allocator | torch | engine k2 | engine k8 | k2 / torch | k8 / torch | "
        "M = 8 / torch | faults k2 | faults k8 | system s/step k2 |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, run in (("default", default), ("huge pages", huge)):
        for row in run["cases"]:
            lines.append(
                f"| {row['case']} | {name} | {row['torch']:.3g} | {row['m1_k2']:.3g} | "
                f"{row['m1_k8']:.3g} | {ratio(row['m1_k2'], row['torch'])} | "
                f"{ratio(row['m1_k8'], row['torch'])} | {ratio(row['m8_map'], row['torch'])} | "
                f"{row['faults_k2']:.0f} | {row['faults_k8']:.0f} | {row['sys_k2']:.3f} |"
            )
    lines += [
        "",
        "## The layers behind the gap (default allocator)",
        "",
        "Calls per second of one forward + gradient; `XLA form` is flax's `reduce_window` pool "
        "and the `lax` convolution, `ours` the zoo's `max_pool` and the `matmul` lowering.",
        "",
        "| layer | XLA form | ours | torch | ours / XLA form | ours / torch |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for layer, xla, ours, torch_rate in default.get("layers", []):
        lines.append(f"| {layer} | {xla:.3g} | {ours:.3g} | {torch_rate:.3g} | "
                     f"{ratio(ours, xla)} | {ratio(ours, torch_rate)} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="one small case, short timings")
    parser.add_argument("--min-time", type=float, default=1.0, help="seconds timed per rate")
    parser.add_argument("--out-dir", type=pathlib.Path, default=DEFAULT_OUT_DIR)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--layers", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child(args)
    if zoo.import_torch()[0] is None:
        raise SystemExit(f"cpu_parity: needs PyTorch ({zoo.TORCH_HINT})")
    start = time.perf_counter()
    default = run_child(args, None, layers=True)
    huge = run_child(args, HUGE_PAGES, layers=False)
    text = report(default, huge, time.perf_counter() - start)
    name = "cpu_parity-smoke" if args.smoke else "cpu_parity"
    benchlib.write_report(args.out_dir, name, text)


if __name__ == "__main__":
    main()

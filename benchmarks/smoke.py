"""The README's first command on this machine, its time split: install, start-up, compile, training.

    python benchmarks/smoke.py               # a few minutes on 2 idle cores
    python benchmarks/smoke.py --no-install  # writes results/smoke-time-<device_kind>.md

1. **install**: ``python -m venv`` and ``pip install --no-cache-dir -e .`` (the README's install
   of the main job) into a fresh virtualenv, timed (downloads from the package index included).
2. **start-up**: ``python -c "import coordjax.cli, coordjax.sweep.engine"`` in a child
   process, timed: the interpreter and the imports (jax, flax, optax, orbax) a sweep pays.
3. **the smoke sweep**, ``coordjax sweep classification --preset smoke --no-progress
   --no-report`` run in this process (``coordjax.cli.main``) into a fresh workdir, with
   ``jax.monitoring`` listeners summing the seconds JAX spends tracing, lowering and compiling
   (**compile**); the rest of the sweep's time is **training** (training steps, evaluations,
   checkpoints, data). ``results.csv``'s wall times are shown beside it: they time each chunk's
   call, so they include the first call's compile.

The machine must be otherwise idle. JAX's persistent compilation cache is not enabled by
coordjax, so every run compiles from scratch, as on a fresh machine.
"""

from __future__ import annotations

import argparse
import contextlib
import pathlib
import subprocess
import sys
import tempfile
import time

import benchlib
import jax
import pandas as pd

from coordjax import cli

ROOT = pathlib.Path(__file__).resolve().parents[1]
COMPILE_EVENTS = {
    "/jax/core/compile/jaxpr_trace_duration": "trace",
    "/jax/core/compile/jaxpr_to_mlir_module_duration": "lower",
    "/jax/core/compile/backend_compile_duration": "XLA compile",
}


@contextlib.contextmanager
def compile_seconds():
    """Yields a dict that sums, while the block runs, JAX's trace, lower and compile seconds."""
    totals = dict.fromkeys(COMPILE_EVENTS.values(), 0.0)

    def listen(event: str, duration_secs: float, **_: object) -> None:
        if event in COMPILE_EVENTS:
            totals[COMPILE_EVENTS[event]] += duration_secs

    jax.monitoring.register_event_duration_secs_listener(listen)
    try:
        yield totals
    finally:
        jax.monitoring.unregister_event_duration_listener(listen)


def time_install(venv: pathlib.Path) -> float:
    """Seconds to create a virtualenv and ``pip install -e`` this checkout into it."""

    def run(*command: str) -> None:
        subprocess.run(command, check=True, capture_output=True, text=True)

    tick = time.perf_counter()
    run(sys.executable, "-m", "venv", str(venv))
    run(str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--no-cache-dir", "-e",
        str(ROOT))  # fmt: skip
    return time.perf_counter() - tick


def time_startup() -> float:
    """Seconds for a fresh interpreter to import what ``coordjax sweep`` runs (the CLI itself
    imports late, to answer ``--help`` at once)."""
    code = "import coordjax.cli, coordjax.sweep.engine"
    return benchlib.timed(lambda: subprocess.run([sys.executable, "-c", code], check=True))


def time_smoke(workdir: pathlib.Path) -> dict[str, float]:
    """The smoke sweep's seconds: all, compile (by kind), and its results' wall times."""
    argv = ["sweep", "classification", "--preset", "smoke", "--workdir", str(workdir),
            "--no-progress", "--no-report"]  # fmt: skip
    with compile_seconds() as compiled:
        tick = time.perf_counter()
        code = cli.main(argv)
        total = time.perf_counter() - tick
    if code != 0:
        raise SystemExit(f"the smoke sweep exited with {code}")
    results = pd.read_csv(workdir / "results.csv")
    walls = results.groupby("bucket_id")["wall_time"].max().sum()
    return {"sweep": total, **compiled, "results_wall": float(walls)}


def report(install: float | None, startup: float, smoke: dict[str, float]) -> str:
    compile_total = sum(smoke[k] for k in COMPILE_EVENTS.values())
    training = smoke["sweep"] - compile_total
    total = (install or 0.0) + startup + smoke["sweep"]
    rows = [
        ("install (`python -m venv` + `pip install -e .`)", install),
        ("start-up (interpreter + imports)", startup),
        ("compile: " + ", ".join(f"{k} {smoke[k]:.1f} s" for k in COMPILE_EVENTS.values()),
         compile_total),
        ("training (steps, evaluations, checkpoints, data)", training),
    ]  # fmt: skip
    lines = [
        *benchlib.environment_lines("The smoke run's time, split"),
        "",
        "| part | seconds | share |",
        "|---|---:|---:|",
        *(
            f"| {name} | {'–' if s is None else f'{s:.1f}'} "
            f"| {'–' if s is None else f'{100 * s / total:.0f} %'} |"
            for name, s in rows
        ),
        f"| **total** | **{total:.1f}** | |",
        "",
        f"The sweep itself took {smoke['sweep']:.1f} s in-process; `results.csv`'s wall times "
        f"(each chunk's call, first-call compile included) sum to {smoke['results_wall']:.1f} s "
        "over its buckets. Read with `benchmarks/README.md`.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--no-install", action="store_true", help="skip the install timing")
    parser.add_argument("--out-dir", type=pathlib.Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as scratch:
        scratch = pathlib.Path(scratch)
        install = None if args.no_install else time_install(scratch / "venv")
        startup = time_startup()
        smoke = time_smoke(scratch / "smoke")
    benchlib.write_report(args.out_dir, "smoke-time", report(install, startup, smoke))


if __name__ == "__main__":
    main()

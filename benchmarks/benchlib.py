"""What every benchmark shares: its timers, what it records (device, versions, command) and
where its report is written.

Imported by the scripts in this folder (``python benchmarks/<name>.py`` puts the folder on the
path); not part of the package.
"""

from __future__ import annotations

import datetime
import os
import pathlib
import platform
import re
import shlex
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import flax
import jax
import jax.numpy as jnp
import jaxlib
import optax


def command_line(argv=None, environ=None, cwd=None) -> str:
    """The command as a user would type it from the repository root, with the JAX environment
    variables that change what it measures: ``python`` (not this interpreter's path) and the
    script relative to the working directory (``argv``, ``environ``, ``cwd``: this process's by
    default)."""
    argv = list(sys.argv if argv is None else argv)
    environ = os.environ if environ is None else environ
    script = pathlib.Path(argv[0]) if argv else pathlib.Path("-")
    if script.is_absolute():
        try:
            script = script.relative_to(pathlib.Path.cwd() if cwd is None else cwd)
        except ValueError:  # run from elsewhere: the path from the benchmarks folder on
            parts = script.parts
            if "benchmarks" in parts:
                script = pathlib.Path(*parts[len(parts) - parts[::-1].index("benchmarks") - 1 :])
    recorded = ("JAX_PLATFORMS", "XLA_FLAGS", "GLIBC_TUNABLES", "LD_PRELOAD")
    env = [f"{k}={shlex.quote(environ[k])}" for k in recorded if k in environ]
    return " ".join([*env, shlex.join(["python", str(script), *argv[1:]])])


def environment_lines(title: str) -> list[str]:
    """A report's title and its date, device, CPU load, versions and command lines."""
    devices = jax.devices()
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
    return [
        f"# {title}",
        "",
        f"- date: {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}",
        f"- device: {devices[0].device_kind} (platform {devices[0].platform}, "
        f"{len(devices)} device(s)); CPUs: {os.cpu_count()}; load average at start: {load}",
        f"- versions: jax {jax.__version__}, jaxlib {jaxlib.__version__}, "
        f"flax {flax.__version__}, optax {optax.__version__}, Python {sys.version.split()[0]}",
        f"- command: `{command_line()}`",
    ]


def output_path(out_dir: pathlib.Path, name: str) -> pathlib.Path:
    """``out_dir/<name>-<device_kind>.md`` with the device kind made filename-safe."""
    kind = re.sub(r"[^a-z0-9._-]+", "-", jax.devices()[0].device_kind.lower()).strip("-")
    return out_dir / f"{name}-{kind or 'unknown'}.md"


def write_report(out_dir: pathlib.Path, name: str, report: str) -> None:
    """Writes the report to :func:`output_path` and prints it (with where it went)."""
    path = output_path(out_dir, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(report)
    print(report)
    print(f"wrote {path}")


# --------------------------------------------------------------------------------------------
# Timers


def timed(fn: Callable[[], Any]) -> float:
    """Seconds one call of ``fn`` takes (``fn`` must block until its work is done)."""
    tick = time.perf_counter()
    fn()
    return time.perf_counter() - tick


def time_calls(
    call: Callable[[], Any], min_time: float, min_repeats: int = 2
) -> tuple[float, list[float]]:
    """The first call's seconds, then the seconds of each later call of ``call`` (which blocks).

    Repeats until ``min_time`` seconds were timed and at least ``min_repeats`` calls (at most 50).
    """
    first = timed(call)
    times: list[float] = []
    while len(times) < min_repeats or (sum(times) < min_time and len(times) < 50):
        times.append(timed(call))
    return first, times


def steady_rate(first: float, times: list[float], units: int) -> tuple[float, float, float]:
    """``(units/s of the median call, compile s = first call - median, spread)``.

    ``spread`` is (slowest - fastest) / median: how much the timed calls disagreed.
    """
    median = statistics.median(times)
    spread = (max(times) - min(times)) / median if len(times) > 1 else 0.0
    return units / median, max(first - median, 0.0), spread


# --------------------------------------------------------------------------------------------
# What the machine is


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``; ``platform.processor()`` elsewhere)."""
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def versions(torch: Any = None) -> dict[str, str]:
    """Versions of jax, jaxlib, flax and optax, and of ``torch`` when a module is given."""
    out = {
        "jax": jax.__version__,
        "jaxlib": jaxlib.__version__,
        "flax": flax.__version__,
        "optax": optax.__version__,
    }
    if torch is not None:
        out["torch"] = torch.__version__
    return out


def gemm_flop_rate(size: int = 2048, repeats: int = 5, torch: Any = None) -> dict[str, float]:
    """Dense float32 ``size x size`` matmul FLOP/s, best of ``repeats``: jax (and ``torch``).

    The ceiling that achieved FLOP/s are read against, measured in the same run.
    """
    a = jax.random.normal(jax.random.key(0), (size, size), jnp.float32)
    dot = jax.jit(jnp.dot)
    jax.block_until_ready(dot(a, a))
    best = min(timed(lambda: jax.block_until_ready(dot(a, a))) for _ in range(repeats))
    out = {"jax": 2 * size**3 / best}
    if torch is not None:
        t = torch.randn(size, size)
        torch.mm(t, t)
        best = min(timed(lambda: torch.mm(t, t)) for _ in range(repeats))
        out["torch"] = 2 * size**3 / best
    return out


def memory_bandwidth(megabytes: int = 256, repeats: int = 5) -> float:
    """Streaming bytes/s of jax on this device, best of ``repeats``: a ``megabytes`` float32
    array scaled in place (read once, written once). The ceiling memory-bound work is read
    against. In place (a donated buffer) because a fresh output each call measures the OS
    handing out new pages (5 GB/s against 38 GB/s in place, measured side by side on a loaded
    2-core EPYC)."""
    scale = jax.jit(lambda a: a * 1.5, donate_argnums=0)
    x = scale(jnp.ones((megabytes * 2**20 // 4,), jnp.float32))
    nbytes = x.nbytes

    def step():
        nonlocal x
        x = jax.block_until_ready(scale(x))

    step()
    best = min(timed(step) for _ in range(repeats))
    return 2 * nbytes / best


def fmt(value: float | None, digits: int = 3) -> str:
    """A table cell: thousands separated from 100 up, ``digits`` significant below, – if None."""
    if value is None:
        return "–"
    return f"{value:,.0f}" if value >= 100 else f"{value:.{digits}g}"

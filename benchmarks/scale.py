"""The cost of the model axis: the engine's program at M = 1 .. thousands of models.

For the CoordConv classifier (c 1, batch 16) and the smallest and the largest deconv painters
(fs 2 c 1 and fs 4 c 3, batch 32) on the classification task, at M = 1, 8, 64, 256, 1024 models
per program, this measures the engine's own program as the engine would run it: the bucket its
planner makes (``plan``), initialised by the engine (``programs.bucket_inputs``), the model-axis
strategy its fixed rule picks (``programs.default_strategy``: on CPU ``lax.map`` over single
models from M = 2 on, on accelerators one ``vmap``), the lowering ``auto`` resolves, and
``programs.compiled_steps`` (K Adam steps in a ``lax.scan``, the program ``"tune"`` and
``benchmarks/zoo.py`` time). Per (family, M):

- **model-steps/s**: M x K / the median call (compiled ahead of time, one warm-up call, then
  calls until ``--min-time`` seconds and 2 calls);
- **compile s**: ``lower(...).compile()`` of that program;
- **peak RSS**: the process's resident peak over the item (Linux: ``/proc/self/clear_refs``
  resets it before each item, ``VmHWM`` reads it; elsewhere ``ru_maxrss``, the process's peak
  so far); on an accelerator also the device's running peak (``memory_stats``);
- **XLA bytes**: the compiled program's arguments + outputs + temporaries
  (``memory_analysis``), XLA's own estimate beside the measured peak.

An M is skipped, with the reason in the table, when its call predicted from the previous M
(linearly) would exceed ``--max-call-s``, or its XLA bytes predicted likewise would exceed the
memory available (``MemAvailable``, or 80 % of the device's ``bytes_limit``).

    PYTHONPATH=. python benchmarks/scale.py            # CPU: M up to 1024, about 20 min idle
    PYTHONPATH=. python benchmarks/scale.py --smoke    # the tiny model at M 1, 2: seconds
    PYTHONPATH=. python benchmarks/scale.py --sizes 1,8,64,256,1024,4096   # a GPU

Writes ``benchmarks/results/scale-<device_kind>.{md,png}`` (``--out``) and prints the table.
``benchmarks/device_check.py`` runs the same measurement at GPU sizes (:func:`measure_curve`).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import pathlib
import resource
import statistics
import sys
import time
from collections.abc import Callable, Sequence

import benchlib
import jax

from coordjax import conv
from coordjax.sweep import EngineOptions, Grid, plan, programs, union

ROOT = pathlib.Path(__file__).resolve().parent
DEFAULT_OUT_DIR = ROOT / "results"
SIZES = (1, 8, 64, 256, 1024)
MEMORY_FRACTION = 0.8


@dataclasses.dataclass(frozen=True)
class Family:
    """One model family of the curve: the paper model, its shape keys and its batch size."""

    model: str
    shape: tuple[tuple[str, int], ...]
    batch_size: int

    @property
    def label(self) -> str:
        short = {"filter_size": "fs", "channel_mult": "c"}
        keys = ",".join(f"{short.get(k, k)}{v}" for k, v in self.shape)
        return f"{self.model} {keys} b{self.batch_size}".replace("  ", " ")


FAMILIES = (
    Family("coordconv_classifier", (("channel_mult", 1),), 16),
    Family("deconv_painter", (("channel_mult", 1), ("filter_size", 2)), 32),
    Family("deconv_painter", (("channel_mult", 3), ("filter_size", 4)), 32),
)
SMOKE_FAMILIES = (Family("tiny", (), 8),)


@dataclasses.dataclass(frozen=True)
class Settings:
    """What one run measures."""

    sizes: tuple[int, ...]
    steps: int = 2
    min_time: float = 1.0
    max_call_s: float = 100.0


def family_bucket(family: Family, num_models: int):
    """The engine's bucket of ``num_models`` seeds of ``family`` (its planner's own)."""
    base = {"task": "classification", "model": family.model, "batch_size": family.batch_size,
            "lr": 2e-3, "l2": 1e-3, "epochs": 1, "eval_every": 1, **dict(family.shape)}  # fmt: skip
    grid = Grid(family.model, base=base, axes={"seed": list(range(num_models))})
    (bucket,) = plan(union(family.model, [grid]).expand())
    return bucket


def engine_choice(num_models: int) -> tuple[str, int, str]:
    """The engine's default ``(strategy, map_batch_size, lowering)`` for an M-model bucket."""
    options = EngineOptions()
    devices = len(jax.local_devices()) if options.shard else 1
    strategy, size = programs.default_strategy(
        jax.devices()[0].platform, -(-num_models // devices), options.map_batch_size
    )
    return strategy, size, conv.resolve_lowering(options.lowering)


# --------------------------------------------------------------------------------------------
# Memory of the process and of the device


def _reset_peak_rss() -> bool:
    """Resets the kernel's resident-set peak of this process (Linux ``clear_refs``)."""
    try:
        pathlib.Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_rss_bytes() -> int:
    """This process's resident peak: ``VmHWM`` (since the last reset) or ``ru_maxrss``."""
    try:
        for line in pathlib.Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    scale = 1 if sys.platform == "darwin" else 1024  # bytes on macOS, KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def available_bytes() -> int | None:
    """Memory a program may still take: 80 % of the device's limit where it reports one, else
    the host's ``MemAvailable``."""
    try:
        stats = jax.devices()[0].memory_stats()
    except Exception:  # some backends raise instead of returning None
        stats = None
    if stats and "bytes_limit" in stats:
        return int(MEMORY_FRACTION * stats["bytes_limit"])
    try:
        for line in pathlib.Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def device_peak_bytes() -> int | None:
    try:
        stats = jax.devices()[0].memory_stats()
    except Exception:
        return None
    return None if not stats else stats.get("peak_bytes_in_use")


def program_bytes(compiled) -> int | None:
    """Arguments + outputs (not aliased) + temporaries of a compiled program."""
    m = compiled.memory_analysis()
    if m is None:
        return None
    return int(m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes
               - m.alias_size_in_bytes)  # fmt: skip


# --------------------------------------------------------------------------------------------
# One point and one curve


def measure_point(family: Family, num_models: int, settings: Settings) -> dict:
    """The engine's program for ``family`` at M = ``num_models``: rate, compile, memory."""
    strategy, map_size, lowering = engine_choice(num_models)
    item = {"family": family.label, "model": family.model, "shape": dict(family.shape),
            "batch_size": family.batch_size, "num_models": num_models, "strategy": strategy,
            "map_batch_size": map_size, "lowering": lowering}  # fmt: skip
    reset = _reset_peak_rss()
    mesh = programs.make_mesh(True)
    tick = time.perf_counter()
    inputs = programs.bucket_inputs(family_bucket(family, num_models), mesh, lowering)
    jax.block_until_ready(inputs.states)
    item["setup_s"] = time.perf_counter() - tick
    program = programs.compiled_steps(inputs.setup, settings.steps, strategy, map_size, mesh)
    args = (inputs.data, inputs.runs, inputs.states)
    tick = time.perf_counter()
    compiled = program.lower(*args).compile()
    item["compile_s"] = time.perf_counter() - tick

    def call():
        jax.block_until_ready(compiled(*args))

    first = benchlib.timed(call)
    # A long first call is timed too (compiled ahead, it runs the same program): one more then.
    times = [first] if first > settings.max_call_s / 4 else []
    while len(times) < 2 or (sum(times) < settings.min_time and len(times) < 20):
        times.append(benchlib.timed(call))
    median = statistics.median(times)
    item.update(
        call_s=median,
        rate=num_models * settings.steps / median,
        spread=(max(times) - min(times)) / median if len(times) > 1 else 0.0,
        calls=len(times),
        program_bytes=program_bytes(compiled),
        peak_rss_bytes=peak_rss_bytes(),
        peak_rss_since="item" if reset else "process start",
        device_peak_bytes=device_peak_bytes(),
    )
    return item


def skip_reason(previous: dict | None, num_models: int, settings: Settings) -> str:
    """Why M = ``num_models`` is not measured, predicted linearly from the previous point."""
    if previous is None or "call_s" not in previous:
        return ""
    scale = num_models / previous["num_models"]
    if previous["call_s"] * scale > settings.max_call_s:
        return f"predicted call {previous['call_s'] * scale:.0f} s > {settings.max_call_s:.0f} s"
    free = available_bytes()
    if free and previous.get("program_bytes") and previous["program_bytes"] * scale > free:
        return (f"predicted program {previous['program_bytes'] * scale / 2**30:.1f} GiB > "
                f"{free / 2**30:.1f} GiB available")  # fmt: skip
    return ""


def measure_curve(
    families: Sequence[Family],
    settings: Settings,
    log: Callable[[str], None] = print,
    allows: Callable[[], bool] = lambda: True,
    sizes_for: Callable[[Family], Sequence[int]] | None = None,
) -> list[dict]:
    """Every family at every size in ``settings.sizes`` (or ``sizes_for(family)``), in order,
    skipping (with the reason) what the previous size predicts too slow or too big, and what
    ``allows()`` (a time budget) refuses. Errors (an out-of-memory) are rows too."""
    rows = []
    for family in families:
        previous = None
        for m in sizes_for(family) if sizes_for else settings.sizes:
            why = skip_reason(previous, m, settings) or ("" if allows() else "time budget")
            if why:
                rows.append({"family": family.label, "num_models": m, "skipped": why})
            else:
                try:
                    rows.append(measure_point(family, m, settings))
                    previous = rows[-1]
                except Exception as err:  # an out-of-memory is a result here
                    first = str(err).splitlines()[0][:200] if str(err) else ""
                    rows.append({"family": family.label, "num_models": m,
                                 "error": f"{type(err).__name__}: {first}"})  # fmt: skip
            r = rows[-1]
            log(f"{r['family']} M={m}: " + (
                f"{r['rate']:.3g} model-steps/s, compile {r['compile_s']:.1f} s, "
                f"{r['strategy']}" if "rate" in r else r.get("skipped") or r.get("error")
            ))  # fmt: skip
    return rows


# --------------------------------------------------------------------------------------------
# Report


def _mib(value) -> str:
    return "-" if value is None else f"{value / 2**20:,.0f}"


def exponents(rows: list[dict]) -> dict[str, list[tuple[int, int, float]]]:
    """Per family, the local log-log slope of model-steps/s between successive measured M
    (0: the rate per model-step is flat, the cost grows linearly with M; 1: free models)."""
    out: dict[str, list[tuple[int, int, float]]] = {}
    for family in dict.fromkeys(r["family"] for r in rows):
        pts = [(r["num_models"], r["rate"]) for r in rows if r["family"] == family and "rate" in r]
        out[family] = [
            (m0, m1, math.log(r1 / r0) / math.log(m1 / m0))
            for (m0, r0), (m1, r1) in zip(pts, pts[1:], strict=False)
        ]
    return out


def table_lines(rows: list[dict]) -> list[str]:
    """The curve as a Markdown table (and the local slopes under it)."""
    lines = [
        "| family | M | strategy | lowering | model-steps/s | compile s | setup s | "
        "peak RSS MiB | XLA program MiB | device peak MiB | note |",
        "|---|---:|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        if "rate" not in r:
            lines.append(f"| {r['family']} | {r['num_models']} | | | | | | | | | "
                         f"{r.get('skipped') or r.get('error')} |")  # fmt: skip
            continue
        strategy = r["strategy"] if r["strategy"] == "vmap" else f"map/{r['map_batch_size']}"
        lines.append(
            f"| {r['family']} | {r['num_models']} | {strategy} | {r['lowering']} | "
            f"{benchlib.fmt(r['rate'])} | {r['compile_s']:.1f} | {r['setup_s']:.1f} | "
            f"{_mib(r['peak_rss_bytes'])} | {_mib(r['program_bytes'])} | "
            f"{_mib(r['device_peak_bytes'])} | spread {r['spread']:.2f} |"
        )
    lines += ["", "Local slope of log(model-steps/s) against log(M) (0: each model costs the "
              "same at every M; > 0: models come cheaper in bulk):", ""]  # fmt: skip
    for family, slopes in exponents(rows).items():
        text = ", ".join(f"{m0}->{m1}: {s:+.2f}" for m0, m1, s in slopes) or "-"
        lines.append(f"- {family}: {text}")
    return lines


def markdown(rows: list[dict], settings: Settings, header: list[str]) -> str:
    lines = [*header, "",
             f"The engine's program (`programs.compiled_steps`, {settings.steps} Adam steps per "
             f"call, median of calls over >= {settings.min_time:g} s) at each M, with the "
             "strategy its fixed rule picks. Peak RSS: the process's resident peak over the "
             "item (setup, compile, calls); XLA program: `memory_analysis` of the compiled "
             "program (arguments + outputs + temporaries).", "", *table_lines(rows)]  # fmt: skip
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], path: pathlib.Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(14, 4.2))
    panels = (("rate", "model-steps/s"), ("compile_s", "compile s"),
              ("peak_rss_bytes", "peak RSS (MiB)"))  # fmt: skip
    for ax, (key, label) in zip(axes, panels, strict=True):
        for family in dict.fromkeys(r["family"] for r in rows):
            pts = [(r["num_models"], r[key] / (2**20 if key.endswith("bytes") else 1))
                   for r in rows if r["family"] == family and "rate" in r]  # fmt: skip
            if pts:
                ax.plot(*zip(*pts, strict=True), marker="o", label=family)
        ax.set(xscale="log", yscale="log", xlabel="models per program M", ylabel=label)
    axes[0].legend(fontsize=7)
    fig.suptitle(f"the model axis: {jax.devices()[0].device_kind}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> pathlib.Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(DEFAULT_OUT_DIR), help="output folder")
    parser.add_argument("--smoke", action="store_true", help="the tiny model at M 1, 2")
    parser.add_argument("--sizes", help="comma-separated M (default 1,8,64,256,1024)")
    parser.add_argument("--max-call-s", type=float, default=100.0,
                        help="skip an M whose call is predicted longer (default 100)")  # fmt: skip
    parser.add_argument("--min-time", type=float, default=1.0, help="seconds of timed calls")
    args = parser.parse_args(argv)
    sizes = (1, 2) if args.smoke else SIZES
    if args.sizes:
        sizes = tuple(int(s) for s in args.sizes.split(","))
    settings = Settings(sizes=sizes, max_call_s=args.max_call_s,
                        min_time=0.0 if args.smoke else args.min_time)  # fmt: skip
    families = SMOKE_FAMILIES if args.smoke else FAMILIES
    header = benchlib.environment_lines("The model axis: the engine's cost from 1 to "
                                        f"{max(sizes)} models")  # fmt: skip
    header.append(f"- CPU: {benchlib.cpu_model()}; host memory available at start: "
                  f"{_mib(available_bytes())} MiB")  # fmt: skip
    rows = measure_curve(families, settings)
    md = benchlib.output_path(pathlib.Path(args.out), "scale")
    md.parent.mkdir(parents=True, exist_ok=True)
    md.write_text(markdown(rows, settings, header))
    plot(rows, md.with_suffix(".png"))
    print(md.read_text())
    print(f"wrote {md} (+ .png)")
    return md


if __name__ == "__main__":
    main()

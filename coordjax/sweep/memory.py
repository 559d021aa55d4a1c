"""How much device memory a bucket's program needs, and the plan that makes every bucket fit.

The numbers are XLA's own: :func:`chunk_memory` compiles the bucket's training chunk (the
engine's program: the same strategy, map batch and convolution lowering; one epoch, since a
chunk's epochs are a loop and do not change its buffers) and reads ``memory_analysis()`` of the
compiled executable: the bytes of its arguments (shared data, runs, states), its outputs (states,
metrics), the outputs aliased to donated arguments, and its temporaries. The peak is
``arguments + outputs - aliased + temporaries``. Nothing runs.

The model axis changes the program, so :func:`memory_model` measures it at two sizes and
extrapolates linearly (``peak(M) = fixed + per_model * M``); the batch size is a static key, so
every bucket is measured with its own. :func:`fit` then caps each bucket at the models that fit
a memory limit: it picks a smaller map batch when the strategy is ``"map"`` and that is enough,
and otherwise splits the bucket into programs of fewer models (as ``max_models`` does; results
are unchanged, a model's numbers do not depend on its neighbours), and refuses with one line
when a single model does not fit.

The analysis is that of the compiler of the device it runs on: on a CPU host it is the CPU
compiler's buffer assignment, which differs from a GPU's (fusion, convolution algorithms and
their workspaces); see ``docs/guides/memory.md``.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import logging
import os
import re
from collections.abc import Sequence
from typing import NamedTuple

import jax
import numpy as np

from coordjax import conv
from coordjax.sweep.options import EngineOptions
from coordjax.sweep.planner import Bucket
from coordjax.sweep.programs import compiled_chunk, default_strategy

logger = logging.getLogger("coordjax.sweep")

MEASURED_SIZES = (2, 4)
"""The model-axis sizes (in map slices for ``"map"``) at which a bucket's program is compiled."""

UNITS = {
    "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
    "KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "TiB": 2**40,
}  # fmt: skip


def parse_bytes(text: str, name: str = "device_memory") -> int:
    """``"80GiB"``, ``"512 MB"`` or ``"1000000B"`` as a number of bytes (binary units KiB..TiB,
    decimal KB..TB, and B; the unit is required).

    Raises:
      ValueError: naming ``name`` and the accepted form.
    """
    found = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B|B)\s*", str(text))
    size = None if found is None else float(found.group(1)) * UNITS[found.group(2)]
    if size is None or size < 1:
        raise ValueError(
            f"{name} must be a positive size with a unit ({', '.join(UNITS)}), e.g. 80GiB; "
            f"got {text!r}"
        )
    return int(size)


def format_bytes(size: float) -> str:
    """``size`` bytes in the largest binary unit that keeps it >= 1 (``"1.5 GiB"``)."""
    for unit in ("TiB", "GiB", "MiB", "KiB"):
        if abs(size) >= UNITS[unit]:
            return f"{size / UNITS[unit]:.1f} {unit}"
    return f"{size:.0f} B"


def device_limit(device: jax.Device | None = None) -> int | None:
    """The memory the device says a program may use (``memory_stats()["bytes_limit"]``), or
    None where it reports none (CPU)."""
    device = device or jax.devices()[0]
    try:
        stats = device.memory_stats()
    except Exception:  # some backends raise instead of returning None
        return None
    return None if not stats or "bytes_limit" not in stats else int(stats["bytes_limit"])


class ChunkMemory(NamedTuple):
    """XLA's buffer assignment of one compiled chunk (bytes).

    Attributes:
      models: the model-axis size it was compiled for.
      argument, output, alias, temp: XLA's ``*_size_in_bytes`` (``alias``: outputs that reuse
        donated argument buffers, the states).
    """

    models: int
    argument: int
    output: int
    alias: int
    temp: int

    @property
    def peak(self) -> int:
        """Arguments, the outputs that do not reuse them, and the temporaries."""
        return self.argument + self.output - self.alias + self.temp


def chunk_memory(
    bucket: Bucket,
    num_models: int,
    strategy: str,
    map_batch_size: int,
    lowering: str,
    device: jax.Device | None = None,
) -> ChunkMemory:
    """Compiles the bucket's one-epoch chunk for ``num_models`` models (on ``device``, default
    the first) and returns XLA's memory analysis of it. Shapes only: nothing runs.

    (A padded bucket is measured as its largest model, without the parameter masks.)
    """
    device = device or jax.devices()[0]
    setup = bucket.setup(lowering)
    experiment = bucket.experiment
    configs = [bucket.runs[i % bucket.num_models] for i in range(num_models)]

    def shape_of(x):
        return jax.ShapeDtypeStruct(np.shape(x), np.asarray(x).dtype)

    with jax.default_device(device):
        data = jax.eval_shape(lambda: experiment.data(setup))
        runs = jax.tree.map(shape_of, experiment.stack(configs))
        init = jax.vmap(functools.partial(experiment.recipe.init, setup), in_axes=(None, 0))
        states = jax.eval_shape(init, data, runs)
        program = compiled_chunk(setup, 1, strategy, map_batch_size, None, experiment.recipe)
        stats = program.trace(data, runs, states).lower().compile().memory_analysis()
    return ChunkMemory(
        num_models,
        int(stats.argument_size_in_bytes),
        int(stats.output_size_in_bytes),
        int(stats.alias_size_in_bytes),
        int(stats.temp_size_in_bytes),
    )


class MemoryModel(NamedTuple):
    """A bucket program's peak memory as a line through two measured model-axis sizes.

    Attributes:
      strategy, map_batch_size: the model-axis lowering it was measured for.
      measured: the two :class:`ChunkMemory` it is fitted through.
    """

    strategy: str
    map_batch_size: int
    measured: tuple[ChunkMemory, ChunkMemory]

    @property
    def per_model(self) -> float:
        small, large = self.measured
        return (large.peak - small.peak) / (large.models - small.models)

    @property
    def fixed(self) -> float:
        small = self.measured[0]
        return small.peak - self.per_model * small.models

    def peak(self, models: int) -> float:
        """The extrapolated peak bytes of the program for ``models`` models on one device."""
        return self.fixed + self.per_model * models

    def max_models(self, limit: float) -> int:
        """The most models whose extrapolated peak is at most ``limit`` (0: not even one)."""
        if self.peak(1) > limit:
            return 0
        if self.per_model <= 0:
            return 2**31
        return int((limit - self.fixed) // self.per_model)


def memory_model(
    bucket: Bucket,
    strategy: str,
    map_batch_size: int,
    lowering: str,
    *,
    device: jax.Device | None = None,
    sizes: Sequence[int] = MEASURED_SIZES,
) -> MemoryModel:
    """The bucket's program measured at two model-axis sizes (``sizes`` models for ``"vmap"``,
    ``sizes`` map slices of ``map_batch_size`` for ``"map"``) and fitted linearly."""
    unit = map_batch_size if strategy == "map" else 1
    small, large = (
        chunk_memory(bucket, n * unit, strategy, map_batch_size, lowering, device) for n in sizes
    )
    return MemoryModel(strategy, map_batch_size, (small, large))


@dataclasses.dataclass(frozen=True)
class BucketFit:
    """How one bucket of the plan runs within the memory limit.

    Attributes:
      bucket: the bucket as the planner made it (before any split).
      model: its program's memory, measured.
      strategy, map_batch_size: the model-axis lowering it will run with.
      models_per_program: the most models one program holds (``bucket.num_models``: no split).
      devices: the devices the model axis is sharded over.
    """

    bucket: Bucket
    model: MemoryModel
    strategy: str
    map_batch_size: int
    models_per_program: int
    devices: int

    @property
    def parts(self) -> int:
        return -(-self.bucket.num_models // self.models_per_program)

    @property
    def peak(self) -> float:
        """The extrapolated peak bytes per device of its largest program."""
        per_device = -(-min(self.models_per_program, self.bucket.num_models) // self.devices)
        return self.model.peak(per_device)

    def buckets(self) -> list[Bucket]:
        """The bucket, or its parts when split (ids ``<id>-p<i>``, like ``max_models``)."""
        size = self.models_per_program
        if size >= self.bucket.num_models:
            return [self.bucket]
        runs = self.bucket.runs
        return [
            dataclasses.replace(
                self.bucket,
                bucket_id=f"{self.bucket.bucket_id}-p{i}",
                runs=runs[start : start + size],
            )  # fmt: skip
            for i, start in enumerate(range(0, len(runs), size))
        ]


class DoesNotFit(ValueError):
    """One model of a bucket needs more memory than the limit."""


def engine_strategy(options: EngineOptions, platform: str, models_per_device: int):
    """``(strategy, map_batch_size)`` the engine would run a bucket with before fitting it;
    ``"tune"`` is planned as ``"vmap"``, the candidate that needs more memory."""
    if options.strategy in ("vmap", "map"):
        return options.strategy, options.map_batch_size
    if options.strategy == "tune":
        return "vmap", options.map_batch_size
    return default_strategy(platform, models_per_device, options.map_batch_size)


def measure(
    buckets: Sequence[Bucket],
    options: EngineOptions | None = None,
    *,
    platform: str | None = None,
    devices: int = 1,
    device: jax.Device | None = None,
    workers: int | None = None,
) -> list[MemoryModel]:
    """Each bucket's program memory (:func:`memory_model`) with the strategy, map batch and
    lowering the engine would run it with.

    Args:
      buckets: the planner's buckets.
      options: the engine options (strategy, map batch, lowering).
      platform: the platform whose rules pick the strategy and the lowering (default: the
        device's); the program is compiled for ``device`` whatever it is.
      devices: devices the model axis is sharded over (the strategy depends on the models per
        device).
      device: whose compiler measures (default: the first device).
      workers: compiles run in this many threads (default: the CPU count); buckets that differ
        in epochs only share one measurement.
    """
    options = options or EngineOptions()
    device = device or jax.devices()[0]
    platform = platform or device.platform
    lowering = conv.resolve_lowering(options.lowering, platform, vmapped=True)
    cap = options.max_models
    chosen = [
        engine_strategy(options, platform, -(-min(cap or b.num_models, b.num_models) // devices))
        for b in buckets
    ]
    keys = [(_shape_key(b), choice) for b, choice in zip(buckets, chosen, strict=True)]
    distinct = {key: (b, choice) for key, b, choice in zip(keys, buckets, chosen, strict=True)}
    logger.info(
        "measuring memory: compiling %d programs (%d bucket shapes at %s models) on %s",
        2 * len(distinct), len(distinct), " and ".join(map(str, MEASURED_SIZES)),
        device.device_kind,
    )  # fmt: skip
    with concurrent.futures.ThreadPoolExecutor(workers or os.cpu_count() or 1) as pool:
        futures = {
            key: pool.submit(memory_model, b, *choice, lowering, device=device)
            for key, (b, choice) in distinct.items()
        }
        models = {key: future.result() for key, future in futures.items()}
    return [models[key] for key in keys]


def fit(
    buckets: Sequence[Bucket],
    limit: int,
    options: EngineOptions | None = None,
    *,
    models: Sequence[MemoryModel] | None = None,
    devices: int = 1,
    **measuring,
) -> list[BucketFit]:
    """Each bucket's memory and how it runs within ``limit`` bytes per device.

    Args:
      buckets: the planner's buckets (unsplit: :func:`coordjax.sweep.planner.plan` without
        ``max_models``; ``options.max_models`` still caps the programs).
      limit: bytes one device may hold.
      options: the engine options (strategy, map batch, lowering, ``max_models``).
      models: the buckets' :func:`measure` (default: measured now, with ``measuring``:
        ``platform``, ``device``, ``workers``).
      devices: devices the model axis is sharded over (per-device models are what must fit).

    Raises:
      DoesNotFit: one model of a bucket needs more than ``limit`` (one line, naming it).
    """
    options = options or EngineOptions()
    if models is None:
        models = measure(buckets, options, devices=devices, **measuring)
    device = measuring.get("device")
    platform = measuring.get("platform") or (device or jax.devices()[0]).platform
    lowering = conv.resolve_lowering(options.lowering, platform, vmapped=True)
    return [
        _fit_one(bucket, model, limit, options, lowering, devices, device)
        for bucket, model in zip(buckets, models, strict=True)
    ]


def _shape_key(bucket: Bucket) -> str:
    static = {k: v for k, v in bucket.static.items() if k not in ("epochs", "eval_every")}
    return repr(sorted(static.items()))


def _fit_one(bucket, model, limit, options, lowering, devices, device) -> BucketFit:
    cap = options.max_models or bucket.num_models
    per_device = -(-min(cap, bucket.num_models) // devices)
    strategy, batch = model.strategy, model.map_batch_size
    if model.peak(per_device) > limit and strategy == "map":
        # A smaller map batch shrinks the temporaries (one slice at a time) without a split.
        while batch > 1 and model.peak(per_device) > limit:
            batch = max(1, batch // 2)
            model = memory_model(bucket, "map", batch, lowering, device=device)
    fitting = model.max_models(limit)
    if fitting < 1:
        raise DoesNotFit(
            f"bucket {bucket.bucket_id}: one model needs {format_bytes(model.peak(1))} "
            f"(XLA's analysis, extrapolated), more than the device memory "
            f"{format_bytes(limit)}"
        )
    size = min(cap, bucket.num_models, fitting * devices)
    return BucketFit(bucket, model, strategy, batch, size, devices)


def fitted_buckets(fits: Sequence[BucketFit]) -> list[Bucket]:
    """The buckets the engine trains: each fit's bucket or its parts, in plan order."""
    return [part for f in fits for part in f.buckets()]


def memory_text(fits: Sequence[BucketFit], limit: int, platform: str, device_kind: str) -> str:
    """The dry run's memory table: each bucket's measured and extrapolated peak and its split."""
    sizes = " and ".join(str(n) for n in MEASURED_SIZES)
    lines = [
        f"memory per device, target {format_bytes(limit)}: XLA's buffer assignment of each "
        f"bucket's compiled chunk on {device_kind} ({platform} rules), measured at {sizes} "
        "models (map: slices) and extrapolated linearly in the model axis",
        f"{'bucket':<34} {'models':>6} {'strategy':>8} {'fixed':>10} {'per model':>10} "
        f"{'peak':>10}  split",
    ]
    for f in fits:
        strategy = f.strategy if f.strategy == "vmap" else f"map/{f.map_batch_size}"
        split = (
            "-" if f.parts == 1
            else f"{f.parts} programs of <= {f.models_per_program} models"
        )  # fmt: skip
        lines.append(
            f"{f.bucket.bucket_id:<34} {f.bucket.num_models:>6} {strategy:>8} "
            f"{format_bytes(f.model.fixed):>10} {format_bytes(f.model.per_model):>10} "
            f"{format_bytes(f.peak):>10}  {split}"
        )
    split = sum(f.parts > 1 for f in fits)
    lines.append(
        f"{split} of {len(fits)} buckets split to fit; {len(fitted_buckets(fits))} programs"
        if split else f"every bucket fits in {format_bytes(limit)} unsplit"
    )  # fmt: skip
    return "\n".join(lines)

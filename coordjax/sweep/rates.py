"""Wall-time estimates of a sweep from measured training rates.

``benchmarks/zoo.py`` measures, per device kind, how many model-steps per second the engine
trains for each model shape of the paper's zoo at a few bucket sizes ``M``, and writes them to
``measured_rates.json`` beside this module (shipped as package data). :func:`estimate_seconds`
turns a sweep's plan into seconds with that table:

* a bucket whose model, shape and batch size were measured on this device kind takes the rate
  at the nearest measured ``M`` (per device, on a log scale; never extrapolated upwards);
* another shape or batch size of a measured model takes the nearest measured shape's achieved
  FLOP/s (rate × FLOPs per step, both counted from layer shapes by :func:`train_step_flops`)
  and divides it by its own FLOPs per step;
* anything unmeasured on this device kind uses :data:`ASSUMED_FLOP_RATE` for its platform.

Evaluations are charged at the same achieved FLOP/s (forward passes only), and each compiled
program at the measured compile time (:data:`ASSUMED_COMPILE_S` when unmeasured; the benchmark
compiles a few-step program, not a whole chunk with its evaluation, so this is a lower bound).
Every bucket estimate says which of the three it used. The rates are steady-state rates of a
bucket's program on one device; sharded buckets divide their models over the devices.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import pathlib
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from coordjax import conv
from coordjax.sweep.costs import bucket_costs
from coordjax.sweep.durations import format_duration
from coordjax.sweep.options import EngineOptions
from coordjax.sweep.planner import plan

RATES_FILE = pathlib.Path(__file__).with_name("measured_rates.json")
"""The measured-rates table written by ``benchmarks/zoo.py`` (package data)."""

ASSUMED_FLOP_RATE = {"cpu": 5e9, "gpu": 5e12, "tpu": 2e13}
"""Achieved training FLOP/s assumed for unmeasured models, by platform (a stated guess)."""

ASSUMED_COMPILE_S = {"cpu": 10.0, "gpu": 20.0, "tpu": 30.0}
"""Seconds per compiled program assumed when the table has no compile time."""

LONG_SECONDS = 3 * 3600.0
"""An estimate above this is flagged as long (:attr:`SweepEstimate.warning`; the dry run, and
``coordjax sweep`` before it trains)."""


# --------------------------------------------------------------------------------------------
# FLOPs counted from layer shapes


def _layer_macs(kernel_shape: tuple[int, ...], in_shape: tuple[int, ...], out_shape) -> int:
    """Multiply-adds of one kernel layer, from its kernel, input and output shapes.

    A ``(C_in, C_out)`` kernel (dense or 1x1 conv, factored CoordConv included) costs
    ``C_in · C_out`` per output position. A ``(*window, C_in, C_out)`` kernel costs
    ``prod(window) · C_in · C_out`` per position of the *smaller* of input and output grids: the
    output grid of a (strided) convolution, the input grid of a transposed convolution (each
    input pixel meets every tap once; the zeros of a dilated input are not counted).
    """
    c_in, c_out = kernel_shape[-2], kernel_shape[-1]
    window = math.prod(kernel_shape[:-2])
    batch = out_shape[0]
    out_positions = math.prod(out_shape[1:-1])
    if len(kernel_shape) == 2:
        return batch * out_positions * c_in * c_out
    in_positions = math.prod(in_shape[1:-1]) if len(in_shape) == len(out_shape) else out_positions
    return batch * min(in_positions, out_positions) * window * c_in * c_out


def forward_layer_macs(model: nn.Module, input_shape: Sequence[int]) -> list[int]:
    """Multiply-adds of each kernel layer in one training-mode forward pass, in call order.

    Args:
      model: a zoo model (``model(x, train=True)``).
      input_shape: ``(B, *per_example_shape)``.

    Returns:
      One int per call of a module that owns a ``kernel`` parameter. Elementwise work
      (BatchNorm, activations, softmax, the loss, Adam) is not counted.
    """
    x = jax.ShapeDtypeStruct(tuple(input_shape), jnp.float32)
    macs: list[int] = []

    def record(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        module = context.module
        if context.method_name == "__call__" and module.has_variable("params", "kernel"):
            kernel = module.get_variable("params", "kernel")
            macs.append(_layer_macs(tuple(kernel.shape), tuple(args[0].shape), tuple(out.shape)))
        return out

    def init(x):  # init runs the training-mode forward once; its shapes are all that is needed
        with nn.intercept_methods(record):
            return model.init(jax.random.key(0), x, train=True)

    jax.eval_shape(init, x)
    return macs


@functools.lru_cache(maxsize=256)
def _macs_per_example(model: nn.Module, per_example_shape: tuple[int, ...]) -> tuple[int, ...]:
    # Every layer's count is linear in the batch: one trace per model shape serves every batch
    # size (a sweep's presets share a few shapes over many batch sizes).
    return tuple(forward_layer_macs(model, (1, *per_example_shape)))


def train_step_flops(model: nn.Module, per_example_shape: tuple[int, ...], batch_size: int) -> int:
    """FLOPs of one training step, counted from layer shapes.

    ``2 · MACs`` per matmul-like product; forward, input gradient and weight gradient each cost
    one product, so a step is ``3 ×`` the forward FLOPs, except the first kernel layer, whose
    input (the data) needs no gradient (``2 ×``). Elementwise work is not counted.
    """
    macs = _macs_per_example(model, tuple(per_example_shape))
    if not macs:
        return 0
    return 2 * batch_size * (3 * sum(macs) - macs[0])


def forward_flops(model: nn.Module, per_example_shape: tuple[int, ...], batch_size: int) -> int:
    """FLOPs of one forward pass (``2 · MACs`` of the kernel layers) on ``batch_size`` examples."""
    return 2 * batch_size * sum(_macs_per_example(model, tuple(per_example_shape)))


# --------------------------------------------------------------------------------------------
# The measured-rates table


@dataclasses.dataclass(frozen=True)
class Rate:
    """One measurement: the engine training ``num_models`` models of one shape on one device.

    Attributes:
      model: registry name; ``shape``: its shape kwargs; ``batch_size``: training batch.
      num_models: models per device ``M``.
      model_steps_per_s: models × steps per second, steady state.
      step_flops: FLOPs of one model's step (:func:`train_step_flops`).
      compile_s: seconds to compile the program (None when not measured).
      lowering: the conv lowering measured (``"lax"``/``"matmul"``; None: unknown, matches any).
      note: how it was measured, in words (for people; not read by the estimates).
    """

    model: str
    shape: tuple[tuple[str, int], ...]
    batch_size: int
    num_models: int
    model_steps_per_s: float
    step_flops: float
    compile_s: float | None = None
    lowering: str | None = None
    note: str = ""

    @property
    def flop_rate(self) -> float:
        """Achieved FLOP/s."""
        return self.model_steps_per_s * self.step_flops


def parse_rates(table: dict[str, Any]) -> dict[str, list[Rate]]:
    """``{device_kind: [Rate, ...]}`` from the JSON table's ``"devices"`` mapping.

    Raises:
      ValueError: a malformed table (names the entry and the missing or bad field).
    """
    if not isinstance(table, dict) or not isinstance(table.get("devices"), dict):
        raise ValueError("a rates table must be a JSON object with a 'devices' mapping")
    out: dict[str, list[Rate]] = {}
    for kind, device in table["devices"].items():
        entries = device.get("rates") if isinstance(device, dict) else None
        if not isinstance(entries, list):
            raise ValueError(f"rates table: device {kind!r} needs a 'rates' list")
        parsed = []
        for i, e in enumerate(entries):
            try:
                parsed.append(
                    Rate(
                        model=str(e["model"]),
                        shape=tuple(sorted((str(k), int(v)) for k, v in e["shape"].items())),
                        batch_size=int(e["batch_size"]),
                        num_models=int(e["num_models"]),
                        model_steps_per_s=float(e["model_steps_per_s"]),
                        step_flops=float(e["step_flops"]),
                        compile_s=None if e.get("compile_s") is None else float(e["compile_s"]),
                        lowering=None if e.get("lowering") is None else str(e["lowering"]),
                        note=str(e.get("note") or ""),
                    )
                )
            except (KeyError, TypeError, ValueError, AttributeError) as err:
                raise ValueError(f"rates table: device {kind!r}, entry {i}: {err!r}") from None
            if parsed[-1].model_steps_per_s <= 0 or parsed[-1].num_models < 1:
                raise ValueError(
                    f"rates table: device {kind!r}, entry {i}: model_steps_per_s must be > 0 "
                    "and num_models >= 1"
                )
        out[str(kind)] = parsed
    return out


@functools.cache
def _shipped_table() -> dict[str, Any]:
    if not RATES_FILE.is_file():
        return {"devices": {}}
    return json.loads(RATES_FILE.read_text())


def load_rates(path: str | pathlib.Path | None = None) -> dict[str, list[Rate]]:
    """The measured rates, by device kind: the shipped table, or the JSON file at ``path``."""
    table = _shipped_table() if path is None else json.loads(pathlib.Path(path).read_text())
    return parse_rates(table)


def save_rates(
    device_kind: str,
    measured: Sequence[Rate],
    meta: dict[str, Any],
    path: str | pathlib.Path = RATES_FILE,
) -> None:
    """Writes one device kind's rates into the table at ``path``, keeping the other kinds.

    The one writer of the format :func:`parse_rates` reads (``benchmarks/zoo.py`` calls it).

    Args:
      device_kind: ``jax.devices()[0].device_kind`` of the measuring machine.
      measured: its rates; they replace that kind's previous entries.
      meta: how they were measured (date, command, versions, ...), stored beside them.
      path: the table (default: the shipped :data:`RATES_FILE`).
    """
    path = pathlib.Path(path)
    table = json.loads(path.read_text()) if path.is_file() else {}
    table.setdefault("devices", {})
    table["about"] = (
        "Engine training rates measured by benchmarks/zoo.py, read by "
        "coordjax.sweep.rates for the dry run's time estimates."
    )
    entries = [
        {
            "model": r.model,
            "shape": dict(r.shape),
            "batch_size": r.batch_size,
            "num_models": r.num_models,
            "model_steps_per_s": round(r.model_steps_per_s, 6),
            "step_flops": r.step_flops,
            "compile_s": None if r.compile_s is None else round(r.compile_s, 3),
            "lowering": r.lowering,
            "note": r.note,
        }
        for r in measured
    ]
    table["devices"][device_kind] = {**meta, "device_kind": device_kind, "rates": entries}
    parse_rates(table)  # never write a table the estimates could not read
    path.write_text(json.dumps(table, indent=1, sort_keys=True) + "\n")
    _shipped_table.cache_clear()  # a later estimate in this process reads what was written


# --------------------------------------------------------------------------------------------
# Estimates


@dataclasses.dataclass(frozen=True)
class BucketEstimate:
    """One bucket's estimated time.

    Attributes:
      bucket_id: the planner's id; ``model_steps``: models × training steps.
      train_s, eval_s: training and evaluation seconds; ``compile_s``: its programs' compiles.
      basis: ``"measured"`` (same model, shape and batch), ``"scaled"`` (a measured shape's
        achieved FLOP/s), or ``"assumed"`` (:data:`ASSUMED_FLOP_RATE`).
      detail: what was used, in words.
    """

    bucket_id: str
    model_steps: int
    train_s: float
    eval_s: float
    compile_s: float
    basis: str
    detail: str

    @property
    def seconds(self) -> float:
        return self.train_s + self.eval_s + self.compile_s


@dataclasses.dataclass(frozen=True)
class SweepEstimate:
    """A sweep's estimated wall time: the buckets run one after another."""

    device_kind: str
    buckets: tuple[BucketEstimate, ...]
    provisional: bool = False  # the rates come from a validation run, not an idle machine

    @property
    def seconds(self) -> float:
        return sum(b.seconds for b in self.buckets)

    @property
    def warning(self) -> str | None:
        """A sentence when the estimate exceeds :data:`LONG_SECONDS`, else None."""
        if self.seconds <= LONG_SECONDS:
            return None
        return long_run_warning(self.seconds, self.device_kind)


def long_run_warning(seconds: float, device_kind: str, how: str = "") -> str:
    """The sentence a long estimate (``seconds`` on ``device_kind``; ``how``: e.g. "with its
    pruning") is flagged with: what shortens it."""
    return (
        f"estimated {format_duration(seconds)}{f' {how}' if how else ''} on {device_kind}: "
        "`--dry-run` shows the plan; --prune-at (successive halving), --only, a smaller preset "
        "or a GPU shortens it"
    )


def _log_distance(a: float, b: float) -> float:
    return abs(math.log(max(a, 1e-30)) - math.log(max(b, 1e-30)))


def rate_for(
    rates: Sequence[Rate],
    model: str,
    shape: dict[str, int],
    batch_size: int,
    num_models: int,
    step_flops: float,
) -> tuple[float, str, Rate] | None:
    """A device's model-steps/s on a bucket, from measured rates (None: ``model`` unmeasured).

    Returns ``(model_steps_per_s, basis, used)``: the measurement at the ``M`` nearest to
    ``num_models`` on a log scale (ties: the larger ``M``), of the same shape and batch size
    (``basis="measured"``), or else of the measured shape with the nearest FLOPs per step,
    converted through its achieved FLOP/s (``"scaled"``). The measured model-steps/s is taken
    as the device's throughput at any ``M`` near it: beyond the largest measured ``M`` a larger
    bucket is assumed to gain nothing more, below it a smaller one to lose nothing.
    """
    mine = [r for r in rates if r.model == model]
    if not mine:
        return None
    key = tuple(sorted(shape.items()))
    same = [r for r in mine if r.shape == key and r.batch_size == batch_size]
    if same:
        candidates, basis = same, "measured"
    else:
        nearest = min(mine, key=lambda r: (_log_distance(r.step_flops, step_flops), r.shape))
        candidates = [
            r for r in mine if (r.shape, r.batch_size) == (nearest.shape, nearest.batch_size)
        ]
        basis = "scaled"
    used = min(candidates, key=lambda r: (_log_distance(r.num_models, num_models), -r.num_models))
    rate = used.model_steps_per_s
    if basis == "scaled":
        rate *= used.step_flops / max(step_flops, 1.0)
    return rate, basis, used


def estimate_seconds(
    sweep,
    options=None,
    *,
    device_kind: str | None = None,
    platform: str | None = None,
    num_devices: int | None = None,
    rates: dict[str, list[Rate]] | None = None,
    buckets=None,
) -> SweepEstimate:
    """Estimated wall time of a sweep, from measured rates (see the module docstring).

    Args:
      sweep: a :class:`coordjax.sweep.Sweep`.
      options: its :class:`coordjax.sweep.EngineOptions` (planning, sharding and the conv
        lowering: only rates measured with the lowering it resolves to are used).
      device_kind: whose rates to use; default: this process's first device's kind.
      platform: ``"cpu"``, ``"gpu"`` or ``"tpu"`` for the assumed fallback; default: this
        process's.
      num_devices: devices the model axis is sharded over; default: the local devices when
        ``options.shard``, else 1.
      rates: ``{device_kind: [Rate, ...]}``; default: the shipped table (:func:`load_rates`).
      buckets: the buckets to estimate (default: the sweep's plan under ``options``; a grown
        workdir's differ, :mod:`coordjax.sweep.growth`).

    Returns:
      A :class:`SweepEstimate` (``.seconds``, ``.buckets``, ``.warning``).
    """
    options = options or EngineOptions()
    if device_kind is None or platform is None:
        device = jax.devices()[0]
        device_kind = device.device_kind if device_kind is None else device_kind
        platform = device.platform if platform is None else platform
    if num_devices is None:
        num_devices = len(jax.local_devices()) if options.shard else 1
    table = (load_rates() if rates is None else rates).get(device_kind, [])
    lowering = conv.resolve_lowering(options.lowering, platform, vmapped=True)
    table = [r for r in table if r.lowering in (None, lowering)]
    shipped = _shipped_table()["devices"].get(device_kind, {}) if rates is None else {}
    provisional = bool(table) and bool(shipped.get("provisional", False))
    assumed_flop_rate = ASSUMED_FLOP_RATE.get(platform, ASSUMED_FLOP_RATE["cpu"])
    assumed_compile = ASSUMED_COMPILE_S.get(platform, ASSUMED_COMPILE_S["cpu"])
    measured_compiles = [r.compile_s for r in table if r.compile_s is not None]
    default_compile = float(np.median(measured_compiles)) if measured_compiles else assumed_compile
    experiment = sweep.experiment
    if buckets is None:
        buckets = plan(
            sweep.expand(), experiment=experiment, max_models=options.max_models, pad=options.pad
        )
    compiled: set[tuple] = set()
    estimates = []
    for bucket in buckets:
        known = experiment.model_steps(bucket) if experiment.model_steps else None
        per_device = -(-bucket.num_models // num_devices)  # models per device, run in parallel
        if known is None:  # an experiment the rates table does not know: XLA's cost analysis
            costs = bucket_costs(bucket)
            name, shape, batch = bucket.bucket_id, (), bucket.static.get("batch_size", 0)
            step_flops, eval_flops = costs["step_flops"], costs["eval_flops"]
            found = None
        else:
            name, shape, model, input_shape, examples = known
            batch = bucket.static["batch_size"]
            step_flops = train_step_flops(model, input_shape, batch)
            eval_flops = forward_flops(model, input_shape, 1) * examples
            found = rate_for(table, name, shape, batch, per_device, step_flops)
        if found is None:
            rate = assumed_flop_rate / max(step_flops, 1.0)
            basis, detail = "assumed", f"assumed {assumed_flop_rate:.0e} FLOP/s"
            compile_each = assumed_compile
        else:
            rate, basis, used = found
            measured = ", ".join(f"{k}={v}" for k, v in used.shape) or "-"
            detail = (
                f"{basis} from {name} ({measured}, batch {used.batch_size}) at "
                f"M={used.num_models}"
            )
            compile_each = default_compile if used.compile_s is None else used.compile_s
        # Each device trains its share of the bucket's models at ``rate`` model-steps/s.
        train_s = per_device * bucket.total_steps / rate
        eval_s = len(bucket.chunks) * per_device * eval_flops / max(rate * step_flops, 1.0)
        key = (name, tuple(sorted(dict(shape).items())), batch, per_device)
        n_programs = 0 if key in compiled else 1 + len(set(bucket.chunks))
        compiled.add(key)
        estimates.append(
            BucketEstimate(
                bucket_id=bucket.bucket_id,
                model_steps=bucket.num_models * bucket.total_steps,
                train_s=train_s,
                eval_s=eval_s,
                compile_s=n_programs * compile_each,
                basis=basis,
                detail=detail,
            )
        )
    return SweepEstimate(device_kind, tuple(estimates), provisional)


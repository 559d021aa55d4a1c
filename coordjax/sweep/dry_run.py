"""The plan of a sweep, without training: buckets, compiles, steps, FLOPs, memory and time.

The time estimate comes from measured training rates (:mod:`coordjax.sweep.rates`), not from the
FLOP count: a FLOP count says nothing about how fast a device runs these small convolutions.
"""

from __future__ import annotations

from coordjax.sweep import memory, pruning
from coordjax.sweep.costs import bucket_costs
from coordjax.sweep.durations import format_duration
from coordjax.sweep.grid import Sweep
from coordjax.sweep.options import EngineOptions
from coordjax.sweep.planner import Bucket, plan
from coordjax.sweep.rates import estimate_seconds


def plan_text(sweep: Sweep, options: EngineOptions) -> str:
    """A table of the plan, one line per bucket, and totals (with the estimated wall time)."""
    buckets = plan(
        sweep.expand(), experiment=sweep.experiment, max_models=options.max_models,
        pad=options.pad,
    )  # fmt: skip
    estimate = estimate_seconds(sweep, options)
    times = {b.bucket_id: b for b in estimate.buckets}
    header = (
        f"{'bucket':<34} {'models':>6} {'bs':>4} {'epochs':>6} {'steps':>8} {'compiles':>8} "
        f"{'TFLOP':>10} {'state MB':>9} {'est. time':>10}"
    )
    lines = [f"sweep {sweep.name}: {sum(b.num_models for b in buckets)} models in "
             f"{len(buckets)} buckets", header]  # fmt: skip
    total_flops = total_steps = compiles = 0.0
    shapes_seen = set()
    for bucket in buckets:
        costs = bucket_costs(bucket)
        evals = len(bucket.chunks)
        flops = bucket.num_models * (
            bucket.total_steps * costs["step_flops"] + evals * costs["eval_flops"]
        )
        shape_key = (bucket.bucket_id.split("-p")[0], bucket.num_models)
        n_compiles = 0 if shape_key in shapes_seen else 1 + len(set(bucket.chunks))
        shapes_seen.add(shape_key)
        total_flops += flops
        total_steps += bucket.num_models * bucket.total_steps
        compiles += n_compiles
        batch = bucket.static.get("batch_size", "-")
        lines.append(
            f"{bucket.bucket_id:<34} {bucket.num_models:>6} {batch:>4} "
            f"{bucket.static['epochs']:>6} {bucket.total_steps:>8} {n_compiles:>8} "
            f"{flops / 1e12:>10.2f} {bucket.num_models * costs['state_bytes'] / 2**20:>9.1f} "
            f"{format_duration(times[bucket.bucket_id].seconds):>10}"
        )
        lines.append(
            "    " + ", ".join(f"{k}={v}" for k, v in bucket.static.items() if k != "model")
        )
        if bucket.padded:
            values = {k: sorted({r[k] for r in bucket.runs}) for k in bucket.padded}
            lines.append(
                "    padded (costs above are the largest model's): "
                + ", ".join(f"{k} in {v}" for k, v in values.items())
            )
    lines.append(
        f"total: {total_steps:,.0f} model-steps, {int(compiles)} compiles "
        f"(init + one per distinct chunk length), {total_flops / 1e12:,.1f} TFLOP "
        f"(XLA cost analysis; train steps + evaluations); strategy={options.strategy}"
    )
    lines.append(estimate_text(estimate))
    if sweep.rules():
        lines.append(pruning_text(sweep, buckets, estimate))
    if options.device_memory is not None:
        lines.append(fit_text(sweep, options))
    return "\n".join(lines)


def fit_text(sweep: Sweep, options: EngineOptions) -> str:
    """Each bucket's program memory (XLA's analysis on this host's first device) and the split
    that fits ``options.device_memory`` (raises :class:`~coordjax.sweep.memory.DoesNotFit`)."""
    import jax

    device = jax.devices()[0]
    devices = len(jax.devices()) if options.shard else 1
    unsplit = plan(sweep.expand(), experiment=sweep.experiment, pad=options.pad)
    fits = memory.fit(unsplit, options.device_memory, options, devices=devices)
    return memory.memory_text(fits, options.device_memory, device.platform, device.device_kind)


def pruned_model_steps(sweep: Sweep, buckets: list[Bucket]) -> dict[str, float]:
    """bucket_id -> model-steps the bucket trains under the sweep's pruning rules, if no run
    diverges (each run weighted by the share of its group alive in each segment; the ladder's
    padding of compacted stacks, at most a third, is not counted)."""
    fractions = pruning.expected_fractions(sweep.rules(), sweep.expand(), sweep.experiment)
    return {
        b.bucket_id: sum(
            share * (end - start) * b.steps_per_epoch
            for run in b.runs
            for start, end, share in fractions[run["run_id"]]
        )
        for b in buckets
    }


def pruned_estimate(sweep: Sweep, buckets: list[Bucket], estimate) -> tuple[float, int, float]:
    """``(pruned model-steps, unpruned model-steps, pruned seconds)``: each bucket's estimated
    time scaled by the share of its model-steps the rules leave (:func:`pruned_model_steps`)."""
    pruned = pruned_model_steps(sweep, buckets)
    seconds = {b.bucket_id: b.seconds for b in estimate.buckets}
    full_steps = sum(b.num_models * b.total_steps for b in buckets)
    pruned_seconds = sum(
        seconds[b.bucket_id] * pruned[b.bucket_id] / max(b.num_models * b.total_steps, 1)
        for b in buckets
    )
    return sum(pruned.values()), full_steps, pruned_seconds


def pruning_text(sweep: Sweep, buckets: list[Bucket], estimate) -> str:
    """The rules, and the model-steps and time with pruning beside those without."""
    rules = dict.fromkeys(sweep.rules().values())  # distinct rules, in order
    lines = []
    for rule in rules:
        metric = rule.metric or "the experiment's score on the train split"
        groups = " x ".join(rule.groups(sweep.experiment))
        lines.append(
            f"pruning: rungs {', '.join(map(str, rule.at))}; keep {rule.keep:.3g} of each group "
            f"({groups}) by {metric}"
        )
    pruned_steps, full_steps, pruned_seconds = pruned_estimate(sweep, buckets, estimate)
    lines.append(
        f"pruned: {pruned_steps:,.0f} model-steps instead of {full_steps:,.0f} "
        f"({full_steps / max(pruned_steps, 1):.1f}x fewer), estimated "
        f"{format_duration(pruned_seconds)} instead of {format_duration(estimate.seconds)} "
        "(if no run diverges; ladder padding not counted)"
    )
    return "\n".join(lines)


def estimate_text(estimate) -> str:
    """The estimated wall time, what it rests on, and a warning when it is long."""
    bases = {}
    for b in estimate.buckets:
        bases[b.basis] = bases.get(b.basis, 0) + 1
    text = (
        f"estimated wall time on {estimate.device_kind}: {format_duration(estimate.seconds)} "
        f"(from measured rates: "
        + ", ".join(f"{n} bucket(s) {basis}" for basis, n in sorted(bases.items()))
        + "; see coordjax.sweep.rates)"
    )
    if estimate.provisional:
        text += "\n(the measured rates are provisional: rerun benchmarks/zoo.py on an idle machine)"
    if estimate.warning:
        text += f"\nWARNING: {estimate.warning}"
    return text

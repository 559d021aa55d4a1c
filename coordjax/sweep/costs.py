"""What one model of a bucket costs, from XLA's cost analysis of its lowered programs: the dry
run's table and the progress bar's weights both read it."""

from __future__ import annotations

import functools

import jax
import numpy as np

from coordjax import datasets
from coordjax.sweep.planner import Bucket
from coordjax.train import DeviceData, evaluate, init_state, train_step
from coordjax.train.run_config import stack_runs


def _abstract_data(setup) -> DeviceData:
    examples = datasets.all_examples()
    shape = lambda field: getattr(examples, field).shape  # noqa: E731
    return DeviceData(
        jax.ShapeDtypeStruct(shape(setup.task.input_field), np.float32),
        jax.ShapeDtypeStruct(shape(setup.task.target_field), np.float32),
    )


def bucket_costs(bucket: Bucket) -> dict[str, float]:
    """Per-model costs from XLA's cost analysis of the lowered (not compiled) programs.

    Returns flops per train step, flops per evaluation, and the bytes of one model's state
    (parameters, BatchNorm statistics and Adam moments).
    """
    setup = bucket.setup()
    data = _abstract_data(setup)
    run = jax.tree.map(lambda x: x[0], stack_runs(list(bucket.runs[:1])))
    state = jax.eval_shape(functools.partial(init_state, setup), data, run)
    idx = jax.ShapeDtypeStruct((setup.batch_size,), np.int32)
    mask = jax.ShapeDtypeStruct((setup.batch_size,), bool)
    step = jax.jit(functools.partial(train_step, setup)).lower(data, run, state, idx, mask)
    evaluation = jax.jit(functools.partial(evaluate, setup)).lower(data, run, state)
    state_bytes = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(state))
    return {
        "step_flops": float(step.cost_analysis().get("flops", float("nan"))),
        "eval_flops": float(evaluation.cost_analysis().get("flops", float("nan"))),
        "state_bytes": float(state_bytes),
    }

"""What one model of a bucket costs, from XLA's cost analysis of its lowered programs: the dry
run's table and the progress bar's weights both read it."""

from __future__ import annotations

import functools

import jax
import numpy as np

from coordjax.sweep.planner import Bucket


def abstract_data(bucket: Bucket, setup) -> object:
    """The shapes and dtypes of the bucket's device data (nothing materialised on a device)."""
    if bucket.experiment.data_shapes is not None:
        return bucket.experiment.data_shapes(setup)
    return jax.eval_shape(lambda: bucket.experiment.data(setup))


def bucket_costs(bucket: Bucket) -> dict[str, float]:
    """Per-model costs from XLA's cost analysis of the lowered (not compiled) programs.

    Returns flops per train step, flops per evaluation, and the bytes of one model's state
    (for the supervised recipe: parameters, BatchNorm statistics and Adam moments).
    """
    experiment = bucket.experiment
    recipe = experiment.recipe
    setup = bucket.setup()
    data = abstract_data(bucket, setup)
    run = jax.tree.map(lambda x: x[0], experiment.stack(list(bucket.runs[:1])))
    state = jax.eval_shape(functools.partial(recipe.init, setup), data, run)
    idx = jax.ShapeDtypeStruct((setup.batch_size,), np.int32)
    mask = jax.ShapeDtypeStruct((setup.batch_size,), bool)
    step = jax.jit(functools.partial(recipe.train_step, setup)).lower(data, run, state, idx, mask)
    evaluation = jax.jit(functools.partial(recipe.evaluate, setup)).lower(data, run, state)
    state_bytes = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(state))
    return {
        "step_flops": float(step.cost_analysis().get("flops", float("nan"))),
        "eval_flops": float(evaluation.cost_analysis().get("flops", float("nan"))),
        "state_bytes": float(state_bytes),
    }

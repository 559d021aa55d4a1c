"""The engine's few-step program (what ``auto`` times and benchmarks/zoo.py measures) trains
every model exactly as the single-model ``train_step`` does, on every lowering of the model axis,
sharded or not."""

import functools

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from coordjax.paper.data import device_data
from coordjax.sweep import Grid, plan, programs, union
from coordjax.train import train_step

STEPS = 3


def tiny_bucket():
    grid = Grid("t", base={"task": "classification", "model": "tiny", "batch_size": 64,
                           "epochs": 1, "eval_every": 1, "l2": 0.001},
                axes={"lr": [0.01, 0.002], "seed": [0, 1]})  # fmt: skip
    (bucket,) = plan(union("t", [grid]).expand())
    return bucket


@pytest.mark.parametrize("strategy, shard", [("vmap", False), ("map", False), ("vmap", True)])
def test_compiled_steps_equal_single_model_steps(strategy, shard, assert_functionally_equal):
    bucket = tiny_bucket()
    setup = bucket.setup()
    mesh = programs.make_mesh(shard)
    data = programs.place(device_data(setup.task), mesh, P())
    states, runs, _ = programs.initial_state(bucket, setup, data, list(bucket.runs), mesh)
    out = programs.compiled_steps(setup, STEPS, strategy, 1, mesh)(data, runs, states)
    # On the host before slicing: eager ops on sharded arrays are cross-device programs.
    out, runs, states = jax.device_get((out, runs, states))
    step = jax.jit(functools.partial(train_step, setup))
    idx = np.arange(setup.batch_size, dtype=np.int32)  # the program's fixed batch
    mask = np.ones(setup.batch_size, bool)
    for i in range(bucket.num_models):
        run, state = jax.tree.map(lambda x, i=i: x[i], (runs, states))
        for _ in range(STEPS):
            state = step(data, run, state, idx, mask)[0]
        mine = jax.tree.map(lambda x, i=i: x[i], out)
        assert_functionally_equal(mine.params, state.params, max_step=2 * 0.01 * STEPS)
        np.testing.assert_allclose(
            mine.batch_stats["bn_0"]["mean"],
            state.batch_stats["bn_0"]["mean"],
            rtol=1e-5,
            atol=1e-6,
        )
        assert int(mine.step) == STEPS

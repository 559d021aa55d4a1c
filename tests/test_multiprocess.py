"""Multi-host: a (padded) sweep run by 2 processes (jax.distributed over gloo, 2 CPU devices
each; the model axis sharded over all 4) gives the results of the same sweep in one process."""

import os
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest
from tiny_sweeps import TINY

from coordjax.sweep import EngineOptions, Grid, run_sweep, union

AXES = {"channel_mult": [1, 2], "lr": [0.01, 0.002], "split": ["uniform", "quadrant"]}
OPTIONS = {"progress": False, "strategy": "vmap", "pad": ("channel_mult",)}

WORKER = textwrap.dedent(
    """
    import sys
    import jax

    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    process_id, port, workdir = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    jax.distributed.initialize("localhost:" + port, num_processes=2, process_id=process_id)
    from coordjax.sweep import EngineOptions, Grid, run_sweep, union

    sweep = union("tiny", [Grid("tiny", base={tiny!r}, axes={axes!r})])
    run_sweep(sweep, workdir, options=EngineOptions(**{options!r}))
    print("devices", jax.device_count(), "processes", jax.process_count())
    """
).format(tiny=TINY, axes=AXES, options=OPTIONS)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


@pytest.mark.integration
def test_two_processes_equal_one(tmp_path):
    port = _free_port()
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "JAX_NUM_CPU_DEVICES": "2"}
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(i), str(port), str(tmp_path / "multi")],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(2)
    ]
    outputs = [w.communicate(timeout=600)[0] for w in workers]
    for worker, output in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, output
        assert "devices 4 processes 2" in output, output

    single = run_sweep(
        union("tiny", [Grid("tiny", base=TINY, axes=AXES)]),
        tmp_path / "single",
        options=EngineOptions(**OPTIONS),
    )
    multi = pd.read_csv(tmp_path / "multi" / "results.csv")
    a = single.sort_values(["run_id", "epoch"]).reset_index(drop=True)
    b = multi.sort_values(["run_id", "epoch"]).reset_index(drop=True)
    assert list(a["run_id"]) == list(b["run_id"]) and len(a) == 8 * TINY["epochs"]
    np.testing.assert_array_equal(a["param_count"], b["param_count"])
    for col in ("train_loss", "test_loss", "epoch_train_loss", "test_eucl_dist"):
        np.testing.assert_allclose(a[col], b[col], rtol=1e-5, atol=1e-6, err_msg=col)

"""The tiny sweep the tests share, and how they compare two runs of it.

The ``tiny`` model (17 parameters) on classification compiles and trains in seconds, so the
engine's equivalences (vmapped = one model, sharded = one device, map = vmap, resumed =
uninterrupted, fanned out = one process) run in the default suite on it; the paper's models run
the same checks under ``-m slow``. ``conftest.py`` trains :func:`tiny_sweep` once per test
session (``tiny_workdir``). Tests vary it through :func:`tiny_sweep`'s arguments, and write it
as a sweep file for child processes with :func:`tiny_sweep_file`.
"""

import pathlib
import textwrap

import numpy as np
import pandas as pd
import pytest

from coordjax import sweep as sw
from coordjax.sweep import EngineOptions, Grid, union
from coordjax.sweep import workdir as wd
from coordjax.sweep.programs import Programs

TINY = {"task": "classification", "model": "tiny", "batch_size": 256, "epochs": 2, "eval_every": 1}
"""The base of every tiny grid: two epochs, evaluated after each."""

QUIET = EngineOptions(progress=False, strategy="vmap")
"""No progress bar, one vmapped program per bucket (no strategy probe)."""

METRICS = ["train_loss", "train_accuracy", "train_eucl_dist", "test_loss", "test_accuracy",
           "test_eucl_dist", "epoch_train_loss"]  # fmt: skip


def tiny_sweep(lrs=(0.01, 0.002), splits=("uniform", "quadrant"), name="tiny", **base):
    """lr × split over the tiny model (4 runs in one bucket by default); ``base`` overrides
    :data:`TINY`'s keys."""
    axes = {"lr": list(lrs), "split": list(splits)}
    return union(name, [Grid("tiny", base={**TINY, **base}, axes=axes)])


def tiny_sweep_file(directory: pathlib.Path, grids: str, prune: str = "None") -> pathlib.Path:
    """A sweep file (preset ``t``) for the CLI in a child process.

    Args:
      directory: where to write ``sweep.py``.
      grids: Python source of a list of ``Grid``s; ``BASE`` (:data:`TINY`) and ``Prune`` are in
        scope.
      prune: Python source of the union's ``prune=`` argument.

    Returns:
      The file's path.
    """
    source = [
        "from coordjax.sweep import Grid, Prune, union",
        f"BASE = {TINY!r}",
        f"GRIDS = {textwrap.dedent(grids).strip()}",
        f'PRESETS = {{"t": lambda: union("t", GRIDS, prune={prune})}}',
    ]
    path = directory / "sweep.py"
    path.write_text("\n".join(source) + "\n")
    return path


def sweep_of_file(path: pathlib.Path):
    """The preset ``t`` of a :func:`tiny_sweep_file`, for the same run in this process."""
    namespace: dict = {}
    exec(path.read_text(), namespace)
    return namespace["PRESETS"]["t"]()


def by_run(results: pd.DataFrame) -> pd.DataFrame:
    return results.sort_values(["run_id", "epoch"]).reset_index(drop=True)


def assert_bitwise_equal(a: pd.DataFrame, b: pd.DataFrame) -> None:
    """Every column but wall time, exactly (NaN equal to NaN)."""
    a, b = (by_run(t).drop(columns="wall_time") for t in (a, b))
    pd.testing.assert_frame_equal(a, b, check_exact=True)


def assert_same_metrics(a: pd.DataFrame, b: pd.DataFrame, rtol=1e-4, atol=1e-6):
    """Same runs, same evaluations, same metrics (argmax metrics may flip on near-ties: they
    are compared at a tolerance of a few examples)."""
    a, b = by_run(a), by_run(b)
    assert list(a["run_id"]) == list(b["run_id"])
    assert list(a["epoch"]) == list(b["epoch"])
    for col in METRICS:
        tol = (rtol, atol) if "loss" in col else (max(rtol, 1e-3), max(atol, 5e-3))
        np.testing.assert_allclose(a[col], b[col], rtol=tol[0], atol=tol[1], err_msg=col)


def interrupted_then_resumed(sweep, workdir, programs, after_chunks=3, callbacks=((), ()),
                             **run_kwargs) -> pd.DataFrame:  # fmt: skip
    """The sweep stopped by a Ctrl-C in its ``after_chunks``-th chunk, then rerun to its end
    (with ``programs``, compiled once per test module); ``callbacks``: the two processes'.
    Returns the second run's results."""
    calls = {"n": 0}
    build = Programs.chunk

    def chunk(self, *args):
        program = build(self, *args)

        def counted(*inputs):
            calls["n"] += 1
            if calls["n"] == after_chunks:
                raise KeyboardInterrupt
            return program(*inputs)

        return counted

    run = dict(options=QUIET, programs=programs, **run_kwargs)
    with pytest.MonkeyPatch.context() as patched:
        patched.setattr(Programs, "chunk", chunk)
        with pytest.raises(KeyboardInterrupt):
            sw.run_sweep(sweep, workdir, callbacks=callbacks[0], **run)
    assert 0 < len(wd.read_results(workdir))
    return sw.run_sweep(sweep, workdir, callbacks=callbacks[1], **run)

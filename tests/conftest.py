"""Test configuration: strict numerics, several fake CPU devices, one compilation cache.

The device count must be set before JAX initialises its backend, so it is set here, at import,
which pytest does before any test module imports jax (and before pytest-xdist starts its
workers, which inherit the environment).

Most of the suite's time is XLA compiling the same few tiny programs in many tests; JAX's
persistent compilation cache, in one fresh directory per run shared by the workers and the
subprocess tests, compiles each once (a cache hit is the same executable, so no result
changes). Set ``JAX_COMPILATION_CACHE_DIR`` yourself to keep a cache across runs.
"""

import fcntl
import os
import shutil
import tempfile

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("JAX_NUM_CPU_DEVICES", "4")
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _RUN_CACHE = tempfile.mkdtemp(prefix="coordjax-tests-xla-cache-")
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _RUN_CACHE
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "-1")
else:
    _RUN_CACHE = None

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_numpy_dtype_promotion", "strict")
jax.config.update("jax_numpy_rank_promotion", "raise")


def pytest_xdist_auto_num_workers(config):
    """``-n auto``: two workers more than this process may use cores, since a core idles while
    its test waits on a checkpoint write, a child process or a sleep. On 2 cores, one worker per
    core kept about 1.8 busy; the default suite took 9:42 with 2 workers and 8:46 with 3 on one
    tree, 8:24 with 3 and 8:00 with 4 on a later one. Runs that select the integration tests
    keep one worker per core: those tests start processes of their own and time them."""
    if hasattr(os, "sched_getaffinity"):  # Linux: the cores this process may run on
        cores = len(os.sched_getaffinity(0))
    else:
        cores = os.cpu_count() or 1
    selected = config.getoption("markexpr", "") or ""
    if "integration" in selected.replace("not integration", ""):
        return cores
    return cores + 2


# The test files that take longest (seconds summed over their tests with 4 workers on 2 cores,
# --durations=0, at 527bda0), run first: under --dist loadfile a worker takes one file at a
# time, so a long file started last would run alone at the end. Files not named here follow in
# collection order.
SLOWEST_FILES_FIRST = [
    "test_pruning.py",  # 196 s
    "test_models.py",  # 177
    "test_conv.py",  # 161
    "test_padding.py",  # 149
    "test_sweep.py",  # 138
    "test_layers.py",  # 115
    "test_faults.py",  # 114
    "test_lowering.py",  # 109
    "test_train.py",  # 95
    "test_coords.py",  # 57
    "test_recipe_options.py",  # 51
    "test_layers_nnx.py",  # 51
    "test_experiment.py",  # 44 (alone, -n 0, at 1b659eb)
]


def pytest_collection_modifyitems(config, items):
    """Whole files in the order of SLOWEST_FILES_FIRST (xdist keeps the collection's order with
    --no-loadscope-reorder; its default orders files by their number of tests)."""
    rank = {name: i for i, name in enumerate(SLOWEST_FILES_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


def pytest_unconfigure(config):
    """The run's cache goes with the process that made it (the controller, under xdist)."""
    if _RUN_CACHE is not None and not hasattr(config, "workerinput"):
        shutil.rmtree(_RUN_CACHE, ignore_errors=True)


@pytest.fixture
def getkey():
    """A fresh, distinct PRNG key on every call, from a fixed root (deterministic tests)."""
    root = jax.random.key(0)
    count = iter(range(1_000_000))
    return lambda: jax.random.fold_in(root, next(count))


def _functionally_equal(params, expected, *, max_step, rtol=1e-4, atol=1e-5):
    """Two trainings of the same model agree up to float noise.

    Vmapped and unvmapped programs sum in different orders, and Adam's first steps move a
    coordinate by about ±lr whatever the size of its gradient, so a coordinate whose gradient is
    pure noise can differ by up to ``max_step`` (2·lr·steps). Biases that feed BatchNorm or the
    4096-way softmax are such coordinates (both layers are invariant to them) and are skipped;
    of all other entries, at most 1 % may differ beyond rtol/atol, none by more than max_step.
    """
    total = mismatched = 0
    for path, value in jax.tree_util.tree_leaves_with_path(params):
        if path[-1].key == "bias" and not path[0].key.startswith("bn_"):
            continue
        want = expected
        for entry in path:
            want = want[entry.key]
        value, want = np.asarray(value), np.asarray(want)
        close = np.isclose(value, want, rtol=rtol, atol=atol)
        total += value.size
        mismatched += int((~close).sum())
        assert np.max(np.abs(value - want)) <= max_step, path
    assert mismatched <= 1e-2 * total, f"{mismatched} of {total} entries differ"


@pytest.fixture
def assert_functionally_equal():
    """Asserts two trainings of the same model agree up to float noise (``_functionally_equal``)."""
    return _functionally_equal


@pytest.fixture(scope="session")
def tiny_workdir(tmp_path_factory, worker_id):
    """A finished workdir of ``tiny_sweeps.tiny_sweep()`` and its results (read, never write:
    tests that change a workdir copy it first). A run's xdist workers share one: the first to
    ask trains it, the others wait for it under a file lock."""
    from tiny_sweeps import QUIET, tiny_sweep

    from coordjax.sweep import run_sweep
    from coordjax.sweep import workdir as wd

    if worker_id == "master":  # no xdist: this process's own
        root = tmp_path_factory.mktemp("tiny")
    else:  # the run's base directory, above each worker's own
        root = tmp_path_factory.getbasetemp().parent / "tiny"
        root.mkdir(exist_ok=True)
    path = root / "w"
    with open(root / "building.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (root / "finished").exists():
            run_sweep(tiny_sweep(), path, options=QUIET)
            (root / "finished").touch()
    return path, wd.read_results(path)

"""Padding: smaller models trained exactly inside a larger one (padded = true model)."""

import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jitted_recipe import jit_init
from tiny_sweeps import QUIET, TINY

from coordjax import models, tasks
from coordjax.paper import padding
from coordjax.paper.data import device_data, split_indices
from coordjax.sweep import EngineOptions, Grid, load_run, plan, run_sweep, union
from coordjax.train import RunSpec, TrainSetup, make_hparams, train_step

COORDS = np.array([[4.0, 59.0], [31.0, 12.0], [40.0, 40.0]], np.float32)


def _init(model, key=0):
    # Jitted, as every forward here: eager, a painter dispatches thousands of small ops.
    return jax.jit(lambda k: model.init(k, COORDS[:1], train=False))(jax.random.key(key))


def _embedded(name, small_kwargs, big_kwargs):
    """(small model, its variables, big model, the small variables embedded in it)."""
    spec = models.MODELS[name]
    small, big = models.build(name, **small_kwargs), models.build(name, **big_kwargs)
    small_vars, big_vars = _init(small), _init(big, key=1)
    zeros = jax.tree.map(jnp.zeros_like, big_vars["params"])
    embedded = {"params": padding.embed(small_vars["params"], zeros, spec.kernel_offset)}
    if "batch_stats" in small_vars:  # padded channels keep the big model's init statistics
        embedded["batch_stats"] = padding.embed(
            small_vars["batch_stats"], big_vars["batch_stats"], spec.kernel_offset
        )
    return small, small_vars, big, embedded


def _shape(fs, c):
    return {"filter_size": fs, "channel_mult": c}


# Training mode differs only where there is BatchNorm (the painter and the tiny model).
WITH_BATCH_NORM = {"deconv_painter", "tiny"}


def _cases(name, small_kwargs, big_kwargs, *, slow=False):
    """One test case per mode the model computes differently in (eval, and train with BN)."""
    marks = [pytest.mark.slow] if slow else []
    modes = (False, True) if name in WITH_BATCH_NORM else (False,)
    return [pytest.param(name, small_kwargs, big_kwargs, train, marks=marks) for train in modes]


EMBEDDINGS = [
    # By default: each offset rule once (the transposed one in the painter, the convolution one
    # in the renderer), channel padding in the classifier and the tiny model.
    *_cases("deconv_painter", _shape(2, 1), _shape(3, 1)),
    *_cases("coordconv_renderer", _shape(1, 1), _shape(2, 2)),
    *_cases("coordconv_classifier", {"channel_mult": 1}, {"channel_mult": 3}),
    *_cases("tiny", {"channel_mult": 1}, {"channel_mult": 3}),
    # Under -m slow: into the largest painter (fs 4, c 3), and more renderer shapes.
    *(case for fs in (2, 3, 4) for c in (1, 2)
      for case in _cases("deconv_painter", _shape(fs, c), _shape(4, 3), slow=True)),
    *_cases("coordconv_renderer", _shape(1, 2), _shape(3, 2), slow=True),
    *_cases("coordconv_renderer", _shape(2, 1), _shape(3, 2), slow=True),
]  # fmt: skip


@pytest.mark.parametrize("name, small_kwargs, big_kwargs, train", EMBEDDINGS)
def test_embedded_model_computes_the_small_model(name, small_kwargs, big_kwargs, train):
    small, small_vars, big, embedded = _embedded(name, small_kwargs, big_kwargs)
    mask = np.array([True, True, False])

    def forward(model, variables):
        apply = lambda v: model.apply(v, COORDS, train=train, mask=mask, mutable=["batch_stats"])  # noqa: E731
        return jax.jit(apply)(variables)[0]

    want, got = forward(small, small_vars), forward(big, embedded)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * float(np.abs(want).max()))


def test_wrong_offset_is_detected():
    """The equivalence above can fail: a 2-tap kernel placed at offset 0 of a 3-tap one."""
    name = "deconv_painter"
    small, small_vars, big, _ = _embedded(name, {"filter_size": 2}, {"filter_size": 3})
    big_vars = _init(big)
    zeros = jax.tree.map(jnp.zeros_like, big_vars["params"])
    wrong = {
        "params": padding.embed(small_vars["params"], zeros, lambda k, big_k: 0),
        "batch_stats": big_vars["batch_stats"],
    }
    want = jax.jit(lambda v: small.apply(v, COORDS, train=False))(small_vars)
    got = jax.jit(lambda v: big.apply(v, COORDS, train=False))(wrong)
    assert not np.allclose(got, want, atol=1e-3)


def test_offsets_match_lax():
    """The offsets are those at which lax's own 'SAME' convolutions agree (impulse probe)."""
    x = jax.random.normal(jax.random.key(0), (1, 5, 5, 1))
    for big_k in (2, 3, 4, 5):
        for k in range(1, big_k + 1):
            w = jax.random.normal(jax.random.key(k), (k, k, 1, 1))
            for transposed, offset in (
                (False, models.same_conv_offset(k, big_k)),
                (True, models.same_transposed_s2_offset(k, big_k)),
            ):
                big_w = (
                    jnp.zeros((big_k, big_k, 1, 1))
                    .at[offset : offset + k, offset : offset + k]
                    .set(w)
                )
                if transposed:
                    conv = lambda v, kern: jax.lax.conv_transpose(  # noqa: E731
                        v, kern, (2, 2), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
                    )
                else:
                    conv = lambda v, kern: jax.lax.conv_general_dilated(  # noqa: E731
                        v, kern, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
                    )
                np.testing.assert_allclose(conv(x, big_w), conv(x, w), atol=1e-5)


def test_extract_inverts_embed():
    small = {"a": np.arange(2 * 2 * 3 * 4, dtype=np.float32).reshape(2, 2, 3, 4), "b": np.ones(3)}
    big = {"a": np.full((4, 4, 5, 6), 7.0, np.float32), "b": np.zeros(5)}
    offset = models.same_transposed_s2_offset
    embedded = padding.embed(small, big, offset)
    back = padding.extract(embedded, small, offset)
    np.testing.assert_array_equal(back["a"], small["a"])
    np.testing.assert_array_equal(back["b"], small["b"])
    mask = padding.embedding_mask(small, big, offset)
    assert mask["a"].sum() == small["a"].size and mask["b"].sum() == 3
    np.testing.assert_array_equal(embedded["a"][mask["a"] == 0], 7.0)  # the template's fill


def test_embedding_errors_name_the_problem():
    with pytest.raises(ValueError, match="does not fit"):
        padding.leaf_slices((3, 3, 1, 1), (2, 2, 1, 1), models.same_conv_offset)
    with pytest.raises(ValueError, match="kernel_offset"):
        padding.leaf_slices((2, 2, 1, 1), (3, 3, 1, 1), None)


@pytest.mark.parametrize(
    "name, small_kwargs, big_kwargs",
    [
        pytest.param("deconv_painter", _shape(2, 1), _shape(3, 2), marks=pytest.mark.slow),
        ("tiny", {"channel_mult": 1}, {"channel_mult": 2}),
    ],
)
def test_padded_training_equals_true_model(
    name, small_kwargs, big_kwargs, assert_functionally_equal
):
    """Adam steps (with L2 and a partial batch) on the embedded model keep the padding at zero
    and give the small model's parameters, statistics and losses."""
    task = tasks.get("classification")
    data = device_data(task)
    spec = models.MODELS[name]
    small = TrainSetup(models.build(name, **small_kwargs), task, batch_size=8, steps_per_epoch=296)
    big = TrainSetup(models.build(name, **big_kwargs), task, batch_size=8, steps_per_epoch=296)
    run = RunSpec(make_hparams(0.01, 0.001), np.int32(3), split_indices("uniform"))
    small_state, big_init = jit_init(small, data, run), jit_init(big, data, run)
    zeros = jax.tree.map(np.zeros_like, big_init.params)
    params = padding.embed(small_state.params, zeros, spec.kernel_offset)
    big_state = big_init._replace(
        params=jax.tree.map(jnp.asarray, params),
        batch_stats=padding.embed(
            small_state.batch_stats, big_init.batch_stats, spec.kernel_offset
        ),
        opt_state=big.optimizer.init(params),
    )
    big_run = run._replace(
        param_mask=padding.embedding_mask(small_state.params, zeros, spec.kernel_offset)
    )
    mask = np.ones(8, bool)
    mask[-2:] = False
    step_small = jax.jit(lambda s, i: train_step(small, data, run, s, i, mask))
    step_big = jax.jit(lambda s, i: train_step(big, data, big_run, s, i, mask))
    for k in range(4):
        idx = (np.arange(8, dtype=np.int32) * 13 + 5 * k) % 3136
        small_state, small_loss = step_small(small_state, idx)
        big_state, big_loss = step_big(big_state, idx)
        np.testing.assert_allclose(big_loss, small_loss, rtol=1e-5)
    cut = padding.extract(big_state.params, small_state.params, spec.kernel_offset)
    assert_functionally_equal(cut, small_state.params, max_step=2 * 0.01 * 4)
    outside = jax.tree.map(
        lambda p, m: np.asarray(p)[np.asarray(m) == 0], big_state.params, big_run.param_mask
    )
    assert all(np.all(v == 0) for v in jax.tree.leaves(outside))  # exactly zero, never moved
    # Running means include the preceding bias, which moves by Adam noise (see the fixture).
    stats = padding.extract(big_state.batch_stats, small_state.batch_stats, spec.kernel_offset)
    for got, want in zip(
        jax.tree.leaves(stats), jax.tree.leaves(small_state.batch_stats), strict=True
    ):
        assert np.max(np.abs(got - want)) <= 2 * 0.01 * 4


# -- planner and engine ---------------------------------------------------------------------


def width_sweep():
    axes = {"channel_mult": [1, 2], "lr": [0.01, 0.003], "split": ["uniform", "quadrant"]}
    return union("tiny-widths", [Grid("tiny", base=TINY, axes=axes)])


def test_planner_merges_padded_axes_only_for_models_that_support_them():
    runs = width_sweep().expand()
    assert len(plan(runs)) == 2
    (bucket,) = plan(runs, pad=["channel_mult"])
    assert bucket.static["channel_mult"] == 2 and bucket.padded == ("channel_mult",)
    assert sorted({bucket.run_model_kwargs(r)["channel_mult"] for r in bucket.runs}) == [1, 2]
    base = {"model": "conv_regressor_quadrant", "task": "regression"}
    regressors = union("r", [Grid("r", base=base, axes={"channel_mult": [1, 2]})]).expand()
    assert len(plan(regressors, pad=["channel_mult"])) == 2  # not paddable: stays bucketed
    with pytest.raises(ValueError, match="batch_size.*steps per epoch"):
        plan(runs, pad=["batch_size"])
    with pytest.raises(ValueError, match="pad may name"):  # the experiment says what it pads
        plan(runs, pad=["lr"])


@pytest.fixture(scope="module")
def bucketed_widths(tmp_path_factory):
    """The width sweep trained in its own buckets (one per width): (workdir, results)."""
    workdir = tmp_path_factory.mktemp("widths") / "bucketed"
    return workdir, run_sweep(width_sweep(), workdir, options=QUIET)


def test_padded_sweep_equals_bucketed_sweep(tmp_path, bucketed_widths, assert_functionally_equal):
    """One padded program gives every model the numbers it gets in its own bucket."""
    bucketed_dir, bucketed = bucketed_widths
    options = EngineOptions(progress=False, strategy="vmap", pad=("channel_mult",))
    padded = run_sweep(width_sweep(), tmp_path / "padded", options=options)
    assert bucketed["bucket_id"].nunique() == 2 and padded["bucket_id"].nunique() == 1
    a = bucketed.sort_values(["run_id", "epoch"]).reset_index(drop=True)
    b = padded.sort_values(["run_id", "epoch"]).reset_index(drop=True)
    assert list(a["run_id"]) == list(b["run_id"])
    np.testing.assert_array_equal(a["param_count"], b["param_count"])  # each model's own count
    assert sorted(set(b["param_count"])) == [17, 33]
    for col in ("train_loss", "test_loss", "epoch_train_loss", "train_eucl_dist", "test_eucl_dist"):
        np.testing.assert_allclose(a[col], b[col], rtol=1e-4, atol=1e-5, err_msg=col)
    for _, row in b[b["epoch"] == TINY["epochs"]].iterrows():
        mine = load_run(tmp_path / "padded", row["run_id"])["params"]  # cut out of the bucket
        alone = load_run(bucketed_dir, row["run_id"])["params"]
        assert jax.tree.map(np.shape, mine) == jax.tree.map(np.shape, alone)
        assert_functionally_equal(mine, alone, max_step=2 * row["lr"] * row["step"])


def test_changing_the_padding_of_a_workdir_is_refused(tmp_path, bucketed_widths):
    from coordjax.sweep import WorkdirError

    shutil.copytree(bucketed_widths[0], tmp_path, dirs_exist_ok=True)
    with pytest.raises(WorkdirError):
        run_sweep(
            width_sweep(), tmp_path, options=EngineOptions(progress=False, pad=("channel_mult",))
        )

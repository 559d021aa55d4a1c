"""The training recipe: schedule, L2, Adam step, masking of partial batches, divergence, fit."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jitted_recipe import jit_evaluate, jit_init, jit_step

from coordjax import datasets, models, tasks
from coordjax.paper.data import device_data, split_indices
from coordjax.train import (
    DeviceData,
    RunSpec,
    SplitIndices,
    TrainSetup,
    fit,
    learning_rate,
    make_hparams,
    train_chunk,
    train_step,
)
from coordjax.train.data import device_split_data
from coordjax.train.step import epoch_order, l2_penalty

TASK = tasks.get("classification")


@pytest.fixture(scope="module")
def data():
    return device_data(TASK)


def _setup(model=None, batch_size=256, steps=10):
    return TrainSetup(
        model=model or models.build("tiny"), task=TASK, batch_size=batch_size, steps_per_epoch=steps
    )


def _run(lr=0.01, l2=0.001, seed=0, split="quadrant", **kw):
    return RunSpec(make_hparams(lr, l2, **kw), np.int32(seed), split_indices(split))


# -- hyperparameters ------------------------------------------------------------------------


def test_step_schedule_matches_numpy():
    hp = make_hparams(0.01, schedule="step")  # ×0.1 every 200 epochs, at most 4 times
    epochs = np.array([0, 1, 199, 200, 399, 400, 600, 799, 800, 999, 5000])
    expected = 0.01 * 0.1 ** np.minimum(epochs // 200, 4)
    got = jax.vmap(lambda e: learning_rate(hp, e))(jnp.asarray(epochs, jnp.int32))
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_constant_schedule_ignores_decay():
    hp = make_hparams(0.005, schedule="constant", lr_decay_every=1)
    assert float(learning_rate(hp, jnp.int32(900))) == pytest.approx(0.005)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(lr=0.0), "lr"),
        (dict(lr=1e-3, l2=-1.0), "l2"),
        (dict(lr=1e-3, schedule="linear"), "schedule"),
        (dict(lr=1e-3, schedule="cosine"), "cosine_epochs"),
        (dict(lr=1e-3, lr_decay_every=0), "lr_decay_every"),
        (dict(lr=float("nan")), "lr"),
    ],
)
def test_make_hparams_rejects_bad_values(kwargs, name):
    with pytest.raises(ValueError, match=name):
        make_hparams(**kwargs)


def test_hparams_are_traced_not_baked(data):
    """A different lr reuses the compiled chunk: hyperparameters are array leaves."""
    setup = _setup()
    traces = []

    def chunk(data, run, state):
        traces.append(1)
        return train_chunk(setup, data, run, state, num_epochs=1)

    compiled = jax.jit(chunk)
    run = _run()
    state = jit_init(setup, data, run)
    compiled(data, run, state)
    compiled(data, run._replace(hparams=make_hparams(0.5, 0.1, schedule="step")), state)
    assert len(traces) == 1


# -- the step against an independent reference -------------------------------------------------


def test_l2_penalty_is_sum_of_squared_regularised_kernels(data):
    setup = _setup(models.build("deconv_painter", filter_size=2, channel_mult=1))
    params = jit_init(setup, data, _run()).params
    expected = sum(
        float(np.sum(np.square(params[f"deconv_{i}"]["kernel"]))) for i in range(6)
    )  # kernels only: no biases, no BatchNorm scale/bias
    assert float(l2_penalty(params, setup.model)) == pytest.approx(expected, rel=1e-5)


def test_train_step_equals_optax_adam_on_penalised_loss(data):
    """One step == optax.adam(lr, 0.9, 0.99, 1e-8) on mean loss + l2·Σw² (written here)."""
    model = models.build("coordconv_classifier")
    setup = _setup(model, batch_size=4)
    run = _run(lr=0.003, l2=0.01)
    state = jit_init(setup, data, run)
    idx = jnp.asarray([5, 17, 1000, 2000], jnp.int32)
    mask = jnp.ones((4,), bool)
    # Eager, like the reference below: Adam's first step moves a coordinate by about ±lr
    # whatever its gradient's size, so the two must sum in the same order.
    new_state, _ = train_step(setup, data, run, state, idx, mask)

    def reference_loss(params):
        logits = model.apply({"params": params}, data.inputs[idx], train=True)
        flat = logits.reshape(4, -1)
        xent = -jnp.sum(jax.nn.log_softmax(flat) * data.targets[idx].reshape(4, -1), axis=-1)
        kernels = [v for p, v in jax.tree_util.tree_leaves_with_path(params) if "kernel" in str(p)]
        return jnp.mean(xent) + 0.01 * sum(jnp.sum(k**2) for k in kernels)

    adam = optax.adam(0.003, b1=0.9, b2=0.99, eps=1e-8)
    grads = jax.grad(reference_loss)(state.params)
    with jax.numpy_dtype_promotion("standard"):  # optax: float ** int32 step count
        updates, _ = adam.update(grads, adam.init(state.params))
    expected = optax.apply_updates(state.params, updates)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7),
        new_state.params,
        expected,
    )
    assert int(new_state.step) == 1


def test_masked_partial_batch_equals_unpadded_batch(data):
    """Padding examples (mask False) change nothing: same params and BatchNorm statistics as
    the true smaller batch."""
    run = _run()
    padded_setup = _setup(batch_size=5)
    small_setup = _setup(batch_size=2)
    state = jit_init(padded_setup, data, run)
    real = [12, 345]
    padded, _ = jit_step(
        padded_setup, data, run, state,
        jnp.asarray(real + [0, 7, 3000], jnp.int32), jnp.asarray([True, True, False, False, False]),
    )  # fmt: skip
    small, _ = jit_step(
        small_setup, data, run, state, jnp.asarray(real, jnp.int32), jnp.ones((2,), bool)
    )
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7),
        (padded.params, padded.batch_stats, padded.opt_state),
        (small.params, small.batch_stats, small.opt_state),
    )


def test_step_without_examples_is_a_no_op(data):
    setup, run = _setup(), _run()
    state = jit_init(setup, data, run)
    new, loss = jit_step(setup, data, run, state, jnp.zeros((4,), jnp.int32), jnp.zeros(4, bool))
    jax.tree.map(np.testing.assert_array_equal, new, state)
    assert float(loss) == 0.0


def test_divergence_is_flagged_and_frozen(data):
    setup = _setup(models.build("coordconv_classifier"))
    run = _run(lr=1e30)
    state = jit_init(setup, data, run)
    idx, mask = jnp.asarray([1, 2, 3, 4], jnp.int32), jnp.ones(4, bool)
    for _ in range(4):
        state, _ = jit_step(setup, data, run, state, idx, mask)
    assert bool(state.diverged)
    assert 0 <= int(state.diverged_step) < 4
    frozen = state
    state, _ = jit_step(setup, data, run, state, idx, mask)
    jax.tree.map(np.testing.assert_array_equal, state, frozen)
    assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(state.params))


# -- data order --------------------------------------------------------------------------------


def test_epoch_order_is_a_permutation_of_the_split_with_padding_last():
    run = _run(split="quadrant")
    n = int(run.split.n_train)
    idx, valid = epoch_order(run, jnp.int32(3), 2432, 3136)
    assert int(valid.sum()) == n and bool(valid[:n].all())
    np.testing.assert_array_equal(np.sort(idx[:n]), np.asarray(run.split.train_idx[:n]))
    other, _ = epoch_order(run, jnp.int32(4), 2432, 3136)
    reseeded, _ = epoch_order(run._replace(seed=np.int32(1)), jnp.int32(3), 2432, 3136)
    assert not np.array_equal(idx[:n], other[:n])
    assert not np.array_equal(idx[:n], reseeded[:n])


def test_epoch_order_ignores_padding_slots():
    """Padding the split's index array (as a sweep does) leaves the order unchanged."""
    run = _run(split="uniform")
    padded = run._replace(split=split_indices("uniform", pad_train=2407, pad_test=768))
    a, _ = epoch_order(run, jnp.int32(0), 2432, 3136)
    b, _ = epoch_order(padded, jnp.int32(0), 2432, 3136)
    np.testing.assert_array_equal(a, b)


def test_order_seed_draws_the_order_from_another_seed_and_keeps_the_initial_weights(data):
    """With ``order_seed`` the epochs' order is that of the run seeded ``order_seed``; the initial
    weights stay ``seed``'s; ``order_seed == seed`` is the run without one."""
    run, setup = _run(seed=2), _setup()
    moved, reseeded = run._replace(order_seed=np.int32(7)), run._replace(seed=np.int32(7))

    def order(r):
        return np.asarray(epoch_order(r, jnp.int32(3), 2432, 3136)[0])

    np.testing.assert_array_equal(order(moved), order(reseeded))
    assert not np.array_equal(order(moved), order(run))
    np.testing.assert_array_equal(order(run._replace(order_seed=np.int32(2))), order(run))
    weights = {name: jit_init(setup, data, r).params for name, r in
               (("run", run), ("moved", moved), ("reseeded", reseeded))}  # fmt: skip
    jax.tree.map(np.testing.assert_array_equal, weights["moved"], weights["run"])
    assert not np.array_equal(weights["reseeded"]["logits"]["kernel"],
                              weights["run"]["logits"]["kernel"])  # fmt: skip


# -- fit --------------------------------------------------------------------------------------


def test_fit_runs_and_reports_every_evaluation():
    ds = datasets.not_so_clevr("quadrant")
    result = fit(
        models.build("tiny"), TASK, ds, make_hparams(0.05, 0.0),
        seed=0, epochs=3, batch_size=256, eval_every=2,
    )  # fmt: skip
    assert [h["epoch"] for h in result.history] == [2, 3]
    assert [h["step"] for h in result.history] == [20, 30]  # ceil(2407/256) = 10 steps/epoch
    for key in ("train_loss", "test_loss", "train_accuracy", "test_eucl_dist", "wall_time"):
        assert np.isfinite(result.history[-1][key])
    assert result.history[-1]["train_loss"] < np.log(4096)


def _fit_and_one_run_sweep(tmp_path, model, epochs, **config):
    """``fit`` and a sweep of the one run config (one device): ``(fit's result, the sweep's
    results, the sweep's params)``."""
    from coordjax.paper.run_config import RunConfig, make_setup
    from coordjax.sweep import EngineOptions, Grid, load_run, run_sweep, union

    run = RunConfig.of({"model": model, "epochs": epochs, "eval_every": 1, **config})
    # One device: the tests' four CPU devices would shard the sweep, another program.
    options = EngineOptions(progress=False, shard=False)
    results = run_sweep(union("one", [Grid("one", base=dataclasses.asdict(run))]), tmp_path,
                        options=options)  # fmt: skip
    setup = make_setup(run.static(), steps_per_epoch=1)
    alone = fit(
        models.build(model), setup.task, datasets.not_so_clevr(run.split),
        make_hparams(run.lr, run.l2), seed=run.seed, epochs=epochs, batch_size=run.batch_size,
        eval_every=1, prepare=setup.prepare,
        order_seed=None if run.order_seed == -1 else run.order_seed,
    )  # fmt: skip
    return alone, results, load_run(tmp_path, results["run_id"][0])["params"]


def _assert_same_run(alone, results, swept_params):
    """Params and every evaluation's metrics exactly equal."""
    jax.tree.map(np.testing.assert_array_equal, swept_params, jax.device_get(alone.state.params))
    rows = results.sort_values("epoch").iterrows()
    for row, (_, swept) in zip(alone.history, rows, strict=True):
        for key in ("train_loss", "train_accuracy", "test_loss", "test_accuracy",
                    "epoch_train_loss"):  # fmt: skip
            assert row[key] == swept[key], (row["epoch"], key)


@pytest.mark.parametrize("order_seed", [-1, 5])
def test_fit_equals_a_one_run_sweep_bit_for_bit(tmp_path, order_seed):
    """fit runs the sweep's program (a model axis of size 1), so a one-run sweep of the same
    config gives the same numbers exactly, with or without an order seed; another seed, or
    another order seed, gives others."""
    alone, results, swept = _fit_and_one_run_sweep(
        tmp_path, "tiny", 1, split="uniform", lr=0.05, batch_size=512, seed=3, order_seed=order_seed
    )
    _assert_same_run(alone, results, swept)
    for other_seeds in ({"seed": 4}, {"seed": 3, "order_seed": 6}):
        other = fit(models.build("tiny"), TASK, datasets.not_so_clevr("uniform"),
                    make_hparams(0.05), epochs=1, batch_size=512, eval_every=1,
                    **other_seeds)  # fmt: skip
        assert not np.array_equal(
            alone.state.params["logits"]["kernel"], other.state.params["logits"]["kernel"]
        )


@pytest.mark.slow
def test_fit_equals_a_one_run_sweep_bit_for_bit_on_the_coordconv_classifier(tmp_path):
    """The README's fit example (unit inputs, seed 0, lr 5e-3, l2 1e-3, batch 16, quadrant),
    one epoch: the same numbers as that run in a sweep (the smoke preset's)."""
    _assert_same_run(*_fit_and_one_run_sweep(
        tmp_path, "coordconv_classifier", 1, split="quadrant", lr=0.005, l2=0.001,
        batch_size=16, input_scale="unit",
    ))  # fmt: skip


def _with(ds, side, **fields):
    return dataclasses.replace(ds, **{side: dataclasses.replace(getattr(ds, side), **fields)})


def test_fit_trains_on_the_arrays_it_is_given():
    ds = datasets.not_so_clevr("uniform")
    run = functools.partial(
        fit, models.build("tiny"), TASK, hparams=make_hparams(0.05), seed=0, epochs=1,
        batch_size=512,
    )  # fmt: skip
    base = run(data=ds).history[-1]
    copied = {k: np.array(v) for k, v in dataclasses.asdict(ds.train).items()}
    same = run(data=_with(ds, "train", **copied)).history[-1]
    assert {k: v for k, v in same.items() if k != "wall_time"} == {
        k: v for k, v in base.items() if k != "wall_time"
    }
    shuffled = np.random.default_rng(0).permutation(ds.train.centers)
    moved = run(data=_with(ds, "train", centers=shuffled)).history[-1]
    assert np.isfinite(moved["train_loss"]) and moved["train_loss"] != base["train_loss"]
    assert moved["test_loss"] != base["test_loss"]  # trained on other pairs, same test set
    nan = run(data=_with(ds, "test", onehots=np.full_like(ds.test.onehots, np.nan))).history[-1]
    assert nan["train_loss"] == base["train_loss"] and np.isnan(nan["test_loss"])


def test_device_split_data_places_examples_in_generation_order():
    ds = datasets.not_so_clevr("quadrant")
    full, mine = device_data(TASK), device_split_data(TASK, ds)
    for a, b in zip(full, mine, strict=True):
        np.testing.assert_array_equal(a, b)  # the quadrant split covers every example
    twice = _with(ds, "test", indices=ds.train.indices[: len(ds.test)])
    with pytest.raises(ValueError, match="^data: .*distinct"):
        device_split_data(TASK, twice)
    short = _with(ds, "train", onehots=ds.train.onehots[:5])
    with pytest.raises(ValueError, match="^data: field 'onehots'"):
        device_split_data(TASK, short)


def test_evaluation_ignores_padding(data):
    """Evaluating a split padded with junk indices gives the same metrics as the exact split."""
    setup, run = _setup(), _run(split="quadrant")
    state = jit_init(setup, data, run)
    exact = jit_evaluate(setup, data, run, state)
    split = run.split
    junk = SplitIndices(
        train_idx=jnp.concatenate([split.train_idx, jnp.full((50,), 9, jnp.int32)]),
        n_train=split.n_train,
        test_idx=jnp.concatenate([split.test_idx, jnp.full((300,), 9, jnp.int32)]),
        n_test=split.n_test,
    )
    padded = jit_evaluate(setup, data, run._replace(split=junk), state)
    for key in exact:
        np.testing.assert_allclose(padded[key], exact[key], rtol=1e-5, err_msg=key)


def test_device_data_follows_the_task():
    regression = device_data(tasks.get("regression"))
    assert isinstance(regression, DeviceData)
    assert regression.inputs.shape == (3136, 64, 64, 1)
    assert regression.targets.shape == (3136, 2)
    examples = datasets.all_examples()
    np.testing.assert_array_equal(regression.targets, examples.normalized_centers)

"""Recipe options beyond the paper: input scale, cosine decay, matmul precision; the
robustness presets and their table."""

import dataclasses
import functools
import hashlib
import json
import re

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
from jitted_recipe import jit_init

import coordjax as cj
from coordjax import datasets, models, tasks
from coordjax.datasets.not_so_clevr import input_transform
from coordjax.paper import robustness
from coordjax.paper.data import device_data, split_indices
from coordjax.paper.experiment import EXPERIMENT
from coordjax.paper.robustness import robustness_table
from coordjax.paper.run_config import stack_runs
from coordjax.sweep import Grid, plan, run_id, union
from coordjax.sweep.planner import validate_run
from coordjax.train import (
    DeviceData,
    RunSpec,
    TrainSetup,
    fit,
    init_state,
    learning_rate,
    make_hparams,
    train_chunk,
    train_step,
)
from coordjax.train.step import model_inputs

DEFAULTS = EXPERIMENT.defaults()

CLASSIFICATION = tasks.get("classification")


@pytest.fixture(scope="module")
def data():
    return device_data(CLASSIFICATION)


def _setup(input_scale="raw", **kw):
    kw.setdefault("model", models.build("coordconv_classifier"))
    return TrainSetup(task=CLASSIFICATION, batch_size=16, steps_per_epoch=2,
                      prepare=input_transform(input_scale), **kw)


def _run(lr=0.005, split="uniform", **kw):
    return RunSpec(make_hparams(lr, 0.001, **kw), np.int32(0), split_indices(split))


# -- cosine learning-rate decay ---------------------------------------------------------------


def test_cosine_schedule_matches_numpy():
    hp = make_hparams(0.01, schedule="cosine", cosine_epochs=12)
    epochs = np.arange(0, 20)
    expected = 0.01 * 0.5 * (1 + np.cos(np.pi * np.minimum(epochs, 12) / 12))
    got = jax.vmap(lambda e: learning_rate(hp, e))(jnp.asarray(epochs, jnp.int32))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-9)
    assert float(got[0]) == pytest.approx(0.01) and float(got[-1]) == 0.0


def test_cosine_is_data_and_other_schedules_ignore_it():
    """One compiled lr function serves constant, step and cosine runs stacked together."""
    runs = [
        make_hparams(0.01, schedule="constant", cosine_epochs=5),
        make_hparams(0.01, schedule="step", lr_decay_every=2),
        make_hparams(0.01, schedule="cosine", cosine_epochs=4),
    ]
    stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *runs)
    got = jax.jit(jax.vmap(learning_rate, in_axes=(0, None)))(stacked, jnp.int32(2))
    np.testing.assert_allclose(got, [0.01, 0.001, 0.005], rtol=1e-5)


@pytest.mark.parametrize("bad", [0, -1, float("nan")])
def test_cosine_needs_a_positive_length(bad):
    with pytest.raises(ValueError, match="cosine_epochs"):
        make_hparams(0.01, schedule="cosine", cosine_epochs=bad)


def test_sweep_cosine_spans_the_run():
    base = {**DEFAULTS, "schedule": "cosine", "epochs": 7}
    runs = stack_runs([base, {**base, "schedule": "constant"}])
    np.testing.assert_array_equal(runs.hparams.cosine_epochs, [7.0, 0.0])


# -- input scale ------------------------------------------------------------------------------


def test_unit_inputs_are_the_coordinate_channels_at_the_pixel():
    """``unit`` maps a centre (x=col, y=row) to the values of the model's own coordinate
    channels at that pixel (corners-aligned [-1, 1], DESIGN)."""
    centers = np.asarray(datasets.all_examples().centers, np.float32)  # (N, 2): x, y
    grid = np.asarray(cj.coord_channels((64, 64)))  # (64, 64, 2): i (row), j (col)
    rows, cols = centers[:, 1].astype(int), centers[:, 0].astype(int)
    expected = np.stack([grid[rows, cols, 1], grid[rows, cols, 0]], axis=-1)
    got = model_inputs(_setup(input_scale="unit"), jnp.asarray(centers))
    np.testing.assert_allclose(got, expected, atol=1e-6)
    np.testing.assert_array_equal(model_inputs(_setup(), jnp.asarray(centers)), centers)


def test_unit_step_equals_raw_step_on_prescaled_data(data):
    """Training with input_scale='unit' = the faithful step fed NumPy-rescaled inputs."""
    # Same float32 operations as the option (the values are checked above), so Adam's
    # sign-sensitive first steps see identical inputs.
    inputs = np.asarray(data.inputs) * np.float32(2 / 63) - np.float32(1)
    scaled = DeviceData(jnp.asarray(inputs), data.targets)
    # The tiny model: the option scales inputs whatever the model (seconds, not a minute).
    tiny = models.build("tiny")
    unit, raw = _setup(input_scale="unit", model=tiny), _setup(model=tiny)
    run = _run()
    a = jit_init(unit, data, run)
    b = jit_init(raw, scaled, run)
    idx, mask = jnp.arange(16, dtype=jnp.int32) * 7, jnp.ones((16,), bool)
    for _ in range(3):  # eager: jitted, the scaling fuses into the step's arithmetic
        a, loss_a = train_step(unit, data, run, a, idx, mask)
        b, loss_b = train_step(raw, scaled, run, b, idx, mask)
    np.testing.assert_allclose(loss_a, loss_b, rtol=1e-6)
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-7), a, b)


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(input_scale="pixels"), "input_scale must be one of"),
        (dict(precision="fp16"), "precision must be one of"),
    ],
)
def test_bad_setup_options_are_named(kw, match):
    with pytest.raises(ValueError, match=match):
        _setup(**kw)


def test_unit_inputs_refused_for_image_inputs():
    with pytest.raises(ValueError, match="input_scale='unit' applies to pixel-coordinate"):
        validate_run({**DEFAULTS, "task": "regression", "model": "coordconv_regressor",
                      "input_scale": "unit"})  # fmt: skip
    with pytest.raises(ValueError, match="prepare must be callable"):
        TrainSetup(models.build("tiny"), CLASSIFICATION, 16, 2, prepare="unit")


# -- precision --------------------------------------------------------------------------------


def _lowered(setup, data):
    setup = dataclasses.replace(setup, steps_per_epoch=148)  # covers the uniform train split
    run = _run()
    state = jax.eval_shape(functools.partial(init_state, setup), data, run)  # shapes suffice
    chunk = jax.jit(lambda d, r, s: train_chunk(setup, d, r, s, num_epochs=1))
    return chunk.lower(data, run, state).as_text()


def _precisions(text: str) -> list[str]:
    """The precision of every dot_general / convolution op of a StableHLO module."""
    found = []
    for line in text.splitlines():
        if "stablehlo.dot_general" in line or "stablehlo.convolution" in line:
            match = re.search(r"precision(?:_config)? = \[([^\]]*)\]", line)
            found.append(match.group(1) if match else "none")
    return found


@pytest.mark.parametrize(
    "name, lowering",
    [
        ("coordconv_classifier", "matmul"),
        pytest.param("deconv_painter", "lax", marks=pytest.mark.slow),  # XLA's own precision
        ("deconv_painter", "matmul"),
    ],
)
def test_lowered_program_requests_float32_precision_by_default(data, name, lowering):
    """Every matmul and convolution of the training chunk (forward, backward, evaluation)
    carries HIGHEST; with precision='default' none does, except where the matmul lowering
    scatters transposed-conv kernel taps with an exact 0/1 selection (always HIGHEST)."""
    # fs 4: its wide layers scatter kernel taps into per-phase kernels (fs 3 has no scatter)
    shape = {"filter_size": 4} if name == "deconv_painter" else {}
    model = models.build(name, lowering=lowering, **shape)
    highest = _precisions(_lowered(_setup(model=model), data))
    assert len(highest) >= 3
    for found in highest:
        assert found.replace("#stablehlo<precision ", "").replace(">", "").split(", ") == [
            "HIGHEST",
            "HIGHEST",
        ], found
    default = _precisions(_lowered(_setup(model=model, precision="default"), data))
    assert len(default) == len(highest)
    still_highest = sum("HIGHEST" in p for p in default)
    if name == "deconv_painter" and lowering == "matmul":
        # kernel scatters (and their transposes) keep HIGHEST; data matmuls follow the option
        assert 0 < still_highest < len(default)
    else:
        assert still_highest == 0


def test_precision_does_not_change_cpu_numbers(data):
    """On CPU float32 matmuls are exact float32 either way: the default is bit-identical to
    the platform default, so results from before the option are unchanged."""
    run = _run()
    idx, mask = jnp.arange(16, dtype=jnp.int32) * 5, jnp.ones((16,), bool)
    states = []
    for precision in ("highest", "default"):
        setup = _setup(precision=precision)
        step = jax.jit(lambda s, setup=setup: train_step(setup, data, run, s, idx, mask)[0])
        state = jit_init(setup, data, run)
        for _ in range(3):
            state = step(state)
        states.append(state)
    jax.tree.map(np.testing.assert_array_equal, *states)


# -- sweep config keys ------------------------------------------------------------------------


def test_new_keys_at_their_defaults_keep_old_run_ids():
    """Run ids of configs without the new options are those of the code before them."""
    config = {**DEFAULTS, "lr": 0.005}
    old = {k: v for k, v in config.items() if k not in ("input_scale", "precision", "order_seed")}
    digest = hashlib.sha1(json.dumps(old, sort_keys=True).encode()).hexdigest()[:10]
    assert run_id(config) == f"{config['model']}-{digest}"
    assert run_id({**config, "input_scale": "unit"}) != run_id(config)
    assert run_id({**config, "precision": "default"}) != run_id(config)
    assert run_id({**config, "order_seed": 3}) != run_id(config)


def test_input_scale_and_precision_split_buckets_schedule_does_not():
    grid = Grid("g", base={"epochs": 2}, axes={"input_scale": ["raw", "unit"],
                                                "schedule": ["constant", "cosine"]})  # fmt: skip
    buckets = plan(union("s", [grid]).expand())
    assert sorted(b.static["input_scale"] for b in buckets) == ["raw", "unit"]
    assert all(b.num_models == 2 for b in buckets)


@pytest.mark.parametrize(
    "change, match",
    [
        (dict(input_scale="pixels"), "input_scale must be one of"),
        (dict(task="regression", model="coordconv_regressor", input_scale="unit"),
         "input_scale='unit' applies"),
        (dict(precision="fp16"), "precision must be one of"),
        (dict(schedule="linear"), "schedule must be one of"),
    ],
)  # fmt: skip
def test_bad_run_options_are_named(change, match):
    with pytest.raises(ValueError, match=match):
        validate_run({**DEFAULTS, **change})


def test_fit_rejects_a_prepare_that_is_not_callable():
    with pytest.raises(ValueError, match="prepare must be callable"):
        fit(models.build("tiny"), CLASSIFICATION, datasets.not_so_clevr("uniform"),
            make_hparams(0.01), seed=0, epochs=1, batch_size=16, prepare="01")  # fmt: skip


# -- presets and the robustness table ---------------------------------------------------------


def test_robustness_presets_cover_seeds_lrs_splits_variants():
    from sweeps import classification

    for name, seeds, epochs in (("robustness", 5, (6, 12, 12)),
                                ("robustness-full", 10, (20, 50, 50))):  # fmt: skip
        runs = classification.PRESETS[name]().expand()
        frame = pd.DataFrame(runs)
        assert len(frame) == seeds * 3 * 2 * 3
        assert set(frame["lr"]) == {0.01, 0.005, 0.001}
        assert set(frame["split"]) == {"uniform", "quadrant"}
        assert frame["seed"].nunique() == seeds
        variants = frame.groupby("grid").first()
        assert variants.loc["coordconv-unit", "input_scale"] == "unit"
        assert variants.loc["coordconv-decay", "schedule"] == "cosine"
        assert variants.loc["coordconv-faithful", ["input_scale", "schedule"]].tolist() == [
            "raw",
            "constant",
        ]
        assert tuple(variants.loc[[f"coordconv-{v}" for v in ("unit", "faithful", "decay")],
                                  "epochs"]) == epochs  # fmt: skip
        assert (frame["model"] == "coordconv_classifier").all()


def _results(rows):
    """A results table from (run, grid, split, lr, epoch, test_accuracy) tuples."""
    frame = pd.DataFrame(rows, columns=["run_id", "grid", "split", "lr", "epoch",
                                        "test_accuracy"])  # fmt: skip
    return frame.assign(task="classification", model="coordconv_classifier", diverged=False)


def test_robustness_table_counts_runs_at_the_bar():
    results = _results([
        ("a", "coordconv-unit", "uniform", 0.01, 1, 1.0),
        ("a", "coordconv-unit", "uniform", 0.01, 2, 1.0),
        ("b", "coordconv-unit", "uniform", 0.005, 1, 0.5),
        ("b", "coordconv-unit", "uniform", 0.005, 2, 1.0),
        ("c", "coordconv-faithful", "uniform", 0.01, 1, 1.0),
        ("c", "coordconv-faithful", "uniform", 0.01, 2, 0.3),
        ("d", "coordconv-faithful", "quadrant", 0.01, 1, 0.0),
        ("d", "coordconv-faithful", "quadrant", 0.01, 2, 0.99),
    ])  # fmt: skip
    table = robustness_table(results).set_index(["variant", "split"])
    unit = table.loc[("coordconv-unit", "uniform")]
    assert (unit["runs"], unit["ever_at_bar"], unit["at_bar_end"]) == (2, 2, 2)
    assert unit["mean_fraction_at_bar"] == pytest.approx(0.75)
    assert unit["median_first_epoch"] == pytest.approx(1.5)
    faithful = table.loc[("coordconv-faithful", "uniform")]
    assert (faithful["ever_at_bar"], faithful["at_bar_end"]) == (1, 0)
    quadrant = table.loc[("coordconv-faithful", "quadrant")]
    assert (quadrant["ever_at_bar"], quadrant["mean_fraction_at_bar"]) == (0, 0.0)
    assert np.isnan(quadrant["median_first_epoch"])
    by_lr = robustness_table(results, by=("lr",))
    assert len(by_lr) == 4 and list(by_lr.columns[:4]) == ["task", "variant", "split", "lr"]


def test_robustness_command_splits_by_the_columns_it_is_given(tmp_path, capsys):
    results = _results([("a", "g", "quadrant", 0.01, 1, 1.0), ("b", "g", "quadrant", 0.01, 1, 0.5)])
    results.assign(seed=[0, 0], order_seed=[3, 4]).to_csv(tmp_path / "results.csv", index=False)
    assert robustness.main([str(tmp_path), "--by", "seed,order_seed"]) == 0
    rows = capsys.readouterr().out.splitlines()
    assert rows[0].split()[:5] == ["task", "variant", "split", "seed", "order_seed"]
    assert [r.split()[4:7] for r in rows[1:3]] == [["3", "1", "1"], ["4", "1", "0"]]
    assert robustness.main([str(tmp_path), "--by", "seed,colour"]) == 2
    assert "--by must name columns of" in capsys.readouterr().err


# -- the claim the unit variant supports (slow) -----------------------------------------------


UNIT_RUNS = [(seed, lr) for seed in (0, 1, 2) for lr in (0.01, 0.005)]


def _unit_test_accuracy(split: str, seed: int, lr: float) -> list[float]:
    result = fit(models.build("coordconv_classifier"), CLASSIFICATION,
                 datasets.not_so_clevr(split), make_hparams(lr, 0.001), seed=seed, epochs=2,
                 batch_size=16, eval_every=1, prepare=datasets.unit_inputs)  # fmt: skip
    return [h["test_accuracy"] for h in result.history]


@pytest.mark.slow
@pytest.mark.parametrize("split", ["uniform", "quadrant"])
@pytest.mark.parametrize("lr", [0.01, 0.005])
def test_unit_inputs_reach_the_exact_map_at_seed_0(split, lr):
    """With inputs in the coordinate channels' range (the only change to the paper's recipe),
    seed 0 reaches 100 % test accuracy within 2 epochs on both splits at the paper's lrs 1e-2
    and 5e-3 (the audit's probe; measured in the ``robustness-quick`` unit grid: uniform at
    epoch 1, quadrant at epoch 2). A measurement of this project's x86 CPU and library
    versions: the recipe is chaotic, and other float rounding changes a run like another seed."""
    assert max(_unit_test_accuracy(split, 0, lr)) == 1.0


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason="measured: 7 of 12 runs miss 100 % test in 2 epochs")
@pytest.mark.parametrize("split", ["uniform", "quadrant"])
def test_unit_inputs_reach_the_exact_map_for_every_seed(split):
    """The claim for several seeds (0-2, lrs 1e-2 and 5e-3, 2 epochs) does NOT hold, as
    measured (``robustness-quick``, unit grid): on quadrant seeds 1 and 2 fit the train split
    exactly (100 %) but reach 25-80 % on the held-out quadrant; on uniform seed 1 at 5e-3 and
    seed 2 at both lrs end at 57-97 %. Strict xfail: if it starts to pass, the README is wrong.
    """
    reached = {(seed, lr): max(_unit_test_accuracy(split, seed, lr)) for seed, lr in UNIT_RUNS}
    assert all(value == 1.0 for value in reached.values()), reached


def test_report_feeds_a_unit_run_its_scaled_inputs(tmp_path):
    """The report's model outputs (Fig 5) of a unit-input run = the model on 2x/63 - 1."""
    from coordjax.report import predictions
    from coordjax.sweep import EngineOptions, load_run, run_sweep

    base = {"task": "classification", "model": "tiny", "batch_size": 512, "epochs": 1,
            "eval_every": 1, "lr": 0.05, "input_scale": "unit"}  # fmt: skip
    sweep = union("tiny", [Grid("tiny", base=base, axes={"split": ["quadrant"]})])
    options = EngineOptions(progress=False, strategy="vmap", shard=False)  # one model, one device
    results = run_sweep(sweep, tmp_path, options=options)
    run = results.iloc[-1]
    out = predictions.run_outputs(tmp_path, run)
    state = load_run(tmp_path, run["run_id"])
    variables = {"params": state["params"], "batch_stats": state["batch_stats"]}
    centers = np.asarray(datasets.not_so_clevr("quadrant").test.centers, np.float32)
    expected = models.build("tiny").apply(variables, centers * (2 / 63) - 1, train=False)
    np.testing.assert_allclose(out.test, expected, rtol=1e-5, atol=1e-6)

"""The S7.1 GAN experiment: the dataset's invariants, Table S4's parameter counts, the
mode-collapse metrics on cases whose answer is known, and the recipe through the seam (a
vmapped step of M GANs equals M single-GAN steps; in ``-m slow``: a smoke sweep interrupted and
resumed equals an uninterrupted one, and its recorded metrics equal the exported generator's)."""

import importlib.util
import math
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from coordjax.gan import data, metrics, models
from coordjax.gan import experiment as gx

ROOT = pathlib.Path(__file__).resolve().parents[1]


# -- data -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shapes64():
    return data.make_shapes(1000, 64, seed=3)


def test_every_image_has_one_blue_and_one_red_object_of_its_shape_and_nothing_else(shapes64):
    images, centres, squares = shapes64
    r = data.radius(64)
    assert r == 10 and images.dtype == np.uint8 and images.shape == (1000, 64, 64, 3)
    circle, square = metrics.object_areas(64)
    assert (circle, square) == (317, 441)
    pixels = images.reshape(1000, -1, 3)
    for obj, colour in enumerate(data.COLOURS):
        mine = np.all(pixels == colour, axis=-1)
        np.testing.assert_array_equal(mine.sum(1), np.where(squares[:, obj], square, circle))
        rows, cols = np.divmod(np.arange(64 * 64), 64)
        count = mine.sum(1)
        np.testing.assert_array_equal((mine * rows).sum(1) / count, centres[:, obj, 0])
        np.testing.assert_array_equal((mine * cols).sum(1) / count, centres[:, obj, 1])
    white = np.all(pixels == 255, axis=-1)
    assert (white.sum(1) + np.all(pixels == data.BLUE, -1).sum(1)
            + np.all(pixels == data.RED, -1).sum(1) == 64 * 64).all()  # fmt: skip
    assert squares.any(0).all() and (~squares).any(0).all()


def test_objects_never_overlap_and_centres_cover_their_range(shapes64):
    _, centres, _ = shapes64
    low, high = data.centre_range(64)
    assert (low, high) == (10, 54)
    assert centres.min() >= low and centres.max() < high
    assert (np.abs(centres[:, 0] - centres[:, 1]).max(-1) >= 2 * data.radius(64) + 1).all()
    assert float(coverage(centres, np.ones((1000, 2), bool), 64)) == 1.0


def test_the_dataset_is_deterministic_in_its_seed():
    a, b, c = (data.make_shapes(64, 16, seed) for seed in (5, 5, 6))
    np.testing.assert_array_equal(a.images, b.images)
    assert not np.array_equal(a.images, c.images)
    assert data.radius(16) == 2 and data.radius(32) == 5


@pytest.mark.parametrize("canvas", [0, 24, 65])
def test_a_canvas_the_models_cannot_take_is_refused(canvas):
    with pytest.raises(ValueError, match="canvas"):
        data.make_shapes(4, canvas)


# -- models ---------------------------------------------------------------------------------------


def test_table_s4_parameter_counts():
    assert models.param_count(models.generator("conv"), (2, 256)) == 6_413_315
    assert models.param_count(models.generator("coordconv"), (2, 256)) == 444_931
    assert models.param_count(models.Discriminator(), (2, 64, 64, 3)) == 4_316_545
    assert models.param_count(models.Discriminator(coords=True), (2, 64, 64, 3)) == 4_319_745


def test_models_map_shapes_at_a_small_canvas_and_width():
    z = jnp.zeros((3, 8))
    for kind in models.GENERATORS:
        g = models.generator(kind, canvas=16, width=1 / 16)
        out = jax.eval_shape(lambda z, g=g: g.apply(g.init(jax.random.key(0), z), z), z)
        assert out.shape == (3, 16, 16, 3)
    d = models.Discriminator(canvas=16, width=1 / 16, coords=True)
    x = jnp.zeros((3, 16, 16, 3))
    assert jax.eval_shape(lambda x: d.apply(d.init(jax.random.key(0), x), x), x).shape == (3,)


# -- metrics --------------------------------------------------------------------------------------


N = 1000  # every summary below runs on (N, 16, 16, 3) samples: one shape, traced once
coverage = jax.jit(metrics.coverage, static_argnums=2)
sliced_wasserstein = jax.jit(metrics.sliced_wasserstein)
find_objects = jax.jit(metrics.find_objects)


@pytest.fixture(scope="module")
def real16():
    train = data.to_model_range(data.make_shapes(N, 16, seed=0).images)
    other = data.make_shapes(N, 16, seed=1)
    return jax.jit(metrics.reference)(train), other


def _summary(samples, reference):
    return {k: float(v) for k, v in jax.jit(metrics.summary)(samples, reference).items()}


def test_real_data_against_real_data_scores_as_real(real16):
    reference, other = real16
    values = _summary(data.to_model_range(other.images), reference)
    assert values["coverage"] == 1.0 and values["well_formed"] == 1.0
    assert values["centre_sw"] < 0.03 and values["relative_sw"] < 0.05
    assert values["mean_image_rmse"] < 0.1
    found = find_objects(data.to_model_range(other.images))
    np.testing.assert_array_equal(np.asarray(found.centres), other.centres)


def test_a_generator_collapsed_onto_one_image_scores_as_collapsed(real16):
    reference, other = real16
    one = np.repeat(data.to_model_range(other.images[:1]), N, axis=0)
    values = _summary(one, reference)
    assert values["coverage"] == 1 / 64 and values["well_formed"] == 1.0
    # A point mass against the real spread: far more than the real-vs-real floor.
    assert values["centre_sw"] > 0.1 and values["relative_sw"] > 0.1
    expected = np.sqrt(np.mean(np.square(one[0] - np.asarray(reference.mean_image))))
    np.testing.assert_allclose(values["mean_image_rmse"], expected, rtol=1e-5)


def test_blank_samples_have_no_objects_and_rank_last(real16):
    reference, _ = real16
    values = _summary(np.ones((N, 16, 16, 3), np.float32), reference)
    assert values["coverage"] == 0.0 and values["well_formed"] == 0.0
    assert values["centre_sw"] == pytest.approx(metrics.ABSENT)
    assert values["relative_sw"] == pytest.approx(metrics.ABSENT)


def test_two_blobs_of_one_colour_are_not_one_object():
    shapes = data.make_shapes(N, 16, seed=0)
    image = shapes.images[0].copy()
    red = np.all(shapes.images[1] == data.RED, axis=-1)
    image[red & np.all(image == 255, axis=-1)] = data.RED  # a second red object, where free
    images = shapes.images.copy()
    images[1] = image
    single = np.asarray(find_objects(data.to_model_range(images)).single)
    assert single[0].tolist() == [True, True] and single[1].tolist() == [True, False]


def test_coverage_of_centres_on_a_diagonal_is_eight_cells_of_64():
    low, high = data.centre_range(64)
    line = np.linspace(low, high - 1, 1000)
    centres = np.stack([np.stack([line, line], -1)] * 2, axis=1)
    assert float(coverage(centres, np.ones((1000, 2), bool), 64)) == 8 / 64


def test_sliced_wasserstein_of_a_shift_is_the_mean_projected_shift():
    rng = np.random.default_rng(0)
    a = rng.random((300, 2)).astype(np.float32)
    shift = np.array([0.3, -0.1], np.float32)
    ones = np.ones(300, bool)
    expected = np.abs(metrics.directions() @ shift).mean()
    got = sliced_wasserstein(a, ones, a + shift, ones)
    np.testing.assert_allclose(float(got), expected, rtol=1e-5)
    assert float(sliced_wasserstein(a, ones, a[::-1], ones)) == pytest.approx(0, abs=1e-7)
    # Invalid points do not count, wherever they are.
    moved = a.copy()
    moved[:100] = 50.0
    valid = np.arange(300) >= 100
    assert float(sliced_wasserstein(moved, valid, a, valid)) == pytest.approx(0, abs=1e-6)
    assert float(sliced_wasserstein(moved, ones, a, valid)) > 10
    assert math.isnan(float(sliced_wasserstein(a, ~ones, a, ones)))


# -- the recipe through the seam ------------------------------------------------------------------

TINY = {**gx.EXPERIMENT.defaults(), "canvas": 16, "width": 1 / 16, "z_dim": 8, "images": 32,
        "batch_size": 4, "eval_samples": 20, "epochs": 1, "eval_every": 1}  # fmt: skip


def _tiny(generator, d_coords, runs):
    static = {**TINY, "generator": generator, "d_coords": d_coords}
    setup = gx.make_setup(static, gx.EXPERIMENT.steps_per_epoch(static, [static]))
    configs = [{**static, **run} for run in runs]
    for config in configs:
        gx.EXPERIMENT.validate(config)
    return setup, jax.device_put(gx.EXPERIMENT.data(setup)), gx.EXPERIMENT.stack(configs)


def test_the_data_shapes_are_the_shapes_of_the_data():
    static = {**TINY, "generator": "conv", "d_coords": False}
    setup = gx.make_setup(static, gx.EXPERIMENT.steps_per_epoch(static, [static]))
    made = jax.eval_shape(lambda: gx.EXPERIMENT.data(setup))
    assert gx.EXPERIMENT.data_shapes(setup) == made


@pytest.mark.slow  # the mechanism behind the slow equivalence test's tolerances (16 s)
@pytest.mark.parametrize("generator,d_coords,listed", [
    ("conv", False, {"g": {"Dense_0", "ConvTranspose_0", "ConvTranspose_1", "ConvTranspose_2"},
                     "d": {"Conv_1", "Conv_2", "Conv_3"}}),
    # The CoordConv discriminator's first layer is CoordConv_0: its convolutions count from 0.
    ("coordconv", True, {"g": set(), "d": {"Conv_0", "Conv_1", "Conv_2"}}),
])  # fmt: skip
def test_a_bias_before_a_batchnorm_does_not_change_the_training_outputs(
    generator, d_coords, listed
):
    """So its true gradient is zero, and its trained value is Adam acting on float noise."""
    static = {**TINY, "generator": generator, "d_coords": d_coords}
    setup = gx.make_setup(static, 1)
    z = jax.random.uniform(jax.random.key(0), (4, TINY["z_dim"]), minval=-1, maxval=1)
    images = jax.random.uniform(jax.random.key(1), (4, TINY["canvas"], TINY["canvas"], 3))
    for name, module, x in (("g", setup.generator, z), ("d", setup.discriminator, images)):
        variables = jax.jit(module.init)(jax.random.key(2), x)
        params, stats = variables["params"], variables.get("batch_stats", {})
        assert listed[name] <= set(params)
        shifted = {layer: ({**leaves, "bias": leaves["bias"] + 1.0} if layer in listed[name]
                           else leaves) for layer, leaves in params.items()}  # fmt: skip
        outputs = jax.jit(lambda p, module=module, stats=stats, x=x: gx._train_mode(
            module, p, stats, x)[0])  # fmt: skip
        np.testing.assert_allclose(outputs(shifted), outputs(params), atol=1e-4)


@pytest.mark.slow  # the vmapped GAN step compiles for minutes on a loaded 2-core CPU
@pytest.mark.parametrize("generator,d_coords", [("conv", False), ("coordconv", True)])
def test_a_vmapped_step_of_m_gans_equals_m_single_gan_steps(generator, d_coords):
    runs = [{"seed": 0, "g_lr": 5e-4, "d_lr": 1e-4}, {"seed": 1, "g_lr": 1e-3, "d_lr": 3e-4},
            {"seed": 2, "g_lr": 2e-3, "d_lr": 1e-3}]  # fmt: skip
    setup, arrays, stacked = _tiny(generator, d_coords, runs)
    recipe = gx.EXPERIMENT.recipe
    idx, mask = jnp.arange(4, dtype=jnp.int32), jnp.ones(4, bool)

    def two_steps(run, state):
        state = recipe.init(setup, arrays, run) if state is None else state
        state, first = recipe.train_step(setup, arrays, run, state, idx, mask)
        state, second = recipe.train_step(setup, arrays, run, state, idx + 4, mask)
        return state, jnp.stack([first, second])

    single = jax.jit(lambda run: two_steps(run, None))
    vmapped = jax.jit(jax.vmap(lambda run: two_steps(run, None)))(stacked)
    for i, run in enumerate(runs):
        state, losses = single(jax.tree.map(lambda x, i=i: x[i], stacked))
        np.testing.assert_allclose(vmapped[1][i], losses, rtol=1e-4)
        # A bias whose shift a BatchNorm after it cancels (test above; at 16 x 16 also a
        # BatchNorm offset, when the last map is 1 x 1) has a zero true gradient: its gradient is
        # float noise, summed in another order by the vmapped convolutions, and Adam divides a
        # gradient by its own size, so each update moves it by up to ~lr (1.01 lr in the first
        # four, by Cauchy-Schwarz on Adam's moment sums) either way, and two runs part by twice
        # that. Two iterations are 2 discriminator and 2 * g_steps generator updates.
        updates = {"g": 2 * TINY["g_steps"], "d": 2}
        lrs = {"g": run["g_lr"], "d": run["d_lr"]}
        got_leaves = jax.tree_util.tree_flatten_with_path(vmapped[0])[0]
        for (path, got), want in zip(got_leaves, jax.tree.leaves(state), strict=True):
            got, want = np.asarray(got[i]), np.asarray(want)
            where, network = jax.tree_util.keystr(path), path[0].name[0]
            if got.dtype.kind != "f":
                np.testing.assert_array_equal(got, want, err_msg=where)
            elif path[-1].key in ("bias", "mean"):  # a running mean carries the biases before it
                noise = 2 * 1.01 * updates[network] * lrs[network]
                np.testing.assert_allclose(got, want, atol=noise, err_msg=where)
            else:
                np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-5, err_msg=where)
    # The runs differ: each trained with its own seed and learning rates.
    assert not np.allclose(vmapped[1][0], vmapped[1][1])
    assert int(vmapped[0].step[0]) == 2 and not bool(vmapped[0].diverged.any())


def test_bad_keys_are_refused_in_one_line():
    with pytest.raises(ValueError, match="generator must be one of"):
        gx.EXPERIMENT.check_key("generator", "deconv")
    with pytest.raises(ValueError, match="width must be"):
        gx.EXPERIMENT.check_key("width", 0)
    with pytest.raises(ValueError, match="eval_samples 99 is larger than images 32"):
        gx.EXPERIMENT.validate({**TINY, "eval_samples": 99})
    ignored = gx.EXPERIMENT.ignored_keys({"generator": "conv"})
    assert ignored == {"g_tanh": "generator 'conv' (it always ends in tanh)"}


# -- a sweep, interrupted and resumed -------------------------------------------------------------


def _sweep_module():
    spec = importlib.util.spec_from_file_location("gan_sweep_file", ROOT / "sweeps" / "gan.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_the_smoke_sweep_resumed_equals_uninterrupted_and_its_metrics_equal_the_export(
    tmp_path, monkeypatch
):
    from tiny_sweeps import QUIET, assert_bitwise_equal, interrupted_then_resumed

    from coordjax import sweep as sw
    from coordjax.sweep.programs import Programs

    sweep = _sweep_module().PRESETS["smoke"]()
    programs = Programs()
    results = sw.run_sweep(sweep, tmp_path / "a", options=QUIET, programs=programs)
    assert len(results) == 3 * 2 and not results["diverged"].any()
    resumed = interrupted_then_resumed(sweep, tmp_path / "b", programs, after_chunks=4)
    assert_bitwise_equal(resumed, results)

    # The recorded test metrics are the exported generator's samples, measured on the host.
    last = results.sort_values("epoch").groupby("run_id").tail(1)
    for _, row in last.iterrows():
        state = sw.load_run(tmp_path / "a", row["run_id"], experiment=gx.EXPERIMENT)
        static = {k: row[k] for k in gx.KEYS if gx.KEYS[k].role == "static"}
        static = {**static, **{k: type(gx.KEYS[k].default)(v) for k, v in static.items()}}
        setup = gx.make_setup(static, 1)
        arrays = gx.make_data(*setup.data_spec)
        state = gx.GanState(**state)
        raw = gx.generate(setup, state, gx.eval_noise(setup, np.int32(row["seed"]), 1))
        images = models.samples(setup.generator_kind, setup.g_tanh, raw)
        values = metrics.summary(images, arrays.test_reference)
        for name, value in values.items():
            np.testing.assert_allclose(float(value), row[f"test_{name}"], rtol=1e-4, atol=1e-6)

"""Tests for coordjax.models: parameter counts, shapes, init, BatchNorm masking, L2 mask, and
every model's forward pass against an independent reference written with jax.lax primitives
(1x1 layers as real 1x1 convolutions, transposed convs as TF's gradient-of-conv)."""

import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from coordjax import linen as cjnn
from coordjax import models
from coordjax.coords import add_coords

DN = ("NHWC", "HWIO", "NHWC")
TOL = {"rtol": 1e-4, "atol": 1e-4}


def _init_shapes(model, spec, batch=2):
    x = jax.ShapeDtypeStruct((batch, *spec.input_shape), jnp.float32)
    return jax.eval_shape(lambda k, x: model.init(k, x, train=False), jax.random.key(0), x)


def _param_count(name, **kw):
    return models.count_params(_init_shapes(models.build(name, **kw), models.MODELS[name]))


@pytest.fixture
def rng():
    """NumPy generator for test data and random parameters (no jax.random compiles)."""
    return np.random.default_rng(0)


def _coords(rng, batch):
    return jnp.asarray(rng.integers(4, 60, (batch, 2)).astype(np.float32))


def _onehots(rng, batch):
    out = np.zeros((batch, 64 * 64), np.float32)
    out[np.arange(batch), rng.integers(0, 64 * 64, batch)] = 1.0
    return jnp.asarray(out.reshape(batch, 64, 64, 1))


def _inputs(spec, rng, batch):
    return _coords(rng, batch) if spec.input_kind == "coords" else _onehots(rng, batch)


def _normal(rng, shape, scale=1.0):
    return jnp.asarray((scale * rng.standard_normal(shape)).astype(np.float32))


def _init(model, key, x):
    """Jitted ``model.init(key, x, train=False)`` (one compile beats eager op-by-op)."""
    return jax.jit(functools.partial(model.init, train=False))(key, x)


def _apply(model, variables, x, *, train, mask=None):
    """Jitted apply; returns ``(outputs, updated batch_stats or {})``."""

    def f(v, x, mask):
        return model.apply(v, x, train=train, mask=mask, mutable=["batch_stats"])

    y, updates = jax.jit(f)(variables, x, mask)
    return y, updates.get("batch_stats", {})


def _randomise(tree, rng, scale=0.3):
    """A tree of the same shapes with N(0, scale**2) leaves (biases, BN scales included)."""
    return jax.tree_util.tree_map(lambda x: _normal(rng, x.shape, scale), tree)


def _random_variables(model, spec, rng):
    """Random params and non-trivial running statistics (positive variances)."""
    shapes = _init_shapes(model, spec)
    variables = {"params": _randomise(shapes["params"], rng)}
    if "batch_stats" in shapes:
        stats = _randomise(shapes["batch_stats"], rng, 1.0)
        variables["batch_stats"] = {
            name: {"mean": bn["mean"], "var": jnp.abs(bn["var"]) + 0.5}
            for name, bn in stats.items()
        }
    return variables


# ------------------------------------------------------------------------------------------
# Parameter counts


DECONV_TABLE = {
    (2, 1): 46_465,
    (2, 2): 183_041,
    (2, 3): 409_729,
    (3, 1): 103_585,
    (3, 2): 409_921,
    (3, 3): 919_009,
    (4, 1): 183_553,
    (4, 2): 727_553,
    (4, 3): 1_632_001,
}


@pytest.mark.parametrize(("fs", "c"), sorted(DECONV_TABLE))
def test_deconv_painter_param_table(fs, c):
    n = _param_count("deconv_painter", filter_size=fs, channel_mult=c)
    assert n == DECONV_TABLE[(fs, c)] == fs**2 * (11264 * c**2 + 160 * c) + 768 * c + 1


@pytest.mark.parametrize(
    ("name", "kwargs", "expected"),
    [
        ("deconv_painter_nobn", {"filter_size": 2, "channel_mult": 3}, 408_193),  # no BN: -512 c
        ("coordconv_classifier", {}, 7_553),
        ("coordconv_classifier", {"channel_mult": 1}, 7_553),
        ("coordconv_classifier", {"channel_mult": 2}, 29_441),
        ("coordconv_renderer", {}, 9_490),
        ("coordconv_renderer", {"filter_size": 1, "channel_mult": 2}, 9_490),
        ("coordconv_renderer", {"filter_size": 2, "channel_mult": 1}, 9_490),
        ("coordconv_renderer", {"filter_size": 1, "channel_mult": 1}, 8_074),
        ("coordconv_renderer", {"filter_size": 3, "channel_mult": 1}, 11_850),
        ("conv_regressor_uniform", {}, 72_850),
        ("conv_regressor_quadrant", {}, 12_914),
        ("coordconv_regressor", {}, 906),
        ("tiny", {"channel_mult": 1}, 17),
        ("tiny", {"channel_mult": 2}, 33),
    ],
)
def test_param_counts(name, kwargs, expected):
    assert _param_count(name, **kwargs) == expected


@pytest.mark.parametrize(("fs", "m"), [(1, 3), (2, 2), (4, 1)])
def test_renderer_param_formula(fs, m):
    q = fs**2 * (448 * m**2 + 24 * m) + 48 * m + 1
    assert _param_count("coordconv_renderer", filter_size=fs, channel_mult=m) == 7_553 + q


def test_count_params_ignores_batch_stats_and_accepts_params():
    variables = _init_shapes(models.build("deconv_painter"), models.MODELS["deconv_painter"])
    n = models.count_params(variables)
    assert n == models.count_params(variables["params"]) == 103_585
    stats = sum(math.prod(x.shape) for x in jax.tree_util.tree_leaves(variables["batch_stats"]))
    assert stats == 512  # BN moving mean/var: 512c, not counted


# ------------------------------------------------------------------------------------------
# Registry and build


def test_registry_entries():
    assert set(models.MODELS) == {
        "deconv_painter",
        "deconv_painter_nobn",
        "coordconv_classifier",
        "coordconv_renderer",
        "conv_regressor_uniform",
        "conv_regressor_quadrant",
        "coordconv_regressor",
        "tiny",
    }
    for name, spec in models.MODELS.items():
        assert spec.name == name
        assert spec.input_kind in ("coords", "onehot")
        assert spec.output_kind in ("map", "vector")
        module = spec.build()
        assert isinstance(module, nn.Module)
        for arg in spec.shape_args:
            assert hasattr(module, arg)
    assert models.MODELS["deconv_painter"].shape_args == ("filter_size", "channel_mult")


def test_build_errors():
    with pytest.raises(ValueError, match="unknown model name 'nope'.*deconv_painter"):
        models.build("nope")
    with pytest.raises(ValueError, match="'filter_size'.*allowed: \\['channel_mult'\\]"):
        models.build("coordconv_classifier", filter_size=3)
    with pytest.raises(ValueError, match="has no shape argument 'width'"):
        models.build("coordconv_regressor", width=3)
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(ValueError, match="channel_mult"):
            models.build("deconv_painter", channel_mult=bad)
    m = models.build("deconv_painter", filter_size=4, channel_mult=2)
    assert (m.filter_size, m.channel_mult) == (4, 2)


def test_input_shape_errors(getkey):
    m = models.build("coordconv_classifier")
    with pytest.raises(ValueError, match=r"\(B, 2\)"):
        m.init(getkey(), jnp.zeros((2, 3)), train=False)
    r = models.build("coordconv_regressor")
    with pytest.raises(ValueError, match=r"\(B, H, W, 1\)"):
        r.init(getkey(), jnp.zeros((2, 64, 64)), train=False)


# ------------------------------------------------------------------------------------------
# Shapes, train/eval, BatchNorm


SMALL_KW = {"deconv_painter": {"filter_size": 2}, "deconv_painter_nobn": {"filter_size": 2}}


@pytest.mark.parametrize("name", sorted(models.MODELS))
def test_output_shapes_train_and_eval_and_per_example_eval(name, rng):
    """Output shapes and dtypes in both modes, BatchNorm's statistics updated in training, and
    evaluation per example (one example alone = its row in a batch). One compile per model."""
    spec = models.MODELS[name]
    model = models.build(name, **SMALL_KW.get(name, {}))
    x = _inputs(spec, rng, 3)
    variables = _random_variables(model, spec, rng)
    assert set(_init_shapes(model, spec)) <= {"params", "batch_stats"}

    @jax.jit
    def outputs(variables, x):
        def apply(x, train):
            return model.apply(variables, x, train=train, mutable=["batch_stats"])

        (y_eval, _), (y_train, updates) = apply(x, False), apply(x, True)
        return y_eval, y_train, updates.get("batch_stats", {}), apply(x[1:2], False)[0]

    y_eval, y_train, stats, y_alone = outputs(variables, x)
    want = (3, *spec.output_shape)
    assert y_eval.shape == y_train.shape == want
    assert y_eval.dtype == y_train.dtype == jnp.float32
    assert bool(jnp.all(jnp.isfinite(y_train))) and bool(jnp.all(jnp.isfinite(y_eval)))
    np.testing.assert_allclose(y_eval[1:2], y_alone, **TOL)
    has_bn = "batch_stats" in variables
    assert has_bn == (name in ("deconv_painter", "conv_regressor_quadrant", "tiny"))
    if has_bn:
        changed = jax.tree_util.tree_map(
            lambda a, b: bool(jnp.any(a != b)), variables["batch_stats"], stats
        )
        assert all(jax.tree_util.tree_leaves(changed))


def test_integer_inputs_are_cast(rng):
    m = models.build("coordconv_classifier")
    x = jnp.array([[4, 59], [30, 12]], dtype=jnp.int32)
    v = _random_variables(m, models.MODELS["coordconv_classifier"], rng)
    np.testing.assert_array_equal(
        m.apply(v, x, train=False), m.apply(v, x.astype(jnp.float32), train=False)
    )


BN_MODELS = [("deconv_painter", {"filter_size": 2}), ("conv_regressor_quadrant", {}), ("tiny", {})]


@pytest.mark.parametrize(("name", "kwargs"), BN_MODELS)
def test_bn_mask_excludes_padding(name, kwargs, rng):
    spec = models.MODELS[name]
    model = models.build(name, **kwargs)
    real = _inputs(spec, rng, 3)
    variables = _random_variables(model, spec, rng)
    garbage = jnp.full((2, *spec.input_shape), jnp.nan).at[1].set(1e30)
    padded = jnp.concatenate([real[:1], garbage[:1], real[1:], garbage[1:]])
    mask = jnp.array([True, False, True, True, False])

    y_ref, st_ref = _apply(model, variables, real, train=True)
    y, st = _apply(model, variables, padded, train=True, mask=mask)
    np.testing.assert_allclose(y[mask], y_ref, **TOL)
    jax.tree_util.tree_map(
        lambda a, b: np.testing.assert_allclose(a, b, **TOL),
        st,
        st_ref,
    )
    # an all-True mask is the same as no mask
    y_all, _ = _apply(model, variables, real, train=True, mask=jnp.ones(3, bool))
    np.testing.assert_allclose(y_all, y_ref, **TOL)
    # eval mode ignores the mask and never mixes examples
    y_eval, _ = _apply(model, variables, padded, train=False, mask=mask)
    np.testing.assert_allclose(y_eval[mask], _apply(model, variables, real, train=False)[0], **TOL)


def test_bn_mask_shape_error(rng):
    m = models.build("tiny")
    x = _coords(rng, 3)
    v = _random_variables(m, models.MODELS["tiny"], rng)
    with pytest.raises(ValueError, match="mask must have shape"):
        m.apply(v, x, train=True, mask=jnp.ones((3, 1), bool), mutable=["batch_stats"])


def test_vmap_over_models(rng, getkey):
    """Stacked init and apply over a model axis equal a per-model loop (tiny model)."""
    model = models.build("tiny", channel_mult=2)
    x = _coords(rng, 4)
    keys = jax.random.split(getkey(), 3)
    init = jax.jit(lambda k: model.init(k, x, train=False))  # jitted: eager, each op compiles
    stacked = jax.vmap(init)(keys)

    @jax.jit
    def step(v):
        return model.apply(v, x, train=True, mutable=["batch_stats"])

    ys, sts = jax.vmap(step)(stacked)
    for i, k in enumerate(keys):
        y, st = step(init(k))
        np.testing.assert_allclose(ys[i], y, **TOL)
        np.testing.assert_allclose(
            sts["batch_stats"]["bn_0"]["var"][i], st["batch_stats"]["bn_0"]["var"], **TOL
        )


# ------------------------------------------------------------------------------------------
# Init


def test_init_scales(getkey):
    # deconv: Keras fan_in = out * fs**2 (B15)
    dp = models.build("deconv_painter", filter_size=4, channel_mult=1)
    v = _init(dp, getkey(), jnp.zeros((1, 2)))["params"]
    k = v["deconv_1"]["kernel"]
    assert k.shape == (4, 4, 64, 64)
    np.testing.assert_allclose(np.std(k), math.sqrt(2 / (64 * 16)), rtol=0.03)
    k = v["deconv_3"]["kernel"]  # in 64, out 32: fan_in must use out
    assert k.shape == (4, 4, 64, 32)
    np.testing.assert_allclose(np.std(k), math.sqrt(2 / (32 * 16)), rtol=0.03)
    # truncated at 2 standard deviations of the underlying normal
    assert np.max(np.abs(k)) <= 2 * math.sqrt(2 / (32 * 16)) / 0.87962566103423978 + 1e-6
    assert np.all(v["deconv_0"]["bias"] == 0) and np.all(v["bn_0"]["scale"] == 1)
    # 1x1 (Dense form): fan_in = C_in
    cc = models.build("coordconv_classifier", channel_mult=2)
    p = _init(cc, getkey(), jnp.zeros((1, 2)))["params"]
    k = p["conv1x1_3"]["kernel"]
    assert k.shape == (128, 128)
    np.testing.assert_allclose(np.std(k), math.sqrt(2 / 128), rtol=0.03)
    assert p["coord_1x1"]["kernel"].shape == (4, 64)
    # 3x3 conv: fan_in = 9 * C_in
    qr = models.build("conv_regressor_uniform", channel_mult=2)
    p = _init(qr, getkey(), jnp.zeros((1, 64, 64, 1)))["params"]
    np.testing.assert_allclose(np.std(p["conv_2"]["kernel"]), math.sqrt(2 / (9 * 32)), rtol=0.05)
    # glorot-uniform Dense head
    k = p[models.NO_L2_PREFIX + "dense_0"]["kernel"]
    limit = math.sqrt(6 / (k.shape[0] + k.shape[1]))
    assert np.max(np.abs(k)) <= limit
    np.testing.assert_allclose(np.std(k), limit / math.sqrt(3), rtol=0.03)
    assert np.all(p[models.NO_L2_PREFIX + "dense_1"]["bias"] == 0)


@pytest.mark.parametrize("shape", [(4, 32), (1, 1, 5, 7), (3, 3, 16, 8), (2, 2, 64, 32)])
def test_he_normal_equals_flax_variance_scaling(shape):
    key = jax.random.key(7)
    ref = nn.initializers.variance_scaling(2.0, "fan_in", "truncated_normal")(key, shape)
    np.testing.assert_array_equal(models.HE_NORMAL(key, shape), ref)
    if len(shape) == 4:  # transposed-conv kernels: fan_in = out * fs**2 (B15)
        ref = nn.initializers.variance_scaling(
            2.0, "fan_in", "truncated_normal", in_axis=-1, out_axis=-2
        )(key, shape)
        np.testing.assert_array_equal(models.HE_NORMAL_TRANSPOSED(key, shape), ref)


# ------------------------------------------------------------------------------------------
# L2 mask


@pytest.mark.parametrize(
    ("name", "n_kernels"),
    [
        ("deconv_painter", 6),
        ("deconv_painter_nobn", 6),
        ("coordconv_classifier", 5),
        ("coordconv_renderer", 10),
        ("conv_regressor_uniform", 4),
        ("conv_regressor_quadrant", 9),
        ("coordconv_regressor", 5),
        ("tiny", 2),
    ],
)
def test_l2_mask(name, n_kernels):
    spec = models.MODELS[name]
    model = spec.build()
    params = _init_shapes(model, spec)["params"]
    mask = models.l2_mask(params, model)
    assert mask == models.l2_mask(params, spec)  # the registry entry declares the same
    assert jax.tree_util.tree_structure(mask) == jax.tree_util.tree_structure(params)
    flat = jax.tree_util.tree_flatten_with_path(mask)[0]
    marked = ["/".join(str(p.key) for p in path) for path, m in flat if m]
    assert len(marked) == n_kernels
    assert all(p.endswith("kernel") for p in marked)
    for path, m in flat:
        if path[-1].key in ("bias", "scale"):
            assert m is False
    if name == "conv_regressor_uniform":
        assert mask["nol2_dense_0"] == {"kernel": False, "bias": False}
        assert mask["nol2_dense_1"]["kernel"] is False
        assert mask["conv_0"] == {"kernel": True, "bias": False}


def _l2_mask_by_the_old_name_rule(params):
    """The L2 rule before models declared it (f6f03d8): every ``kernel`` leaf, except those
    below a module whose name starts with ``"nol2_"``."""

    def mark(path, _leaf):
        names = [str(getattr(p, "key", p)) for p in path]
        return names[-1] == "kernel" and not any(n.startswith("nol2_") for n in names[:-1])

    return jax.tree_util.tree_map_with_path(mark, params)


L2_SHAPES = {
    "deconv_painter": [{}, {"filter_size": 4, "channel_mult": 2}],
    "deconv_painter_nobn": [{"filter_size": 2, "channel_mult": 3}],
    "coordconv_classifier": [{}, {"channel_mult": 3}],
    "coordconv_renderer": [{}, {"filter_size": 2, "channel_mult": 1}],
    "conv_regressor_uniform": [{}, {"channel_mult": 2}],
    "conv_regressor_quadrant": [{}, {"channel_mult": 2}],
    "coordconv_regressor": [{}],
    "tiny": [{}, {"channel_mult": 2}],
}


def test_l2_mask_equals_the_old_name_rule_for_every_zoo_model():
    """Declaring the L2 exemptions as data left every zoo model's mask exactly as it was."""
    assert set(L2_SHAPES) == set(models.MODELS)  # a new model must be added here
    for name, shapes in L2_SHAPES.items():
        spec = models.MODELS[name]
        for kw in shapes:
            model = models.build(name, **kw)
            variables = _init_shapes(model, spec)
            assert models.l2_mask(variables, model) == _l2_mask_by_the_old_name_rule(variables)
    assert models.MODELS["conv_regressor_uniform"].l2_exempt == ("nol2_dense_0", "nol2_dense_1")
    assert all(spec.l2_exempt == () for n, spec in models.MODELS.items() if "uniform" not in n)


def test_l2_mask_requires_the_model():
    # The deprecated call without the model (and its old name rule) is gone (0.x, changelog).
    spec = models.MODELS["conv_regressor_uniform"]
    variables = _init_shapes(spec.build(), spec)
    with pytest.raises(TypeError, match="model"):
        models.l2_mask(variables)


def test_l2_mask_works_on_variables_and_stacked_trees(getkey):
    m = models.build("tiny")
    v = jax.vmap(lambda k: m.init(k, jnp.zeros((2, 2)), train=False))(jax.random.split(getkey(), 2))
    mask = models.l2_mask(v, m)
    assert mask["params"]["coord_1x1"]["kernel"] is True
    assert mask["params"]["bn_0"] == {"scale": False, "bias": False}
    assert mask["batch_stats"]["bn_0"] == {"mean": False, "var": False}


# ------------------------------------------------------------------------------------------
# 1x1 Dense form == nn.Conv 1x1; CoordDense == tiled add_coords; deconv == TF semantics


def test_dense_1x1_equals_conv_1x1(rng):
    h = _normal(rng, (2, 8, 8, 5))
    dense = nn.Dense(7)
    p = {"kernel": _normal(rng, (5, 7)), "bias": _normal(rng, (7,))}
    conv = nn.Conv(7, kernel_size=(1, 1))
    conv_p = {"kernel": p["kernel"].reshape(1, 1, 5, 7), "bias": p["bias"]}
    np.testing.assert_allclose(
        dense.apply({"params": p}, h), conv.apply({"params": conv_p}, h), rtol=1e-5, atol=1e-5
    )
    # and inside a model: the renderer's fs=1 layers are Dense kernels (C_in, C_out)
    r = models.build("coordconv_renderer", filter_size=1, channel_mult=2)
    params = _init_shapes(r, models.MODELS["coordconv_renderer"])["params"]
    assert params["conv_0"]["kernel"].shape == (1, 16)
    assert params["logits"]["kernel"].shape == (32, 1)


@pytest.mark.parametrize("lowering", ["lax", "matmul"])
@pytest.mark.parametrize("tiled", [True, False])
def test_coord_1x1_equals_add_coords_then_dense(tiled, lowering, rng):
    x = _coords(rng, 3) if tiled else _normal(rng, (3, 64, 64, 1))
    tile_shape = (64, 64) if tiled else None
    layer = models.coord_1x1(6, name="c", lowering=lowering, tile_shape=tile_shape)
    p = _randomise(jax.eval_shape(layer.init, jax.random.key(0), x)["params"], rng)
    assert p["kernel"].shape == (x.shape[-1] + 2, 6)  # the library layer's dense_kernel form
    y = jax.jit(layer.apply)({"params": p}, x)
    x_map = jnp.broadcast_to(x[:, None, None, :], (3, 64, 64, x.shape[-1])) if tiled else x
    full = add_coords(x_map, order="xy")  # [inputs..., xx (column), yy (row)]
    ref = jnp.einsum("bhwc,cf->bhwf", full, p["kernel"]) + p["bias"].reshape(1, 1, 1, -1)
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-4)
    # the same layer materialised: a 1x1 library CoordConv with a (1, 1, C + 2, F) kernel
    plain = cjnn.CoordConv(6, (1, 1), order="xy", lowering=lowering)
    conv_p = {"kernel": p["kernel"].reshape(1, 1, *p["kernel"].shape), "bias": p["bias"]}
    np.testing.assert_allclose(plain.apply({"params": conv_p}, x_map), ref, rtol=1e-5, atol=1e-4)
    # coordinate layout: the column ramp pairs with the raw x (index 0)
    col = full[0, 0, :, x.shape[-1]]
    np.testing.assert_allclose(col, np.linspace(-1, 1, 64), atol=1e-6)


def _tf_conv2d_transpose(x, w_tf, stride=2):
    """TF conv2d_transpose 'SAME': the gradient of conv2d 'SAME' w.r.t. its input.

    w_tf: (fs, fs, out, in) as in TF. Output spatial size = stride * input size.
    """
    b, h, w, _ = x.shape
    z = jnp.zeros((b, h * stride, w * stride, w_tf.shape[2]), x.dtype)

    def fwd(z):
        return jax.lax.conv_general_dilated(z, w_tf, (stride, stride), "SAME", dimension_numbers=DN)

    _, vjp = jax.vjp(fwd, z)
    return vjp(x)[0]


def _deconv_ref(x, kernel, bias):
    # Flax kernel (fs, fs, in, out), used without flipping, is TF's kernel flipped and swapped.
    w_tf = jnp.flip(kernel, (0, 1)).transpose(0, 1, 3, 2)
    return _tf_conv2d_transpose(x, w_tf) + bias.reshape(1, 1, 1, -1)


@pytest.mark.parametrize("fs", [1, 2, 3, 4])
@pytest.mark.parametrize("n", [1, 2, 5])
def test_conv_transpose_same_matches_tf(fs, n, rng):
    x = _normal(rng, (2, n, n, 3))
    layer = nn.ConvTranspose(4, (fs, fs), strides=(2, 2), padding="SAME")
    p = {"kernel": _normal(rng, (fs, fs, 3, 4)), "bias": _normal(rng, (4,))}
    y, ref = jax.jit(
        lambda p, x: (layer.apply({"params": p}, x), _deconv_ref(x, p["kernel"], p["bias"]))
    )(p, x)
    assert y.shape == (2, 2 * n, 2 * n, 4)
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5)


# ---- independent reference forward passes -------------------------------------------------


def _conv_ref(h, layer, stride=1):
    k = layer["kernel"]
    if k.ndim == 2:  # Dense-form 1x1 -> real 1x1 convolution
        k = k.reshape(1, 1, *k.shape)
    y = jax.lax.conv_general_dilated(h, k, (stride, stride), "SAME", dimension_numbers=DN)
    return y + layer["bias"].reshape(1, 1, 1, -1)


def _bn_ref(h, p, stats, train):
    if train:
        mean, var = jnp.mean(h, axis=(0, 1, 2)), jnp.var(h, axis=(0, 1, 2))
    else:
        mean, var = stats["mean"], stats["var"]
    inv = p["scale"] / jnp.sqrt(var + 1e-5)
    return (h - mean.reshape(1, 1, 1, -1)) * inv.reshape(1, 1, 1, -1) + p["bias"].reshape(
        1, 1, 1, -1
    )


def _coord_input(x):
    if x.ndim == 2:
        x = jnp.broadcast_to(x[:, None, None, :], (x.shape[0], 64, 64, x.shape[1]))
    return add_coords(x, order="xy")


def _classifier_ref(p, x):
    h = jax.nn.relu(_conv_ref(_coord_input(x), p["coord_1x1"]))
    for i in (1, 2, 3):
        h = jax.nn.relu(_conv_ref(h, p[f"conv1x1_{i}"]))
    return _conv_ref(h, p["logits"])


def _reference(name, params, stats, x, train):
    p, relu = params, jax.nn.relu
    if name == "deconv_painter":
        h = x.reshape(-1, 1, 1, 2)
        for i in range(6):
            h = _deconv_ref(h, p[f"deconv_{i}"]["kernel"], p[f"deconv_{i}"]["bias"])
            if i < 5:
                h = relu(_bn_ref(h, p[f"bn_{i}"], stats[f"bn_{i}"], train))
        return h
    if name == "coordconv_classifier":
        return _classifier_ref(p, x)
    if name == "coordconv_renderer":
        c = _classifier_ref(p["coordconv"], x)
        h = jax.nn.softmax(c.reshape(c.shape[0], -1), axis=-1).reshape(c.shape)
        for i in range(4):
            h = relu(_conv_ref(h, p[f"conv_{i}"]))
        return _conv_ref(h, p["logits"])
    if name == "conv_regressor_uniform":
        h = x
        for i in range(4):
            h = relu(_conv_ref(h, p[f"conv_{i}"]))
            if i < 3:
                h = jax.lax.reduce_window(
                    h, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID"
                )
        h = h.reshape(h.shape[0], -1)
        h = relu(h @ p["nol2_dense_0"]["kernel"] + p["nol2_dense_0"]["bias"].reshape(1, -1))
        return h @ p["nol2_dense_1"]["kernel"] + p["nol2_dense_1"]["bias"].reshape(1, -1)
    if name == "conv_regressor_quadrant":
        h = relu(_conv_ref(x, p["conv_0"], 2))
        h = relu(_conv_ref(h, p["conv_1"]))
        h = _bn_ref(h, p["bn_0"], stats["bn_0"], train)
        h = relu(_conv_ref(h, p["conv_2"]))
        h = relu(_conv_ref(h, p["conv_3"], 2))
        h = relu(_bn_ref(_conv_ref(h, p["conv_4"], 2), p["bn_1"], stats["bn_1"], train))
        h = relu(_conv_ref(h, p["conv_5"], 2))
        h = relu(_conv_ref(h, p["conv_6"]))
        h = relu(_conv_ref(h, p["conv_7"], 2))
        h = relu(_conv_ref(h, p["conv_8"]))
        assert h.shape[1:] == (2, 2, 2)
        return jnp.mean(h, axis=(1, 2))
    if name == "coordconv_regressor":
        h = _conv_ref(_coord_input(x), p["coord_1x1"])
        for layer in ("conv1x1_1", "conv1x1_2", "conv_3", "conv_4"):
            h = _conv_ref(h, p[layer])
        return jnp.max(h, axis=(1, 2))
    if name == "tiny":
        h = relu(
            _bn_ref(_conv_ref(_coord_input(x), p["coord_1x1"]), p["bn_0"], stats["bn_0"], train)
        )
        return _conv_ref(h, p["logits"])
    raise AssertionError(name)


@pytest.mark.parametrize("train", [False, True])
@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        ("deconv_painter", {"filter_size": 3}),
        ("deconv_painter", {"filter_size": 2, "channel_mult": 2}),
        ("coordconv_classifier", {}),
        ("coordconv_renderer", {}),
        ("coordconv_renderer", {"filter_size": 2, "channel_mult": 1}),
        ("conv_regressor_uniform", {}),
        ("conv_regressor_quadrant", {}),
        ("coordconv_regressor", {}),
        ("tiny", {}),
    ],
)
def test_forward_matches_reference(name, kwargs, train, rng):
    spec = models.MODELS[name]
    model = models.build(name, **kwargs)
    x = _inputs(spec, rng, 3)
    variables = _random_variables(model, spec, rng)
    params, stats = variables["params"], variables.get("batch_stats", {})

    @jax.jit
    def both(params, stats, x):
        v = {"params": params, "batch_stats": stats} if stats else {"params": params}
        y, _ = model.apply(v, x, train=train, mutable=["batch_stats"])
        return y, _reference(name, params, stats, x, train)

    y, ref = both(params, stats, x)
    assert y.shape == ref.shape == (3, *spec.output_shape)
    scale = float(jnp.max(jnp.abs(ref))) + 1e-6
    np.testing.assert_allclose(y / scale, ref / scale, rtol=1e-4, atol=1e-5)


def test_coordconv_regressor_pool_margin_is_the_max_over_the_inner_map():
    """pool_margin=m takes the max over the pre-pool map without its m-pixel border (NumPy on
    the captured map); 0 is the reference's whole-map max; bad values name the attribute."""
    images = np.zeros((3, 64, 64, 1), np.float32)
    images[[0, 1, 2], [1, 30, 62], [62, 5, 1], 0] = 1.0  # one-hots near the border and inside
    model = models.CoordConvRegressor()
    params = _init(model, jax.random.key(0), images)["params"]

    @jax.jit
    def capture(p):
        return model.apply({"params": p}, images, train=False, capture_intermediates=True,
                           mutable=["intermediates"])  # fmt: skip

    out, state = capture(params)
    maps = np.asarray(state["intermediates"]["conv_4"]["__call__"][0])  # (3, 64, 64, 2)
    np.testing.assert_array_equal(out, maps.max(axis=(1, 2)))
    for m in (1, 2, 31):
        got, _ = _apply(models.CoordConvRegressor(pool_margin=m), {"params": params}, images,
                        train=False)  # fmt: skip
        np.testing.assert_array_equal(got, maps[:, m : 64 - m, m : 64 - m].max(axis=(1, 2)))
    for bad in (-1, 32, 1.5, True):
        with pytest.raises(ValueError, match="pool_margin must be an int >= 0"):
            models.CoordConvRegressor(pool_margin=bad).apply({"params": params}, images,
                                                             train=False)  # fmt: skip


@pytest.mark.parametrize("window", [(2, 2), pytest.param((2, 3), marks=pytest.mark.slow)])
def test_max_pool_equals_flax_max_pool_in_value_and_gradient_even_on_ties(window, getkey):
    from coordjax.models.blocks import max_pool

    def flax_pool(x):
        return nn.max_pool(x, window, strides=window, padding="VALID")

    cases = {
        "distinct": jax.random.normal(getkey(), (3, 8, 12, 2)),
        # A one-hot image's flat regions: many windows hold several equal maxima.
        "ties": jax.random.randint(getkey(), (3, 8, 12, 2), 0, 2).astype(jnp.float32),
        "zeros": jnp.zeros((2, 4, 6, 1)),
    }
    for name, x in cases.items():
        out, back = jax.vjp(lambda x: max_pool(x, window), x)
        want, want_back = jax.vjp(flax_pool, x)
        g = jax.random.normal(getkey(), want.shape)
        np.testing.assert_array_equal(out, want, err_msg=name)
        np.testing.assert_array_equal(back(g)[0], want_back(g)[0], err_msg=name)
    # Under a model vmap too.
    xs = jax.random.randint(getkey(), (4, 2, 8, 12, 2), 0, 3).astype(jnp.float32)

    def loss(pool):
        return jax.vmap(jax.grad(lambda x: jnp.sum(pool(x) ** 3)))(xs)

    np.testing.assert_array_equal(loss(lambda x: max_pool(x, window)), loss(flax_pool))


def test_max_pool_refuses_a_window_that_does_not_divide_the_map():
    from coordjax.models.blocks import max_pool

    with pytest.raises(ValueError, match=r"window \(2, 2\) must divide the spatial shape \(5, 4\)"):
        max_pool(jnp.ones((1, 5, 4, 1)), (2, 2))

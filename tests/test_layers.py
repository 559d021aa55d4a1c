"""coordjax.linen layers: equivalences with Flax's own Conv / ConvTranspose on add_coords(x).

References are Flax's ``nn.Conv`` / ``nn.ConvTranspose`` applied to ``coordjax.add_coords(x)``
(or to ``x`` for the plain-conv equivalences), with kernels assembled here by NumPy, so a test
fails if the layer's kernel layout, coordinate order, centre tap or padding handling is wrong.
"""

import inspect

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

import coordjax as cj
from coordjax import linen as cl

TOL = dict(rtol=1e-5, atol=1e-5)

# (id, x shape, conv arguments, coordinate arguments)
CONV_CASES = [
    ("1d", (2, 9, 3), dict(kernel_size=(3,)), {}),
    ("1d-int-kernel-causal", (2, 9, 2), dict(kernel_size=4, padding="CAUSAL"), {}),
    ("2d-nonsquare", (2, 7, 5, 3), dict(kernel_size=(3, 3)), {}),
    (
        "2d-stride2-valid-r",
        (2, 8, 6, 2),
        dict(kernel_size=(3, 2), strides=2, padding="VALID"),
        dict(with_r=True),
    ),
    (
        "2d-explicit-pad",
        (1, 6, 7, 2),
        dict(kernel_size=(3, 3), strides=(2, 1), padding=((2, 0), (1, 3))),
        dict(with_r=True, normalize_r=True),
    ),
    (
        "2d-int-pad-dilated-xy",
        (2, 6, 5, 1),
        dict(kernel_size=(3, 3), padding=1, kernel_dilation=2),
        dict(order="xy", coord_range="centers"),
    ),
    ("2d-circular", (1, 5, 6, 2), dict(kernel_size=(3, 3), padding="CIRCULAR"), {}),
    (
        "2d-reflect-stride",
        (1, 4, 5, 2),
        dict(kernel_size=(3, 3), padding="REFLECT", strides=2),
        dict(coord_range="unit"),
    ),
    (
        "2d-prepend-one-axis",
        (2, 5, 4, 2),
        dict(kernel_size=(3, 3), strides=(1, 2)),
        dict(position="prepend", axes=(1,), with_r=True),
    ),
    ("2d-no-bias-pixels", (2, 5, 4, 2), dict(kernel_size=(1, 1), use_bias=False), {}),
    (
        "3d",
        (1, 4, 5, 3, 2),
        dict(kernel_size=(3, 3, 3), strides=(1, 2, 1)),
        dict(with_r=True),
    ),
    ("no-batch-dim", (6, 5, 2), dict(kernel_size=(3, 3)), {}),
    ("two-batch-dims", (2, 2, 5, 4, 1), dict(kernel_size=(3, 3)), dict(with_r=True)),
]

TRANSPOSE_CASES = [
    ("1d", (2, 5, 2), dict(kernel_size=(3,), strides=(2,)), {}),
    ("2d-same-s2", (2, 4, 3, 2), dict(kernel_size=(3, 3), strides=(2, 2)), dict(with_r=True)),
    ("2d-valid", (1, 4, 5, 2), dict(kernel_size=(3, 2), strides=(2, 1), padding="VALID"), {}),
    (
        "2d-explicit-transpose-kernel",
        (2, 4, 4, 3),
        dict(kernel_size=(3, 3), strides=(2, 2), padding=((1, 2), (0, 1)), transpose_kernel=True),
        dict(position="prepend"),
    ),
    ("2d-circular", (1, 3, 4, 2), dict(kernel_size=(3, 3), strides=(2, 2), padding="CIRCULAR"), {}),
    ("2d-dilated", (1, 4, 4, 1), dict(kernel_size=(3, 3), kernel_dilation=(2, 1)), {}),
    ("3d", (1, 3, 2, 3, 1), dict(kernel_size=(3, 3, 3), strides=(2, 1, 2)), dict(with_r=True)),
]


def _ids(cases):
    return [c[0] for c in cases]


def _spatial_ndim(conv_kwargs):
    k = conv_kwargs["kernel_size"]
    return 1 if isinstance(k, int) else len(k)


@pytest.fixture
def rng():
    """NumPy random numbers: no XLA compilation per shape, unlike jax.random (fast tests)."""
    return np.random.default_rng(0)


def _normal(rng, shape, scale=1.0):
    return jnp.asarray(scale * rng.standard_normal(shape), jnp.float32)


def _trained(rng, layer, x):
    """Random, 'trained-looking' params (non-zero bias, O(1) weights) of ``layer`` on ``x``."""
    shapes = jax.eval_shape(layer.init, jax.random.key(0), x)["params"]
    return {k: _normal(rng, v.shape, 0.5) for k, v in shapes.items()}


def _key(seed=0):
    """A PRNG key whose random-bit generator compiles several times faster than threefry."""
    return jax.random.key(seed, impl="rbg")


def _apply(layer, params, x):
    """Jitted ``layer.apply``: one compilation instead of one per primitive."""
    return jax.jit(layer.apply)({"params": params}, x)


def _centre_tap_kernel(coord_kernel, kernel_size):
    """NumPy: (1, ..., 1, a, b) -> (*kernel_size, a, b), zero except at tap (k - 1) // 2."""
    coord_kernel = np.asarray(coord_kernel)
    full = np.zeros((*kernel_size, *coord_kernel.shape[-2:]), coord_kernel.dtype)
    full[tuple((k - 1) // 2 for k in kernel_size)] = coord_kernel.reshape(coord_kernel.shape[-2:])
    return full


def _data_and_coord(params, coord_weights, d, position="append"):
    """(data kernel, coordinate weights) of a CoordConv param dict (NumPy slicing)."""
    kernel = np.asarray(params["kernel"])
    if coord_weights == "split":
        return kernel, np.asarray(params["coord_kernel"])
    if position == "append":
        return kernel[..., :-d, :], kernel[..., -d:, :]
    return kernel[..., d:, :], kernel[..., :d, :]


# --------------------------------------------------------------------------------------------
# CoordConv == Conv(add_coords(x))
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", CONV_CASES, ids=_ids(CONV_CASES))
def test_coordconv_equals_conv_on_add_coords(case, rng):
    _, shape, conv_kwargs, coord_kwargs = case
    x = _normal(rng, shape)
    layer = cl.CoordConv(features=4, **conv_kwargs, **coord_kwargs)
    params = _trained(rng, layer, x)
    xc = cj.add_coords(x, spatial_ndim=_spatial_ndim(conv_kwargs), **coord_kwargs)
    ref = _apply(nn.Conv(features=4, **conv_kwargs), params, xc)
    assert_allclose(_apply(layer, params, x), ref, **TOL)


@pytest.mark.parametrize("case", TRANSPOSE_CASES, ids=_ids(TRANSPOSE_CASES))
def test_coordconv_transpose_equals_conv_transpose_on_add_coords(case, rng):
    _, shape, conv_kwargs, coord_kwargs = case
    x = _normal(rng, shape)
    layer = cl.CoordConvTranspose(features=3, **conv_kwargs, **coord_kwargs)
    params = _trained(rng, layer, x)
    xc = cj.add_coords(x, spatial_ndim=_spatial_ndim(conv_kwargs), **coord_kwargs)
    ref = _apply(nn.ConvTranspose(features=3, **conv_kwargs), params, xc)
    assert_allclose(_apply(layer, params, x), ref, **TOL)


@pytest.mark.parametrize(
    "cls, ref_cls", [(cl.CoordConv, nn.Conv), (cl.CoordConvTranspose, nn.ConvTranspose)]
)
def test_default_init_is_the_plain_layers_init_on_add_coords(cls, ref_cls, rng):
    x = _normal(rng, (2, 5, 4, 3))
    key = _key(3)
    params = jax.jit(cls(4, (3, 3), with_r=True).init)(key, x)
    ref = jax.jit(ref_cls(4, (3, 3)).init)(key, cj.add_coords(x, with_r=True))
    assert jax.tree.structure(params) == jax.tree.structure(ref)
    jax.tree.map(assert_array_equal, params, ref)


# --------------------------------------------------------------------------------------------
# Zero coordinate weights == plain Conv
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("coord_weights", ["concat", "split"])
@pytest.mark.parametrize(
    "conv_kwargs",
    [
        dict(kernel_size=(3, 3)),
        dict(kernel_size=(3, 2), strides=2, padding="VALID"),
        dict(kernel_size=(5,), strides=3, padding=((4, 1),)),
    ],
    ids=["2d-same", "2d-s2-valid", "1d-explicit"],
)
def test_zero_coordinate_weights_equal_plain_conv(coord_weights, conv_kwargs, rng):
    n = _spatial_ndim(conv_kwargs)
    x = _normal(rng, (2, *(7,) * n, 3))
    layer = cl.CoordConv(4, coord_weights=coord_weights, with_r=True, **conv_kwargs)
    params = _trained(rng, layer, x)
    data, _ = _data_and_coord(params, coord_weights, n + 1)
    if coord_weights == "concat":
        zeros = np.zeros((*data.shape[:-2], n + 1, 4), np.float32)
        params["kernel"] = jnp.asarray(np.concatenate([data, zeros], -2))
    else:
        params["coord_kernel"] = jnp.zeros_like(params["coord_kernel"])
    ref = _apply(nn.Conv(4, **conv_kwargs), {"kernel": data, "bias": params["bias"]}, x)
    assert_allclose(_apply(layer, params, x), ref, **TOL)


@pytest.mark.parametrize(
    "coord_weights, position", [("concat", "append"), ("concat", "prepend"), ("split", "append")]
)
def test_zero_init_coords_equals_plain_conv_at_init(coord_weights, position, rng):
    x = _normal(rng, (2, 6, 5, 3))
    key = _key(3)
    inits = dict(kernel_init=nn.initializers.normal(1.0), bias_init=nn.initializers.normal(1.0))
    layer = cl.CoordConv(
        4,
        (3, 3),
        strides=2,
        coord_weights=coord_weights,
        position=position,
        zero_init_coords=True,
        **inits,
    )
    params = jax.jit(layer.init)(key, x)["params"]
    conv = nn.Conv(4, (3, 3), strides=2, **inits)
    conv_params = jax.jit(conv.init)(key, x)["params"]
    data, coord = _data_and_coord(params, coord_weights, 2, position)
    assert_array_equal(data, conv_params["kernel"])  # the plain Conv's own draw
    assert_array_equal(coord, np.zeros_like(coord))
    assert_array_equal(params["bias"], conv_params["bias"])
    assert_allclose(_apply(layer, params, x), _apply(conv, conv_params, x), **TOL)


# --------------------------------------------------------------------------------------------
# Split variant == concat variant with a centre-tap coordinate kernel
# --------------------------------------------------------------------------------------------


SPLIT_CASES = [
    ("2d-k3-s1-same", (2, 7, 6, 2), dict(kernel_size=(3, 3))),
    ("2d-k3-s2-same", (2, 7, 6, 2), dict(kernel_size=(3, 3), strides=2)),
    ("2d-k3-s1-valid", (2, 7, 6, 2), dict(kernel_size=(3, 3), padding="VALID")),
    ("2d-k5x3-s2-valid", (2, 9, 6, 2), dict(kernel_size=(5, 3), strides=2, padding="VALID")),
    (
        "2d-k3-s2-explicit",
        (1, 7, 6, 2),
        dict(kernel_size=(3, 3), strides=2, padding=((0, 2), (3, 1))),
    ),
    # Padding wider than the kernel's reach: the centre tap also lands in the zero padding.
    ("2d-k3-s1-wide-pad", (1, 5, 4, 1), dict(kernel_size=(3, 3), padding=4)),
    ("1d-k5-s2-same-dilated", (2, 11, 2), dict(kernel_size=(5,), strides=2, kernel_dilation=2)),
    ("3d-k3-s2-valid", (1, 5, 4, 5, 1), dict(kernel_size=(3, 3, 3), strides=2, padding="VALID")),
]


@pytest.mark.parametrize("case", SPLIT_CASES, ids=_ids(SPLIT_CASES))
def test_split_equals_concat_with_centre_tap(case, rng):
    _, shape, conv_kwargs = case
    n = len(conv_kwargs["kernel_size"])
    x = _normal(rng, shape)
    layer = cl.CoordConv(5, coord_weights="split", with_r=True, **conv_kwargs)
    params = _trained(rng, layer, x)
    centre = _centre_tap_kernel(params["coord_kernel"], conv_kwargs["kernel_size"])
    concat = {"kernel": np.concatenate([params["kernel"], centre], -2), "bias": params["bias"]}
    xc = cj.add_coords(x, spatial_ndim=n, with_r=True)
    ref = _apply(nn.Conv(5, **conv_kwargs), concat, xc)
    assert_allclose(_apply(layer, params, x), ref, **TOL)
    concat_layer = cl.CoordConv(5, with_r=True, **conv_kwargs)
    assert_allclose(_apply(concat_layer, concat, x), ref, **TOL)


@pytest.mark.parametrize("padding", ["SAME", "VALID", ((1, 2), (2, 0))], ids=str)
@pytest.mark.parametrize("strides", [1, 2])
def test_split_transpose_equals_concat_with_centre_tap(padding, strides, rng):
    x = _normal(rng, (2, 4, 3, 2))
    kwargs = dict(kernel_size=(3, 3), strides=(strides, strides), padding=padding)
    layer = cl.CoordConvTranspose(3, coord_weights="split", **kwargs)
    params = _trained(rng, layer, x)
    centre = _centre_tap_kernel(params["coord_kernel"], (3, 3))
    concat = {"kernel": np.concatenate([params["kernel"], centre], -2), "bias": params["bias"]}
    ref = _apply(nn.ConvTranspose(3, **kwargs), concat, cj.add_coords(x))
    assert_allclose(_apply(layer, params, x), ref, **TOL)


def test_split_with_same_padding_is_a_1x1_conv_of_the_coordinates(rng):
    """Stride 1, SAME: the coordinate term is a 1×1 conv, for even kernels too."""
    x = _normal(rng, (2, 6, 5, 2))
    layer = cl.CoordConv(3, (4, 2), coord_weights="split", use_bias=False)
    params = _trained(rng, layer, x)
    data = _apply(nn.Conv(3, (4, 2), use_bias=False), {"kernel": params["kernel"]}, x)
    coords = np.asarray(cj.coord_channels((6, 5)))
    ref = np.asarray(data) + np.einsum("hwd,df->hwf", coords, params["coord_kernel"][0, 0])
    assert_allclose(_apply(layer, params, x), ref, **TOL)


# --------------------------------------------------------------------------------------------
# Retrofit
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("coord_weights", ["concat", "split"])
@pytest.mark.parametrize(
    "conv_kwargs, coord_kwargs",
    [
        (dict(kernel_size=(3, 3), strides=2), dict(with_r=True)),
        (dict(kernel_size=(3,), padding="VALID", use_bias=False), dict(position="prepend")),
        (dict(kernel_size=(3, 3), feature_group_count=2), dict(axes=(0,))),
    ],
    ids=["2d-r", "1d-prepend-nobias", "2d-grouped"],
)
def test_retrofit_is_function_preserving(coord_weights, conv_kwargs, coord_kwargs, rng):
    n = _spatial_ndim(conv_kwargs)
    x = _normal(rng, (2, *(6,) * n, 4))
    conv = nn.Conv(6, **conv_kwargs)
    trained = _trained(rng, conv, x)
    new = cl.retrofit_conv_params(
        trained,
        in_features=4,
        coord_weights=coord_weights,
        feature_group_count=conv_kwargs.get("feature_group_count", 1),
        **coord_kwargs,
    )
    layer = cl.CoordConv(6, coord_weights=coord_weights, **conv_kwargs, **coord_kwargs)
    expected = jax.eval_shape(layer.init, jax.random.key(0), x)["params"]
    assert jax.tree.map(lambda a: (a.shape, a.dtype), new) == jax.tree.map(
        lambda a: (a.shape, a.dtype), expected
    )
    assert_allclose(_apply(layer, new, x), _apply(conv, trained, x), **TOL)


@pytest.mark.parametrize("coord_weights", ["concat", "split"])
@pytest.mark.parametrize("transpose_kernel", [False, True])
def test_retrofit_conv_transpose_is_function_preserving(coord_weights, transpose_kernel, rng):
    x = _normal(rng, (2, 4, 3, 3))
    kwargs = dict(kernel_size=(3, 3), strides=(2, 2), transpose_kernel=transpose_kernel)
    conv = nn.ConvTranspose(5, **kwargs)
    trained = _trained(rng, conv, x)
    new = cl.retrofit_conv_params(
        trained, coord_weights=coord_weights, with_r=True, transpose_kernel=transpose_kernel
    )
    layer = cl.CoordConvTranspose(5, coord_weights=coord_weights, with_r=True, **kwargs)
    assert_allclose(_apply(layer, new, x), _apply(conv, trained, x), **TOL)


# --------------------------------------------------------------------------------------------
# Grouped convolutions
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("coord_weights", ["concat", "split"])
def test_grouped_data_term_plus_ungrouped_coordinate_term(coord_weights, rng):
    x = _normal(rng, (2, 6, 5, 4))
    layer = cl.CoordConv(6, (3, 3), feature_group_count=2, coord_weights=coord_weights)
    params = _trained(rng, layer, x)
    data, coord = _data_and_coord(params, coord_weights, 2)
    assert data.shape == (3, 3, 2, 6)
    if coord_weights == "split":
        coord = _centre_tap_kernel(coord, (3, 3))
    grid = jnp.broadcast_to(cj.coord_channels((6, 5)), (2, 6, 5, 2))
    data_term = _apply(
        nn.Conv(6, (3, 3), feature_group_count=2), {"kernel": data, "bias": params["bias"]}, x
    )
    coord_term = _apply(nn.Conv(6, (3, 3), use_bias=False), {"kernel": coord}, grid)
    assert_allclose(_apply(layer, params, x), data_term + coord_term, **TOL)


# --------------------------------------------------------------------------------------------
# Parameter trees and counts
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("use_bias", [True, False])
@pytest.mark.parametrize("n", [1, 2, 3])
@pytest.mark.parametrize("with_r", [False, True])
def test_param_tree_and_count(use_bias, n, with_r):
    c, f, k = 3, 4, 3
    d = n + with_r
    x = jnp.zeros((1, *(5,) * n, c))
    b = f if use_bias else 0
    for coord_weights, keys, count in [
        ("concat", {"kernel", "bias"}, (c + d) * f * k**n + b),
        ("split", {"kernel", "coord_kernel", "bias"}, c * f * k**n + d * f + b),
    ]:
        for cls in (cl.CoordConv, cl.CoordConvTranspose):
            layer = cls(f, (k,) * n, use_bias=use_bias, with_r=with_r, coord_weights=coord_weights)
            variables = jax.eval_shape(layer.init, jax.random.key(0), x)
            assert set(variables) == {"params"}
            params = variables["params"]
            assert set(params) == (keys if use_bias else keys - {"bias"})
            assert sum(int(np.prod(p.shape)) for p in jax.tree.leaves(params)) == count


def test_add_coords_module_is_add_coords(rng):
    x = _normal(rng, (2, 4, 3, 5, 2))
    layer = cl.AddCoords(spatial_ndim=3, with_r=True, order="xy", position="prepend")
    variables = layer.init(jax.random.key(0), x)
    assert not jax.tree.leaves(variables)
    expected = cj.add_coords(x, spatial_ndim=3, with_r=True, order="xy", position="prepend")
    assert_array_equal(layer.apply(variables, x), expected)


# --------------------------------------------------------------------------------------------
# Transformations
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("coord_weights", ["concat", "split"])
def test_jit_vmap_over_param_sets_and_examples(coord_weights, rng):
    x = _normal(rng, (3, 6, 5, 2))
    layer = cl.CoordConv(4, (3, 3), strides=2, with_r=True, coord_weights=coord_weights)
    models = [_trained(rng, layer, x) for _ in range(4)]
    stacked = jax.tree.map(lambda *a: jnp.stack(a), *models)
    looped = np.stack([layer.apply({"params": p}, x) for p in models])  # eager, unjitted
    vmapped = jax.jit(jax.vmap(lambda p: layer.apply({"params": p}, x)))(stacked)
    assert_allclose(vmapped, looped, **TOL)
    assert_allclose(_apply(layer, models[0], x), looped[0], **TOL)
    per_example = jax.vmap(lambda xi: layer.apply({"params": models[0]}, xi))(x)
    assert_allclose(per_example, looped[0], **TOL)


def test_grad_matches_conv_on_add_coords(rng):
    x = _normal(rng, (2, 6, 5, 2))
    kwargs = dict(kernel_size=(3, 3), strides=2, padding="VALID")
    layer = cl.CoordConv(4, with_r=True, **kwargs)
    params = _trained(rng, layer, x)
    xc = cj.add_coords(x, with_r=True)

    def loss(p):
        return jnp.sum(jnp.sin(layer.apply({"params": p}, x)))

    def ref_loss(p):
        return jnp.sum(jnp.sin(nn.Conv(4, **kwargs).apply({"params": p}, xc)))

    g, g_ref = jax.jit(jax.grad(loss))(params), jax.jit(jax.grad(ref_loss))(params)
    jax.tree.map(lambda a, b: assert_allclose(a, b, **TOL), g, g_ref)

    # Split: the coordinate gradient is the centre tap of the full gradient.
    split = cl.CoordConv(4, with_r=True, coord_weights="split", **kwargs)
    sp = {
        "kernel": params["kernel"][..., :2, :],
        "bias": params["bias"],
        "coord_kernel": jnp.zeros((1, 1, 3, 4)),
    }
    gs = jax.jit(jax.grad(lambda p: jnp.sum(jnp.sin(split.apply({"params": p}, x)))))(sp)
    full_kernel = jnp.concatenate([sp["kernel"], jnp.zeros((3, 3, 3, 4))], -2)
    gf = jax.jit(jax.grad(ref_loss))({"kernel": full_kernel, "bias": sp["bias"]})
    assert_allclose(gs["kernel"], gf["kernel"][..., :2, :], **TOL)
    assert_allclose(gs["coord_kernel"][0, 0], gf["kernel"][1, 1, 2:, :], **TOL)
    assert_allclose(gs["bias"], gf["bias"], **TOL)


# --------------------------------------------------------------------------------------------
# dtypes
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("coord_weights", ["concat", "split"])
def test_param_dtype_and_bf16_compute(coord_weights, rng):
    x = _normal(rng, (2, 6, 5, 3))
    bf16 = jnp.dtype(jnp.bfloat16)
    layer16 = cl.CoordConv(4, (3, 3), coord_weights=coord_weights, dtype=bf16, param_dtype=bf16)
    shapes = jax.eval_shape(layer16.init, jax.random.key(0), x)["params"]
    assert {p.dtype for p in jax.tree.leaves(shapes)} == {bf16}
    p32 = _trained(rng, layer16, x)
    p16 = jax.tree.map(lambda a: a.astype(bf16), p32)
    y16 = _apply(layer16, p16, x)
    assert y16.dtype == bf16
    y32 = _apply(cl.CoordConv(4, (3, 3), coord_weights=coord_weights), p32, x)
    assert y32.dtype == jnp.float32
    assert_allclose(np.asarray(y16, np.float32), y32, rtol=5e-2, atol=5e-2)
    # bf16 inputs, float32 parameters, bf16 compute.
    mixed = cl.CoordConv(4, (3, 3), coord_weights=coord_weights, dtype=bf16)
    y_mixed = _apply(mixed, p32, x.astype(bf16))
    assert y_mixed.dtype == bf16
    assert_allclose(np.asarray(y_mixed, np.float32), y32, rtol=5e-2, atol=5e-2)


# --------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------


def _case_id(value) -> str:
    if isinstance(value, dict):
        return ",".join(f"{k}={getattr(v, '__name__', v)}" for k, v in value.items())
    return str(value)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(coord_weights="sum"), "coord_weights"),
        (dict(order="yx"), "order"),
        (dict(coord_range="[-1,1]"), "coord_range"),
        (dict(position="middle"), "position"),
        (dict(axes=(2,)), "axes"),
        (dict(feature_group_count=0), "feature_group_count"),
        (dict(feature_group_count=3), "feature_group_count"),  # does not divide features=4
        (dict(kernel_size=()), "kernel_size"),
        (dict(kernel_size=(3, 0)), "kernel_size"),
        (dict(zero_init_coords=True, coord_kernel_init=nn.initializers.ones), "zero_init_coords"),
    ],
    ids=_case_id,  # functions by name: the same ids in every process (pytest-xdist)
)
def test_bad_arguments_fail_at_construction(kwargs, match):
    args = dict(features=4, kernel_size=(3, 3)) | kwargs
    with pytest.raises(ValueError, match=match):
        cl.CoordConv(**args)
    if "feature_group_count" not in kwargs:
        with pytest.raises(ValueError, match=match):
            cl.CoordConvTranspose(**args)


def test_bad_inputs():
    x = jnp.zeros((1, 5, 5, 3))
    key = jax.random.key(0)

    def init(layer, x):
        return jax.eval_shape(layer.init, key, x)

    with pytest.raises(ValueError, match="spatial"):
        init(cl.CoordConv(4, (3, 3)), jnp.zeros((5, 3)))  # 1 spatial dim, 2-D kernel
    with pytest.raises(ValueError, match="feature_group_count"):
        init(cl.CoordConv(4, (3, 3), feature_group_count=2), x)  # 3 channels
    with pytest.raises(ValueError, match="mask"):  # the concat kernel is (3, 3, 3 + 2, 4)
        init(cl.CoordConv(4, (3, 3), mask=jnp.ones((3, 3, 3, 4))), x)


def test_retrofit_bad_params():
    kernel = jnp.zeros((3, 3, 2, 4))
    with pytest.raises(ValueError, match="conv_params"):
        cl.retrofit_conv_params({"params": {"kernel": kernel}})
    with pytest.raises(ValueError, match="conv_params"):
        cl.retrofit_conv_params({"kernel": kernel, "scale": jnp.ones(4)})
    with pytest.raises(ValueError, match="in_features"):
        cl.retrofit_conv_params({"kernel": kernel}, in_features=3)
    with pytest.raises(ValueError, match="coord_weights"):
        cl.retrofit_conv_params({"kernel": kernel}, coord_weights="both")


def test_mask_is_applied_to_the_kernel(rng):
    x = _normal(rng, (1, 5, 5, 2))
    mask = np.ones((3, 3, 4, 3), np.float32)
    mask[0] = 0.0
    layer = cl.CoordConv(3, (3, 3), mask=jnp.asarray(mask))
    params = _trained(rng, layer, x)
    masked = {"kernel": params["kernel"] * mask, "bias": params["bias"]}
    ref = _apply(cl.CoordConv(3, (3, 3)), masked, x)
    assert_allclose(_apply(layer, params, x), ref, **TOL)


def test_flax_fields_keep_flax_positional_order():
    """The flax options are positional in flax's order; the coordinate options keyword-only."""

    def positional(cls):
        params = inspect.signature(cls.__init__).parameters.values()
        names = [p.name for p in params if p.kind == p.POSITIONAL_OR_KEYWORD]
        return names[1 : names.index("parent")]  # without self, parent and name

    def keyword_only(cls):
        params = inspect.signature(cls.__init__).parameters.values()
        return [p.name for p in params if p.kind == p.KEYWORD_ONLY]

    flax_conv = [
        "features",
        "kernel_size",
        "strides",
        "padding",
        "input_dilation",
        "kernel_dilation",
        "feature_group_count",
        "use_bias",
        "mask",
        "dtype",
        "param_dtype",
        "precision",
        "kernel_init",
        "bias_init",
    ]
    assert positional(cl.CoordConv) == [*flax_conv, "promote_dtype", "tile_shape", "dense_kernel"]
    assert positional(cl.CoordConvTranspose) == [
        "features",
        "kernel_size",
        "strides",
        "padding",
        "kernel_dilation",
        "use_bias",
        "mask",
        "dtype",
        "param_dtype",
        "precision",
        "kernel_init",
        "bias_init",
        "transpose_kernel",
        "promote_dtype",
        "preferred_element_type",
    ]
    coord_fields = [
        "with_r",
        "normalize_r",
        "order",
        "coord_range",
        "axes",
        "position",
        "coord_weights",
        "zero_init_coords",
        "coord_kernel_init",
        "lowering",
    ]
    assert keyword_only(cl.CoordConv) == keyword_only(cl.CoordConvTranspose) == coord_fields
    plain = [
        "features",
        "kernel_size",
        "strides",
        "padding",
        "kernel_dilation",
        "use_bias",
        "dtype",
        "param_dtype",
        "precision",
        "kernel_init",
        "bias_init",
        "lowering",
    ]
    assert positional(cl.Conv) == positional(cl.ConvTranspose) == plain
    assert (cl.Conv(2, 3).strides, cl.ConvTranspose(2, 3).strides) == (1, None)
    assert (cl.Conv(2, 3).kernel_dilation, cl.ConvTranspose(2, 3).kernel_dilation) == (1, None)
    assert cl.CoordConv(4, (3, 3), 2).strides == 2

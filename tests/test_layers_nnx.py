"""coordjax.nnx layers: equivalences with nnx.Conv / nnx.ConvTranspose and with coordjax.linen.

Layers are built abstractly (``nnx.eval_shape``) and filled with NumPy random weights, and calls
are jitted, so the file compiles one program per case rather than one per primitive and shape.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from numpy.testing import assert_allclose, assert_array_equal

import coordjax as cj
from coordjax import linen as cl
from coordjax import nnx as cn

TOL = dict(rtol=1e-5, atol=1e-5)


@pytest.fixture
def rng():
    return np.random.default_rng(1)


def _normal(rng, shape, scale=1.0):
    return jnp.asarray(scale * rng.standard_normal(shape), jnp.float32)


def _random_layer(rng, make):
    """``make()``'s layer, built abstractly, with random 'trained-looking' parameters."""
    layer = nnx.eval_shape(make)
    shapes = nnx.state(layer, nnx.Param)
    nnx.update(layer, jax.tree.map(lambda a: _normal(rng, a.shape, 0.5).astype(a.dtype), shapes))
    return layer


def _params(layer) -> dict:
    """``{name: array}`` of a layer's ``nnx.Param`` s."""
    return {k: v[...] for k, v in nnx.state(layer, nnx.Param).items()}


def _call(layer, x):
    return nnx.jit(lambda m, x: m(x))(layer, x)


def _centre_tap_kernel(coord_kernel, kernel_size):
    coord_kernel = np.asarray(coord_kernel)
    full = np.zeros((*kernel_size, *coord_kernel.shape[-2:]), coord_kernel.dtype)
    full[tuple((k - 1) // 2 for k in kernel_size)] = coord_kernel.reshape(coord_kernel.shape[-2:])
    return full


CONV_CASES = [
    ("1d", (2, 9, 3), dict(kernel_size=(3,)), {}),
    (
        "2d-nonsquare-s2-valid-r",
        (2, 8, 6, 3),
        dict(kernel_size=(3, 2), strides=2, padding="VALID"),
        dict(with_r=True),
    ),
    (
        "2d-explicit-xy-prepend",
        (1, 6, 7, 3),
        dict(kernel_size=(3, 3), strides=(2, 1), padding=((2, 0), (1, 3))),
        dict(order="xy", position="prepend"),
    ),
    ("2d-circular-no-batch", (5, 6, 3), dict(kernel_size=(3, 3), padding="CIRCULAR"), {}),
    ("3d", (1, 4, 5, 3, 3), dict(kernel_size=(3, 3, 3), strides=(1, 2, 1)), dict(with_r=True)),
]

TRANSPOSE_CASES = [
    ("1d", (2, 5, 3), dict(kernel_size=(3,), strides=(2,)), {}),
    ("2d-same-s2-r", (2, 4, 3, 3), dict(kernel_size=(3, 3), strides=(2, 2)), dict(with_r=True)),
    (
        "2d-explicit-transpose-kernel",
        (1, 4, 4, 3),
        dict(kernel_size=(3, 3), strides=(2, 2), padding=((1, 2), (0, 1)), transpose_kernel=True),
        dict(position="prepend"),
    ),
]


def _ids(cases):
    return [c[0] for c in cases]


def _d(conv_kwargs, coord_kwargs):
    return len(conv_kwargs["kernel_size"]) + bool(coord_kwargs.get("with_r"))


@pytest.mark.parametrize("case", CONV_CASES, ids=_ids(CONV_CASES))
def test_coordconv_equals_conv_on_add_coords(case, rng):
    _, shape, conv_kwargs, coord_kwargs = case
    x = _normal(rng, shape)
    c, n, d = shape[-1], len(conv_kwargs["kernel_size"]), _d(conv_kwargs, coord_kwargs)
    layer = _random_layer(
        rng, lambda: cn.CoordConv(c, 4, **conv_kwargs, **coord_kwargs, rngs=nnx.Rngs(0))
    )
    ref = nnx.eval_shape(lambda: nnx.Conv(c + d, 4, **conv_kwargs, rngs=nnx.Rngs(0)))
    nnx.update(ref, _params(layer))
    xc = cj.add_coords(x, spatial_ndim=n, **coord_kwargs)
    assert_allclose(_call(layer, x), _call(ref, xc), **TOL)


@pytest.mark.parametrize("case", TRANSPOSE_CASES, ids=_ids(TRANSPOSE_CASES))
def test_coordconv_transpose_equals_conv_transpose_on_add_coords(case, rng):
    _, shape, conv_kwargs, coord_kwargs = case
    x = _normal(rng, shape)
    c, n, d = shape[-1], len(conv_kwargs["kernel_size"]), _d(conv_kwargs, coord_kwargs)
    layer = _random_layer(
        rng, lambda: cn.CoordConvTranspose(c, 5, **conv_kwargs, **coord_kwargs, rngs=nnx.Rngs(0))
    )
    ref = nnx.eval_shape(lambda: nnx.ConvTranspose(c + d, 5, **conv_kwargs, rngs=nnx.Rngs(0)))
    nnx.update(ref, _params(layer))
    xc = cj.add_coords(x, spatial_ndim=n, **coord_kwargs)
    assert_allclose(_call(layer, x), _call(ref, xc), **TOL)


# --------------------------------------------------------------------------------------------
# Linen == NNX with copied weights
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("coord_weights", ["concat", "split"])
@pytest.mark.parametrize("transpose", [False, True], ids=["conv", "conv_transpose"])
def test_linen_equals_nnx_with_copied_weights(coord_weights, transpose, rng):
    x = _normal(rng, (2, 6, 5, 3))
    coord = dict(with_r=True, normalize_r=True, coord_range="centers", coord_weights=coord_weights)
    if transpose:
        conv = dict(kernel_size=(3, 3), strides=(2, 2), padding="VALID")
        linen_layer = cl.CoordConvTranspose(4, **conv, **coord)
        nnx_cls = cn.CoordConvTranspose
    else:
        conv = dict(kernel_size=(3, 2), strides=(2, 1), padding=((1, 0), (2, 2)))
        linen_layer = cl.CoordConv(4, **conv, **coord)
        nnx_cls = cn.CoordConv
    nnx_layer = _random_layer(rng, lambda: nnx_cls(3, 4, **conv, **coord, rngs=nnx.Rngs(0)))
    params = _params(nnx_layer)
    linen_shapes = jax.eval_shape(linen_layer.init, jax.random.key(0), x)["params"]
    assert jax.tree.map(jnp.shape, linen_shapes) == jax.tree.map(jnp.shape, params)
    y_linen = jax.jit(linen_layer.apply)({"params": params}, x)
    assert_allclose(_call(nnx_layer, x), y_linen, **TOL)


@pytest.mark.parametrize(
    "conv",
    [
        dict(kernel_size=(1, 1), tile_shape=(5, 4), dense_kernel=True),
        dict(kernel_size=(1, 1), tile_shape=(5, 4), coord_weights="split"),
        dict(kernel_size=(3, 3), tile_shape=(5, 4), strides=2),
        dict(kernel_size=(1, 1), dense_kernel=True),
    ],
    ids=["tiled-dense", "tiled-split", "tiled-3x3-s2", "dense"],
)
def test_factored_first_layer_linen_equals_nnx(conv, rng):
    """tile_shape / dense_kernel: the same parameter shapes and outputs as the Linen layer."""
    x = _normal(rng, (2, 3) if "tile_shape" in conv else (2, 5, 4, 3))
    coord = dict(order="xy", with_r=True)
    linen_layer = cl.CoordConv(6, **conv, **coord)
    nnx_layer = _random_layer(rng, lambda: cn.CoordConv(3, 6, **conv, **coord, rngs=nnx.Rngs(0)))
    params = _params(nnx_layer)
    linen_shapes = jax.eval_shape(linen_layer.init, jax.random.key(0), x)["params"]
    assert jax.tree.map(jnp.shape, linen_shapes) == jax.tree.map(jnp.shape, params)
    y_linen = jax.jit(linen_layer.apply)({"params": params}, x)
    y_nnx = _call(nnx_layer, x)
    assert y_nnx.shape == y_linen.shape
    assert_allclose(y_nnx, y_linen, **TOL)
    if conv.get("tile_shape"):
        assert nnx_layer.tile_shape == conv["tile_shape"]


def test_factored_first_layer_bad_arguments():
    with pytest.raises(ValueError, match="tile_shape"):
        cn.CoordConv(3, 6, (1, 1), tile_shape=(5,), rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="dense_kernel"):
        cn.CoordConv(3, 6, (3, 3), dense_kernel=True, rngs=nnx.Rngs(0))


# --------------------------------------------------------------------------------------------
# Zero coordinate weights, zero_init_coords, split variant
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "coord_weights, position", [("concat", "append"), ("concat", "prepend"), ("split", "append")]
)
def test_zero_init_coords_equals_plain_conv_at_init(coord_weights, position, rng):
    x = _normal(rng, (2, 6, 5, 3))
    inits = dict(kernel_init=nnx.initializers.normal(1.0), bias_init=nnx.initializers.normal(1.0))

    def rngs():
        return nnx.Rngs(params=jax.random.key(5, impl="rbg"))  # fast to compile

    layer = nnx.jit(
        lambda: cn.CoordConv(
            3,
            4,
            (3, 3),
            strides=2,
            coord_weights=coord_weights,
            position=position,
            zero_init_coords=True,
            rngs=rngs(),
            **inits,
        )
    )()
    conv = nnx.jit(lambda: nnx.Conv(3, 4, (3, 3), strides=2, rngs=rngs(), **inits))()
    kernel = np.asarray(layer.kernel[...])
    if coord_weights == "split":
        data, coord = kernel, np.asarray(layer.coord_kernel[...])
    elif position == "append":
        data, coord = kernel[..., :3, :], kernel[..., 3:, :]
    else:
        data, coord = kernel[..., 2:, :], kernel[..., :2, :]
    assert_array_equal(data, conv.kernel[...])  # the plain Conv's own draw from the same rngs
    assert_array_equal(coord, np.zeros_like(coord))
    assert_array_equal(layer.bias[...], conv.bias[...])
    assert_allclose(_call(layer, x), _call(conv, x), **TOL)


@pytest.mark.parametrize("padding", ["SAME", "VALID", ((0, 2), (3, 1))], ids=str)
@pytest.mark.parametrize("strides", [1, 2])
def test_split_equals_concat_with_centre_tap(padding, strides, rng):
    x = _normal(rng, (2, 7, 6, 2))
    conv = dict(kernel_size=(3, 3), strides=strides, padding=padding)
    layer = _random_layer(
        rng, lambda: cn.CoordConv(2, 5, **conv, coord_weights="split", rngs=nnx.Rngs(0))
    )
    centre = _centre_tap_kernel(layer.coord_kernel[...], (3, 3))
    ref = nnx.eval_shape(lambda: nnx.Conv(4, 5, **conv, rngs=nnx.Rngs(0)))
    nnx.update(
        ref,
        {"kernel": np.concatenate([layer.kernel[...], centre], -2), "bias": layer.bias[...]},
    )
    assert_allclose(_call(layer, x), _call(ref, cj.add_coords(x)), **TOL)


# --------------------------------------------------------------------------------------------
# Retrofit
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("coord_weights", ["concat", "split"])
@pytest.mark.parametrize(
    "make",
    [
        lambda: nnx.Conv(4, 6, (3, 3), strides=2, rngs=nnx.Rngs(0)),
        lambda: nnx.Conv(4, 6, (3,), padding="VALID", use_bias=False, rngs=nnx.Rngs(0)),
        lambda: nnx.Conv(4, 6, (3, 3), feature_group_count=2, rngs=nnx.Rngs(0)),
        lambda: nnx.ConvTranspose(4, 5, (3, 3), strides=(2, 2), rngs=nnx.Rngs(0)),
        lambda: nnx.ConvTranspose(
            4, 5, (3,), strides=(2,), transpose_kernel=True, rngs=nnx.Rngs(0)
        ),
    ],
    ids=["conv-2d", "conv-1d-nobias", "conv-grouped", "transpose-2d", "transpose-1d-tk"],
)
def test_retrofit_conv_is_function_preserving(coord_weights, make, rng):
    conv = _random_layer(rng, make)
    n = len(conv.kernel_size)
    x = _normal(rng, (2, *(5,) * n, 4))
    layer = cn.retrofit_conv(conv, coord_weights=coord_weights, with_r=True, position="prepend")
    expected_cls = cn.CoordConv if isinstance(conv, nnx.Conv) else cn.CoordConvTranspose
    assert type(layer) is expected_cls
    assert layer.coord_weights == coord_weights
    keys = {"kernel", "bias", "coord_kernel"} if coord_weights == "split" else {"kernel", "bias"}
    assert set(_params(layer)) == (keys if conv.use_bias else keys - {"bias"})
    assert_allclose(_call(layer, x), _call(conv, x), **TOL)
    # The same through the pure helper, into a Linen layer.
    params = {"kernel": conv.kernel[...]}
    if conv.use_bias:
        params["bias"] = conv.bias[...]
    new = cn.retrofit_conv_params(
        params,
        in_features=4,
        coord_weights=coord_weights,
        with_r=True,
        position="prepend",
        feature_group_count=getattr(conv, "feature_group_count", 1),
        transpose_kernel=getattr(conv, "transpose_kernel", False),
    )
    jax.tree.map(assert_array_equal, new, _params(layer))


def test_retrofit_conv_keeps_the_mask(rng):
    mask = np.ones((3, 3, 2, 4), np.float32)
    mask[1] = 0.0
    conv = _random_layer(rng, lambda: nnx.Conv(2, 4, (3, 3), rngs=nnx.Rngs(0)))
    conv.mask = nnx.data(jnp.asarray(mask))
    x = _normal(rng, (1, 5, 5, 2))
    for coord_weights in ("concat", "split"):
        layer = cn.retrofit_conv(conv, coord_weights=coord_weights)
        assert_allclose(_call(layer, x), _call(conv, x), **TOL)


# --------------------------------------------------------------------------------------------
# Parameter trees and counts
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("use_bias", [True, False])
@pytest.mark.parametrize("n", [1, 2, 3])
def test_param_tree_and_count(use_bias, n):
    c, f, k, d = 3, 4, 3, n + 1
    b = f if use_bias else 0
    for coord_weights, keys, count in [
        ("concat", {"kernel", "bias"}, (c + d) * f * k**n + b),
        ("split", {"kernel", "coord_kernel", "bias"}, c * f * k**n + d * f + b),
    ]:
        for cls in (cn.CoordConv, cn.CoordConvTranspose):
            layer = nnx.eval_shape(
                lambda cls=cls, coord_weights=coord_weights: cls(
                    c,
                    f,
                    (k,) * n,
                    use_bias=use_bias,
                    with_r=True,
                    coord_weights=coord_weights,
                    rngs=nnx.Rngs(0),
                )
            )
            params = nnx.state(layer, nnx.Param)
            assert set(params) == (keys if use_bias else keys - {"bias"})
            assert sum(int(np.prod(p.shape)) for p in jax.tree.leaves(params)) == count


def test_add_coords_module_is_add_coords(rng):
    x = _normal(rng, (2, 4, 3, 2))
    layer = cn.AddCoords(2, with_r=True, axes=1, position="prepend")
    assert not jax.tree.leaves(nnx.state(layer))
    expected = cj.add_coords(x, with_r=True, axes=(1,), position="prepend")
    assert_array_equal(layer(x), expected)


# --------------------------------------------------------------------------------------------
# Transformations, dtypes
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("coord_weights", ["concat", "split"])
def test_vmap_over_param_sets_and_grad(coord_weights, rng):
    x = _normal(rng, (3, 6, 5, 2))
    models = [
        _random_layer(
            rng,
            lambda: cn.CoordConv(
                2, 4, (3, 3), strides=2, coord_weights=coord_weights, rngs=nnx.Rngs(0)
            ),
        )
        for _ in range(3)
    ]
    graphdef, _ = nnx.split(models[0])
    stacked = jax.tree.map(lambda *a: jnp.stack(a), *[nnx.state(m) for m in models])
    vmapped = jax.jit(jax.vmap(lambda s: nnx.merge(graphdef, s)(x)))(stacked)
    looped = np.stack([m(x) for m in models])  # eager, unjitted
    assert_allclose(vmapped, looped, **TOL)

    # Gradients agree with the Linen layer's.
    linen_layer = cl.CoordConv(4, (3, 3), strides=2, coord_weights=coord_weights)
    params = _params(models[0])
    g_nnx = nnx.grad(lambda m: jnp.sum(jnp.sin(m(x))))(models[0])
    g_linen = jax.grad(lambda p: jnp.sum(jnp.sin(linen_layer.apply({"params": p}, x))))(params)
    for name, g in g_linen.items():
        assert_allclose(g_nnx[name][...], g, **TOL)


def test_param_dtype_and_bf16_compute(rng):
    bf16 = jnp.dtype(jnp.bfloat16)
    x = _normal(rng, (2, 6, 5, 3))
    layer = _random_layer(
        rng,
        lambda: cn.CoordConv(
            3, 4, (3, 3), coord_weights="split", dtype=bf16, param_dtype=bf16, rngs=nnx.Rngs(0)
        ),
    )
    assert {p.dtype for p in jax.tree.leaves(nnx.state(layer, nnx.Param))} == {bf16}
    y = _call(layer, x)
    assert y.dtype == bf16
    ref = jax.jit(cl.CoordConv(4, (3, 3), coord_weights="split").apply)(
        {"params": jax.tree.map(lambda a: a.astype(jnp.float32), _params(layer))}, x
    )
    assert_allclose(np.asarray(y, np.float32), ref, rtol=5e-2, atol=5e-2)


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
        (dict(position="middle"), "position"),
        (dict(axes=(0, 0)), "axes"),
        (dict(kernel_size=(3, -1)), "kernel_size"),
        (dict(zero_init_coords=True, coord_kernel_init=nnx.initializers.ones), "zero_init"),
    ],
    ids=_case_id,  # functions by name: the same ids in every process (pytest-xdist)
)
def test_bad_arguments(kwargs, match):
    args = dict(in_features=3, out_features=4, kernel_size=(3, 3)) | kwargs
    for cls in (cn.CoordConv, cn.CoordConvTranspose):
        with pytest.raises(ValueError, match=match):
            nnx.eval_shape(lambda cls=cls: cls(**args, rngs=nnx.Rngs(0)))


def test_bad_inputs_and_groups():
    with pytest.raises(ValueError, match="feature_group_count"):
        nnx.eval_shape(lambda: cn.CoordConv(3, 4, (3, 3), feature_group_count=2, rngs=nnx.Rngs(0)))
    layer = nnx.eval_shape(lambda: cn.CoordConv(3, 4, (3, 3), rngs=nnx.Rngs(0)))
    with pytest.raises(ValueError, match="spatial"):
        jax.eval_shape(layer, jnp.zeros((5, 3)))
    with pytest.raises(ValueError, match="in_features"):
        jax.eval_shape(layer, jnp.zeros((1, 5, 5, 2)))
    with pytest.raises(TypeError, match="conv"):
        cn.retrofit_conv(nnx.Linear(2, 3, rngs=nnx.Rngs(0)))


def test_linen_and_nnx_share_the_retrofit_helper():
    assert cn.retrofit_conv_params is cl.retrofit_conv_params

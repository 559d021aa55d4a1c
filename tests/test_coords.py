"""Value-level tests of coordjax.coords against an independent NumPy reference.

The reference below is written from the formulas in the module docstring ("Conventions"),
never from coordjax internals. The suite covers the bugs found in published AddCoords
implementations: per-axis extremes on non-square and N-D shapes (1), size-1
axes (2), a centred radius (3), channel order and position (4), exact range conventions (5),
dtypes (6) and jit/vmap/grad (9).
"""

from __future__ import annotations

import itertools
import warnings
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import coordjax
from coordjax import add_coords, coord_channels, num_coord_channels

RANGES = ("corners", "centers", "unit", "pixels")
FLOAT_DTYPES = (jnp.float32, jnp.float16, jnp.bfloat16)

# Non-square shapes of rank 1 to 4 (every axis a different size, so swapped axes show).
SHAPES = [(7,), (5, 8), (3, 4, 6), (2, 3, 4, 5)]


# --------------------------------------------------------------------------------------------
# Independent NumPy reference (float64, from the formulas).
# --------------------------------------------------------------------------------------------


def ref_axis(n: int, coord_range: str) -> np.ndarray:
    """Coordinates along one axis of size n (float64)."""
    i = np.arange(n, dtype=np.float64)
    if coord_range == "corners":
        return 2 * i / (n - 1) - 1 if n > 1 else np.zeros(1)
    if coord_range == "centers":
        return (2 * i + 1) / n - 1
    if coord_range == "unit":
        return i / (n - 1) if n > 1 else np.full(1, 0.5)
    if coord_range == "pixels":
        return i
    raise AssertionError(coord_range)


def ref_centre(n: int, coord_range: str) -> float:
    """Centre value of the range along an axis of size n (where the radius is zero)."""
    return {"corners": 0.0, "centers": 0.0, "unit": 0.5, "pixels": (n - 1) / 2}[coord_range]


def ref_grid(
    shape,
    *,
    with_r=False,
    normalize_r=False,
    order="ij",
    coord_range="corners",
    axes=None,
) -> np.ndarray:
    """(*shape, d) float64 coordinate grid."""
    k = len(shape)
    if axes is None:
        sel = list(range(k))
    else:
        sel = [a % k for a in ((axes,) if isinstance(axes, int) else axes)]
    if order == "xy":
        sel = sel[::-1]
    chans, sq = [], np.zeros(shape)
    for a in sel:
        n = shape[a]
        view = [1] * k
        view[a] = n
        c = np.broadcast_to(ref_axis(n, coord_range).reshape(view), shape)
        chans.append(c)
        sq = sq + (c - ref_centre(n, coord_range)) ** 2
    if with_r:
        r = np.sqrt(sq)
        if normalize_r:
            r = r / r.max() if r.max() > 0 else np.zeros(shape)
        chans.append(r)
    return np.stack(chans, axis=-1)


# Value tests call the library through jit: one compile per configuration is several times
# faster than eager op-by-op dispatch, and it is how the functions run inside models. Eager calls
# are kept where eager behaviour is the point (literals, warnings, errors, NumPy inputs).
# Results are checked in NumPy (slicing a jax.Array eagerly would compile yet more ops).
def cc(spatial_shape, **kwargs) -> np.ndarray:
    """coord_channels under jit (static shape and options), as a NumPy array."""
    return np.asarray(jax.jit(partial(coord_channels, spatial_shape, **kwargs))())


def ac(x, **kwargs) -> np.ndarray:
    """add_coords under jit (static options), as a NumPy array."""
    return np.asarray(jax.jit(partial(add_coords, **kwargs))(x))


_RNG = np.random.default_rng(0)


def rand(shape, dtype=np.float32) -> jax.Array:
    """Random normal input, drawn with NumPy (no PRNG kernels to compile per shape)."""
    return jnp.asarray(_RNG.standard_normal(shape).astype(np.float32).astype(np.dtype(dtype)))


def assert_close(actual, expected, *, rtol=1e-6, atol=1e-6):
    actual = np.asarray(actual).astype(np.float32)
    assert actual.shape == np.shape(expected), (actual.shape, np.shape(expected))
    assert np.all(np.isfinite(actual))
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol)


def test_reference_literals():
    """The NumPy reference itself, against hand-written values."""
    np.testing.assert_array_equal(ref_axis(5, "corners"), [-1, -0.5, 0, 0.5, 1])
    np.testing.assert_array_equal(ref_axis(4, "centers"), [-0.75, -0.25, 0.25, 0.75])
    np.testing.assert_array_equal(ref_axis(5, "unit"), [0, 0.25, 0.5, 0.75, 1])
    np.testing.assert_array_equal(ref_axis(3, "pixels"), [0, 1, 2])


# --------------------------------------------------------------------------------------------
# coord_channels: per-axis formulas (taxonomy 1, 5).
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("coord_range", "n", "expected"),
    [
        ("corners", 5, [-1.0, -0.5, 0.0, 0.5, 1.0]),
        ("corners", 2, [-1.0, 1.0]),
        ("centers", 4, [-0.75, -0.25, 0.25, 0.75]),
        ("centers", 2, [-0.5, 0.5]),
        ("unit", 5, [0.0, 0.25, 0.5, 0.75, 1.0]),
        ("pixels", 4, [0.0, 1.0, 2.0, 3.0]),
    ],
)
def test_literal_values_1d(coord_range, n, expected):
    out = coord_channels((n,), coord_range=coord_range)
    assert out.shape == (n, 1)
    assert out.dtype == jnp.float32
    np.testing.assert_array_equal(np.asarray(out[:, 0]), np.float32(expected))


def test_docstring_example_rows_first():
    """Default order "ij": channel 0 indexes rows (first spatial axis)."""
    g = np.asarray(coord_channels((3, 2)))
    np.testing.assert_array_equal(g[..., 0], [[-1, -1], [0, 0], [1, 1]])
    np.testing.assert_array_equal(g[..., 1], [[-1, 1], [-1, 1], [-1, 1]])


@pytest.mark.parametrize("coord_range", RANGES)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_per_axis_formula(shape, coord_range):
    out = cc(shape, coord_range=coord_range)
    assert out.shape == (*shape, len(shape))
    assert out.dtype == jnp.float32
    assert_close(out, ref_grid(shape, coord_range=coord_range))


@pytest.mark.parametrize("coord_range", RANGES)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_each_channel_spans_its_range_along_its_own_axis_only(shape, coord_range):
    out = np.asarray(cc(shape, coord_range=coord_range))
    for c, n in enumerate(shape):
        ch = out[..., c]
        others = tuple(a for a in range(len(shape)) if a != c)
        # Constant along every other axis (exactly).
        if others:
            assert np.all(np.ptp(ch, axis=others) == 0)
        # Strictly increasing along its own axis.
        line = ch[tuple(slice(None) if a == c else 0 for a in range(len(shape)))]
        assert np.all(np.diff(line) > 0)
        lo, hi = line[0], line[-1]
        if coord_range == "corners":
            assert (lo, hi) == (-1.0, 1.0)
        elif coord_range == "unit":
            assert (lo, hi) == (0.0, 1.0)
        elif coord_range == "pixels":
            assert (lo, hi) == (0.0, n - 1.0)
        else:  # centres: pixel centres strictly inside (-1, 1), symmetric
            np.testing.assert_allclose([lo, hi], [1 / n - 1, 1 - 1 / n], rtol=1e-6)
            assert -1 < lo and hi < 1
            assert lo == -hi


@pytest.mark.parametrize("coord_range", ["corners", "centers"])
@pytest.mark.parametrize("shape", [(2, 9), (6, 7, 4), (10, 3)], ids=str)
def test_symmetric_ranges_are_exactly_antisymmetric(shape, coord_range):
    g = np.asarray(cc(shape, coord_range=coord_range))
    flipped = g[tuple(slice(None, None, -1) for _ in shape)]
    np.testing.assert_array_equal(g, -flipped)


# --------------------------------------------------------------------------------------------
# Size-1 axes (taxonomy 2).
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("coord_range", RANGES)
@pytest.mark.parametrize("shape", [(1,), (1, 5), (4, 1), (3, 1, 1)], ids=str)
@pytest.mark.parametrize("normalize_r", [False, True])
def test_size_one_axes_give_centre_value(shape, coord_range, normalize_r):
    out = np.asarray(cc(shape, coord_range=coord_range, with_r=True, normalize_r=normalize_r))
    assert np.all(np.isfinite(out))
    centre = {"corners": 0.0, "centers": 0.0, "unit": 0.5, "pixels": 0.0}[coord_range]
    for c, n in enumerate(shape):
        if n == 1:
            assert np.all(out[..., c] == centre)
    assert_close(
        out,
        ref_grid(shape, with_r=True, normalize_r=normalize_r, coord_range=coord_range),
    )
    if all(n == 1 for n in shape):
        assert np.all(out[..., -1] == 0)


def test_size_one_spatial_axes_in_add_coords():
    x = jnp.ones((2, 1, 1, 3))
    out = add_coords(x, with_r=True, normalize_r=True)
    assert out.shape == (2, 1, 1, 6)
    np.testing.assert_array_equal(np.asarray(out[..., 3:]), 0)


# --------------------------------------------------------------------------------------------
# Channel order, axes subsets, position (taxonomy 4).
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("with_r", [False, True])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_xy_is_reversed_axis_order(shape, with_r):
    ij = np.asarray(cc(shape, order="ij", with_r=with_r))
    xy = np.asarray(cc(shape, order="xy", with_r=with_r))
    k = len(shape)
    np.testing.assert_array_equal(xy[..., :k], ij[..., :k][..., ::-1])
    if with_r:
        np.testing.assert_array_equal(xy[..., -1], ij[..., -1])
    assert_close(xy, ref_grid(shape, order="xy", with_r=with_r))


def test_xy_first_channel_is_columns_for_images():
    g = np.asarray(coord_channels((3, 5), order="xy"))
    # channel 0 = x = column index: varies along axis 1 only.
    np.testing.assert_array_equal(g[0, :, 0], np.float32([-1, -0.5, 0, 0.5, 1]))
    assert np.all(np.ptp(g[..., 0], axis=0) == 0)
    np.testing.assert_array_equal(g[:, 0, 1], np.float32([-1, 0, 1]))
    assert np.all(np.ptp(g[..., 1], axis=1) == 0)


@pytest.mark.parametrize(
    ("shape", "axes", "own_axes"),
    [
        ((5, 8), (0,), [0]),
        ((5, 8), (1,), [1]),
        ((5, 8), (-1,), [1]),
        ((5, 8), -2, [0]),
        ((3, 4, 6), (0, 2), [0, 2]),
        ((3, 4, 6), (2, 0), [2, 0]),
        ((3, 4, 6), (-3, -1), [0, 2]),
        ((2, 3, 4, 5), (1, -1), [1, 3]),
    ],
    ids=str,
)
@pytest.mark.parametrize("order", ["ij", "xy"])
def test_axes_subset(shape, axes, own_axes, order):
    out = np.asarray(cc(shape, axes=axes, order=order, coord_range="unit"))
    assert out.shape == (*shape, len(own_axes))
    assert out.shape[-1] == num_coord_channels(len(shape), axes=axes)
    assert_close(out, ref_grid(shape, axes=axes, order=order, coord_range="unit"))
    expected_axes = own_axes[::-1] if order == "xy" else own_axes
    for c, a in enumerate(expected_axes):
        others = tuple(b for b in range(len(shape)) if b != a)
        assert np.all(np.ptp(out[..., c], axis=others) == 0)
        assert np.ptp(out[..., c]) == 1.0


@pytest.mark.parametrize("coord_range", RANGES)
def test_radius_over_axis_subset(coord_range):
    shape = (5, 4, 7)
    out = np.asarray(cc(shape, axes=(0, 2), with_r=True, coord_range=coord_range))
    assert out.shape == (*shape, 3)
    r = out[..., -1]
    # Constant along the unselected axis 1; zero on the centre line (odd sizes 5 and 7).
    assert np.all(np.ptp(r, axis=1) == 0)
    assert np.all(r[2, :, 3] == 0)
    assert_close(out, ref_grid(shape, axes=(0, 2), with_r=True, coord_range=coord_range))
    # Single axis: r = |coordinate - centre|.
    one = np.asarray(cc((6, 3), axes=(1,), with_r=True, coord_range=coord_range))
    np.testing.assert_allclose(
        one[..., 1], np.abs(one[..., 0] - ref_centre(3, coord_range)), rtol=1e-6, atol=1e-7
    )


@pytest.mark.parametrize("position", ["append", "prepend"])
@pytest.mark.parametrize("with_r", [False, True])
def test_position_append_prepend(position, with_r):
    x = rand((2, 5, 6, 3))
    out = np.asarray(ac(x, position=position, with_r=with_r))
    d = 2 + with_r
    assert out.shape == (2, 5, 6, 3 + d)
    grid = ref_grid((5, 6), with_r=with_r)
    if position == "append":
        xs, cs = out[..., :3], out[..., 3:]
    else:
        cs, xs = out[..., :d], out[..., d:]
    np.testing.assert_array_equal(xs, np.asarray(x))
    assert_close(cs, np.broadcast_to(grid, (2, *grid.shape)))


def test_num_coord_channels_matches_output():
    for k, with_r, axes in itertools.product([1, 2, 3], [False, True], [None, (0,), (-1,)]):
        shape = (3, 4, 5)[:k]
        n = num_coord_channels(k, with_r=with_r, axes=axes)
        assert n == (k if axes is None else 1) + with_r
        x = jax.ShapeDtypeStruct((2, *shape, 3), jnp.float32)
        kw = dict(with_r=with_r, axes=axes)
        assert jax.eval_shape(partial(coord_channels, shape, **kw)).shape[-1] == n
        assert jax.eval_shape(partial(add_coords, spatial_ndim=k, **kw), x).shape[-1] == 3 + n


# --------------------------------------------------------------------------------------------
# Radius (taxonomy 3).
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("coord_range", RANGES)
@pytest.mark.parametrize("shape", [(7,), (5, 9), (3, 5, 7), (4, 6), (4, 5), (2, 3, 4, 5)], ids=str)
def test_radius_centred(shape, coord_range):
    g = np.asarray(cc(shape, with_r=True, coord_range=coord_range))
    r = g[..., -1]
    assert np.all(r >= 0)
    assert_close(g, ref_grid(shape, with_r=True, coord_range=coord_range))
    # Mirror-symmetric about the grid centre along every axis, to the last bit.
    for a in range(len(shape)):
        np.testing.assert_array_equal(r, np.flip(r, axis=a))
    # The minimum lies exactly on the central cell(s): 1 cell per odd axis, 2 per even axis.
    central = [{(n - 1) // 2, n // 2} for n in shape]
    argmins = set(zip(*np.nonzero(r == r.min()), strict=True))
    assert argmins == set(itertools.product(*central))
    if all(n % 2 == 1 for n in shape):
        assert r[tuple(n // 2 for n in shape)] == 0.0
        assert r.min() == 0.0
    else:
        assert r.min() > 0
    # The maximum lies on the grid's corners.
    corners = set(itertools.product(*[{0, n - 1} for n in shape]))
    assert set(zip(*np.nonzero(r == r.max()), strict=True)) == corners


@pytest.mark.parametrize("coord_range", RANGES)
@pytest.mark.parametrize(
    "shape", [(2, 2), (2,), (5, 8), (3, 4, 6), (1, 7), (9, 9), (2, 3, 4, 5)], ids=str
)
def test_normalize_r_in_unit_interval_with_max_exactly_one(shape, coord_range):
    g = np.asarray(cc(shape, with_r=True, normalize_r=True, coord_range=coord_range))
    r = g[..., -1]
    assert r.min() >= 0 and r.max() == 1.0
    corners = set(itertools.product(*[{0, n - 1} for n in shape]))
    assert set(zip(*np.nonzero(r == 1.0), strict=True)) == corners
    assert_close(g, ref_grid(shape, with_r=True, normalize_r=True, coord_range=coord_range))
    # Normalising only rescales the radius; the coordinate channels are unchanged.
    raw = np.asarray(cc(shape, with_r=True, coord_range=coord_range))
    np.testing.assert_array_equal(g[..., :-1], raw[..., :-1])


@pytest.mark.parametrize("shape", [(2, 2), (5, 8), (3, 4, 6)], ids=str)
def test_normalize_r_max_exactly_one_eager(shape):
    """Regression: dividing by the analytic bound gave a maximum of 0.99999994."""
    r = np.asarray(coord_channels(shape, with_r=True, normalize_r=True))[..., -1]
    assert r.max() == 1.0 and r.min() >= 0


def test_radius_paper_values():
    """Corners range: r = sqrt(i^2 + j^2) of the [-1, 1] coordinates (paper, section 3)."""
    g = np.asarray(coord_channels((3, 3), with_r=True))
    s2 = np.float32(np.sqrt(2))
    np.testing.assert_allclose(g[..., 2], [[s2, 1, s2], [1, 0, 1], [s2, 1, s2]], rtol=1e-7, atol=0)
    np.testing.assert_array_equal(
        np.asarray(coord_channels((3, 3), with_r=True, normalize_r=True))[[0, 1], [0, 1], 2],
        [1.0, 0.0],
    )


# --------------------------------------------------------------------------------------------
# add_coords: batch dims, channels preserved, dtypes (taxonomy 6, 9).
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("batch", "spatial"),
    [
        ((), (6,)),
        ((), (5, 7)),
        ((3,), (5, 7)),
        ((2, 3), (5, 7)),
        ((1,), (5, 7)),
        ((2,), (3, 4, 5)),
        ((2, 1, 2), (9,)),
        ((), (2, 3, 4, 5)),
    ],
    ids=str,
)
def test_add_coords_batch_dims(batch, spatial):
    c = 3
    x = rand((*batch, *spatial, c))
    kw = dict(spatial_ndim=len(spatial), with_r=True, coord_range="centers", order="xy")
    out = ac(x, **kw)
    d = len(spatial) + 1
    assert out.shape == (*batch, *spatial, c + d)
    assert out.dtype == x.dtype
    np.testing.assert_array_equal(np.asarray(out[..., :c]), np.asarray(x))
    grid = ref_grid(spatial, with_r=True, coord_range="centers", order="xy")
    assert_close(out[..., c:], np.broadcast_to(grid, (*batch, *grid.shape)))


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=lambda d: jnp.dtype(d).name)
def test_output_dtype_follows_input(dtype):
    x = rand((2, 16, 24, 3), dtype)
    out = ac(x, with_r=True, coord_range="unit")
    assert out.dtype == dtype
    np.testing.assert_array_equal(
        np.asarray(out[..., :3]).view(np.uint16 if dtype != jnp.float32 else np.uint32),
        np.asarray(x).view(np.uint16 if dtype != jnp.float32 else np.uint32),
    )
    # Linear channels: computed in float32, then cast (bit-identical to casting the f32 reference).
    ref = ref_grid((16, 24), with_r=True, coord_range="unit")
    lin = ref[..., :2].astype(np.float32)
    np.testing.assert_array_equal(
        out[0, ..., 3:5].astype(np.float32),
        lin.astype(np.dtype(dtype)).astype(np.float32),
    )
    eps = float(jnp.finfo(dtype).eps)
    assert_close(out[1, ..., 3:], ref, rtol=eps, atol=eps)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=lambda d: jnp.dtype(d).name)
def test_coord_channels_dtype(dtype):
    g = cc((4, 5), with_r=True, dtype=dtype)
    assert g.dtype == dtype
    eps = float(jnp.finfo(dtype).eps)
    assert_close(g, ref_grid((4, 5), with_r=True), rtol=eps, atol=eps)


def test_explicit_dtype_override_keeps_float32_coordinates():
    """Regression: dtype= on a bf16 input raised TypePromotionError under strict promotion."""
    x = rand((2, 300, 3), jnp.bfloat16)
    out = add_coords(x, spatial_ndim=1, dtype=jnp.float32)
    assert out.dtype == jnp.float32
    out = np.asarray(out)
    np.testing.assert_array_equal(out[..., :3], np.asarray(x).astype(np.float32))
    coords = np.asarray(out[0, :, 3])
    np.testing.assert_array_equal(coords, ref_axis(300, "corners").astype(np.float32))
    assert np.unique(coords).size == 300


def test_explicit_low_precision_dtype_on_float32_input():
    x = rand((6, 7, 2))
    out = ac(x, dtype=jnp.bfloat16, coord_range="unit")
    assert out.dtype == jnp.float32  # the concatenation promotes bf16 coordinates to f32
    np.testing.assert_array_equal(np.asarray(out[..., :2]), np.asarray(x))
    expected = ref_grid((6, 7), coord_range="unit").astype(np.float32)
    np.testing.assert_array_equal(
        out[..., 2:], expected.astype(np.dtype(jnp.bfloat16)).astype(np.float32)
    )


def test_numpy_input_follows_canonical_dtype():
    """Regression: a NumPy float64 input used to request float64 coordinates (x64 disabled)."""
    x = np.arange(4 * 5 * 2, dtype=np.float64).reshape(4, 5, 2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = add_coords(x)
    assert out.dtype == jnp.asarray(x).dtype
    np.testing.assert_array_equal(np.asarray(out[..., :2]), x)
    assert_close(out[..., 2:], ref_grid((4, 5)))
    out32 = add_coords(x.astype(np.float32), with_r=True)
    assert out32.dtype == jnp.float32


def test_bf16_precision_warning_on_wide_axis():
    x = jnp.zeros((2, 1024, 3), jnp.bfloat16)
    with pytest.warns(coordjax.CoordinatePrecisionWarning, match="1024"):
        out = add_coords(x, spatial_ndim=1)
    assert out.dtype == jnp.bfloat16
    with pytest.warns(coordjax.CoordinatePrecisionWarning, match="dtype=jnp.float32"):
        coord_channels((8, 1024), dtype=jnp.bfloat16)
    assert issubclass(coordjax.CoordinatePrecisionWarning, UserWarning)


def test_no_precision_warning_when_resolvable():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        add_coords(jnp.zeros((2, 64, 64, 3), jnp.bfloat16), with_r=True)
        add_coords(jnp.zeros((1024, 3), jnp.bfloat16), spatial_ndim=1, dtype=jnp.float32)
        add_coords(jnp.zeros((1024, 3), jnp.float32), spatial_ndim=1)
        coord_channels((200, 3), coord_range="pixels", dtype=jnp.bfloat16)


@pytest.mark.parametrize("dtype", [jnp.int32, jnp.uint8, jnp.bool_], ids=str)
def test_non_float_input_raises(dtype):
    with pytest.raises(TypeError, match="x must have a floating dtype"):
        add_coords(jnp.zeros((4, 5, 3), dtype))


# --------------------------------------------------------------------------------------------
# Transformations (taxonomy 9).
# --------------------------------------------------------------------------------------------


def test_jit_matches_eager():
    x = rand((2, 5, 6, 3))
    kw = dict(with_r=True, normalize_r=True, order="xy", coord_range="centers")
    jitted = jax.jit(partial(add_coords, **kw))
    np.testing.assert_array_equal(np.asarray(jitted(x)), np.asarray(add_coords(x, **kw)))
    static = jax.jit(add_coords, static_argnames=("spatial_ndim", "with_r", "coord_range"))
    out = static(x[0, :, 0], spatial_ndim=1, with_r=True, coord_range="pixels")
    assert out.shape == (5, 3 + 2)
    assert_close(np.asarray(out)[..., 3:], ref_grid((5,), with_r=True, coord_range="pixels"))
    assert_close(
        jax.jit(partial(coord_channels, (4, 7), with_r=True))(),
        ref_grid((4, 7), with_r=True),
    )


def test_vmap_matches_batched():
    x = rand((3, 2, 5, 6, 4))
    fn = partial(add_coords, with_r=True, axes=(-1,))
    direct = np.asarray(jax.jit(fn)(x))
    assert direct.shape == (3, 2, 5, 6, 4 + 2)
    once = jax.jit(jax.vmap(fn))(x)
    twice = jax.jit(jax.vmap(jax.vmap(fn)))(x)
    np.testing.assert_array_equal(np.asarray(once), direct)
    np.testing.assert_array_equal(np.asarray(twice), direct)
    # vmap over a non-leading axis.
    moved = jax.jit(jax.vmap(fn, in_axes=1, out_axes=1))(x)
    np.testing.assert_array_equal(np.asarray(moved), direct)
    # Unjitted vmap of the 2-D case (spatial dims only inside the vmapped function).
    x2 = rand((3, 5, 6, 4))
    eager = np.asarray(jax.vmap(partial(add_coords, coord_range="pixels"))(x2))
    np.testing.assert_array_equal(eager[..., :4], np.asarray(x2))
    grid = ref_grid((5, 6), coord_range="pixels")
    assert_close(eager[..., 4:], np.broadcast_to(grid, (3, *grid.shape)))


@pytest.mark.parametrize("position", ["append", "prepend"])
def test_grad_through_add_coords(position):
    x = rand((2, 4, 5, 3))

    def loss(x):
        return jnp.sum(add_coords(x, with_r=True, normalize_r=True, position=position))

    g = jax.jit(jax.grad(loss))(x)
    assert g.shape == x.shape and g.dtype == x.dtype
    np.testing.assert_array_equal(np.asarray(g), np.ones(x.shape, np.float32))
    # A weighted loss: the gradient flows only through the input channels.
    w = rand((2, 4, 5, 6))
    gw = jax.jit(jax.grad(lambda x: jnp.sum(w * add_coords(x, with_r=True, position=position))))(x)
    w = np.asarray(w)
    expected = w[..., :3] if position == "append" else w[..., 3:]
    np.testing.assert_array_equal(np.asarray(gw), expected)


def test_grad_eager():
    x = rand((4, 5, 3))
    g = jax.grad(lambda x: jnp.sum(add_coords(x, with_r=True)))(x)
    np.testing.assert_array_equal(np.asarray(g), np.ones(x.shape, np.float32))


def test_no_retrace_on_second_call():
    traces = []

    @jax.jit
    def f(x):
        traces.append(x.shape)
        return add_coords(x, with_r=True)

    x1 = rand((2, 5, 6, 3))
    x2 = rand((2, 5, 6, 3))
    f(x1)
    out2 = f(x2)
    assert len(traces) == 1
    np.testing.assert_array_equal(np.asarray(out2)[..., :3], np.asarray(x2))
    f(jnp.zeros((2, 5, 7, 3)))  # a new static shape retraces, once
    f(jnp.ones((2, 5, 7, 3)))
    assert len(traces) == 2


# --------------------------------------------------------------------------------------------
# Property tests against the reference.
# --------------------------------------------------------------------------------------------


@st.composite
def configs(draw):
    k = draw(st.integers(1, 4))
    shape = tuple(draw(st.lists(st.integers(1, 9), min_size=k, max_size=k)))
    batch = tuple(draw(st.lists(st.integers(1, 3), min_size=0, max_size=2)))
    if draw(st.booleans()):
        axes = None
    else:
        chosen = draw(st.lists(st.integers(0, k - 1), min_size=1, max_size=k, unique=True))
        negate = draw(st.lists(st.booleans(), min_size=len(chosen), max_size=len(chosen)))
        axes = tuple(a - k if neg else a for a, neg in zip(chosen, negate, strict=True))
    kw = dict(
        with_r=draw(st.booleans()),
        normalize_r=draw(st.booleans()),
        order=draw(st.sampled_from(["ij", "xy"])),
        coord_range=draw(st.sampled_from(RANGES)),
        axes=axes,
    )
    position = draw(st.sampled_from(["append", "prepend"]))
    channels = draw(st.integers(1, 3))
    return shape, batch, kw, position, channels


@settings(max_examples=40, deadline=None)
@given(configs())
def test_property_add_coords_matches_reference(cfg):
    shape, batch, kw, position, c = cfg
    x = jnp.arange(np.prod((*batch, *shape, c)), dtype=jnp.float32).reshape(*batch, *shape, c)
    out = np.asarray(ac(x, spatial_ndim=len(shape), position=position, **kw))
    ref = ref_grid(shape, **kw)
    d = ref.shape[-1]
    assert d == num_coord_channels(len(shape), with_r=kw["with_r"], axes=kw["axes"])
    assert out.shape == (*batch, *shape, c + d)
    xs, cs = (out[..., :c], out[..., c:]) if position == "append" else (out[..., d:], out[..., :d])
    np.testing.assert_array_equal(xs, np.asarray(x))
    assert_close(cs, np.broadcast_to(ref, (*batch, *ref.shape)))
    if kw["with_r"]:
        r = cs[..., -1]
        assert np.all(r >= 0)
        for a in range(len(batch), len(batch) + len(shape)):
            np.testing.assert_array_equal(r, np.flip(r, axis=a))
        if kw["normalize_r"]:
            assert r.max() <= 1.0
            if ref[..., -1].max() > 0:
                assert r.max() == 1.0


# --------------------------------------------------------------------------------------------
# Errors: each names the offending parameter.
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("shape", "spatial_ndim"), [((4, 5), 2), ((4,), 1), ((3, 4, 5), 3), ((7,), 2)]
)
def test_error_no_spatial_dims(shape, spatial_ndim):
    with pytest.raises(ValueError, match="spatial_ndim") as info:
        add_coords(jnp.zeros(shape), spatial_ndim=spatial_ndim)
    assert "x must have shape" in str(info.value)
    assert str(shape) in str(info.value)


@pytest.mark.parametrize("spatial_ndim", [0, -1, 1.5, "2"])
def test_error_spatial_ndim(spatial_ndim):
    with pytest.raises(ValueError, match="spatial_ndim"):
        add_coords(jnp.zeros((2, 4, 5, 3)), spatial_ndim=spatial_ndim)


@pytest.mark.parametrize("x", [[[1.0, 2.0]], 3.0, (np.zeros((2, 2, 1)),)], ids=str)
def test_error_non_array_x(x):
    with pytest.raises(TypeError, match="x must be a jax or numpy array"):
        add_coords(x)


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        (dict(order="yx"), "order"),
        (dict(order="IJ"), "order"),
        (dict(coord_range="corner"), "coord_range"),
        (dict(coord_range=None), "coord_range"),
        (dict(position="middle"), "position"),
    ],
    ids=str,
)
def test_error_unknown_choice(kwargs, param):
    x = jnp.zeros((4, 5, 3))
    with pytest.raises(ValueError, match=param):
        add_coords(x, **kwargs)
    if param != "position":
        with pytest.raises(ValueError, match=param):
            coord_channels((4, 5), **kwargs)


@pytest.mark.parametrize(
    "axes",
    [(2,), (-3,), (0, 5), (0, 0), (1, -1), (), []],
    ids=str,
)
def test_error_bad_axes(axes):
    with pytest.raises(ValueError, match="axes"):
        add_coords(jnp.zeros((4, 5, 3)), axes=axes)
    with pytest.raises(ValueError, match="axes"):
        coord_channels((4, 5), axes=axes)
    with pytest.raises(ValueError, match="axes"):
        num_coord_channels(2, axes=axes)


@pytest.mark.parametrize("axes", [(0.5,), ("0",), (True,)], ids=str)
def test_error_non_integer_axes(axes):
    with pytest.raises(TypeError, match="axes"):
        add_coords(jnp.zeros((4, 5, 3)), axes=axes)


@pytest.mark.parametrize("dtype", [jnp.int32, jnp.uint8, jnp.bool_, jnp.complex64], ids=str)
def test_error_non_float_dtype(dtype):
    with pytest.raises(TypeError, match="dtype"):
        add_coords(jnp.zeros((4, 5, 3)), dtype=dtype)
    with pytest.raises(TypeError, match="dtype"):
        coord_channels((4, 5), dtype=dtype)


@pytest.mark.parametrize("spatial_shape", [(), (0, 3), (4, -1)], ids=str)
def test_error_bad_spatial_shape(spatial_shape):
    with pytest.raises(ValueError, match="spatial_shape"):
        coord_channels(spatial_shape)

"""Coordinate channels as pure functions: the core of CoordConv.

Liu et al. 2018 (arXiv:1807.03247, section 3) give a convolution access to its own input
coordinates by concatenating one channel per spatial axis, each a linear ramp scaled to [-1, 1],
and optionally a radius channel. Everything here is channels-last and works for any number of
spatial dimensions through one code path.

Conventions:
  * Channel order ``"ij"`` (default, the paper's): the first channel indexes the first spatial axis
    (rows), the second channel the second axis (columns), and so on. ``"xy"`` reverses the axis
    order, which for 2-D images gives the reference code's column-first order.
  * Ranges, per axis of size ``n`` and index ``i``:
      ``"corners"`` ``2*i/(n-1) - 1`` in [-1, 1] (default); ``"centers"`` ``(2*i+1)/n - 1``, pixel
      centres in (-1, 1); ``"unit"`` ``i/(n-1)`` in [0, 1]; ``"pixels"`` ``i``. A size-1 axis gives
      the centre value of its range (0 for "corners"/"centers"), never NaN.
  * Radius: Euclidean distance from the grid centre in the chosen units, zero at the centre of an
    odd-sized grid; ``normalize_r=True`` divides by its largest value so it lies in [0, 1].
  * Coordinates are computed in float32 and cast to the input's dtype. When that dtype cannot tell
    two neighbouring coordinates apart (bf16 on grids wider than a few hundred pixels), a
    ``CoordinatePrecisionWarning`` is raised at trace time; pass ``dtype=jnp.float32`` to keep
    float32 coordinates (the output then follows the usual promotion of the concatenation).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np

from coordjax._checks import check_choice as _check_choice
from coordjax._checks import is_int as _is_int
from coordjax._checks import positive_int as _positive_int

Order = Literal["ij", "xy"]
Range = Literal["corners", "centers", "unit", "pixels"]
Position = Literal["append", "prepend"]

ORDERS = ("ij", "xy")
RANGES = ("corners", "centers", "unit", "pixels")
POSITIONS = ("append", "prepend")


class CoordinatePrecisionWarning(UserWarning):
    """The output dtype cannot represent every distinct coordinate of the grid."""


def _check_flag(name: str, value) -> None:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False; got {value!r}")


def _normalise_axes(axes: Sequence[int] | None, spatial_ndim: int) -> tuple[int, ...]:
    if axes is None:
        return tuple(range(spatial_ndim))
    if _is_int(axes):
        axes = (axes,)
    if isinstance(axes, (str, bytes)) or not hasattr(axes, "__iter__"):
        raise TypeError(f"axes must be an int or a sequence of ints; got {axes!r}")
    out = []
    for a in axes:
        if not _is_int(a):
            raise TypeError(f"axes must be integers indexing the spatial axes; got {axes!r}")
        if not -spatial_ndim <= a < spatial_ndim:
            raise ValueError(
                f"axes entry {a} is out of range for {spatial_ndim} spatial dimension(s); "
                f"allowed: {-spatial_ndim}..{spatial_ndim - 1}"
            )
        out.append(int(a) % spatial_ndim)
    if len(set(out)) != len(out):
        raise ValueError(f"axes must not repeat an axis; got {axes!r}")
    if not out:
        raise ValueError("axes must name at least one spatial axis; got an empty sequence")
    return tuple(out)


def _ramp(n: int, coord_range: str) -> tuple[np.ndarray, np.ndarray, float]:
    """1-D float32 coordinates of an axis of size n, their offsets from the axis centre (float32)
    and the largest offset.

    Built with NumPy: sizes are static, so the ramp is a small trace-time constant (also under
    jit) that XLA broadcasts to the grid. The offsets are ``(2*i - (n-1)) / denominator``: an exact
    integer numerator, so they are exactly antisymmetric (the radius is mirror-symmetric to the
    last bit) and exactly 0 at the centre of an odd-sized axis, whatever the range.
    """
    i = np.arange(n, dtype=np.float64)
    twice = 2 * i - (n - 1)  # 2 * (i - centre index), exact
    if coord_range == "pixels":
        ramp, offset, reach = i, twice / 2, (n - 1) / 2
    elif coord_range == "centers":
        ramp, offset, reach = (2 * i + 1) / n - 1, twice / n, 1 - 1 / n
    # Corner-aligned ranges divide by n - 1; a single sample sits at the centre of the range.
    elif coord_range == "corners":
        ramp = 2 * i / (n - 1) - 1 if n > 1 else np.zeros(1)
        offset = twice / (n - 1) if n > 1 else np.zeros(1)
        reach = 1.0 if n > 1 else 0.0
    else:
        ramp = i / (n - 1) if n > 1 else np.full(1, 0.5)
        offset = twice / (2 * (n - 1)) if n > 1 else np.zeros(1)
        reach = 0.5 if n > 1 else 0.0
    return ramp.astype(np.float32), offset.astype(np.float32), reach


def num_coord_channels(spatial_ndim: int, *, with_r: bool = False, axes=None) -> int:
    """Number of channels ``add_coords`` adds: one per selected axis, plus one for the radius."""
    _check_flag("with_r", with_r)
    return len(_normalise_axes(axes, spatial_ndim)) + int(bool(with_r))


def _iterable(value) -> tuple:
    try:
        return tuple(value)
    except TypeError:
        return (None,)  # not a sequence: refused by the caller


def coord_channels(
    spatial_shape: Sequence[int],
    *,
    with_r: bool = False,
    normalize_r: bool = False,
    order: Order = "ij",
    coord_range: Range = "corners",
    axes: Sequence[int] | None = None,
    dtype=jnp.float32,
) -> jax.Array:
    """The coordinate grid of a spatial shape.

    Args:
      spatial_shape: ``(n_0, ..., n_{k-1})``, k >= 1 positive static sizes.
      with_r: append a radius channel, the distance from the grid centre.
      normalize_r: scale the radius to [0, 1] by its largest value on the grid.
      order: ``"ij"`` (first spatial axis first, the paper's) or ``"xy"`` (reversed axis order,
        the reference code's column-first order for images).
      coord_range: ``"corners"``, ``"centers"``, ``"unit"`` or ``"pixels"`` (module docstring).
      axes: which spatial axes get a channel (default: all); the radius uses the same axes.
      dtype: dtype of the result; values are computed in float32 first.

    Returns:
      ``(*spatial_shape, d)`` with ``d = len(axes) + with_r``; channel ``c`` varies along its own
      axis only and is constant along the others.

    >>> coord_channels((3, 2))[..., 0].tolist()
    [[-1.0, -1.0], [0.0, 0.0], [1.0, 1.0]]
    """
    if _is_int(spatial_shape):
        spatial_shape = (spatial_shape,)
    if isinstance(spatial_shape, (str, bytes)) or not all(
        _is_int(n) for n in _iterable(spatial_shape)
    ):
        raise TypeError(f"spatial_shape must be a sequence of static ints; got {spatial_shape!r}")
    shape = tuple(int(n) for n in spatial_shape)
    _check_flag("with_r", with_r)
    _check_flag("normalize_r", normalize_r)
    if not shape:
        raise ValueError("spatial_shape must have at least one spatial dimension; got ()")
    if any(n < 1 for n in shape):
        raise ValueError(f"spatial_shape sizes must be >= 1; got {shape}")
    _check_choice("order", order, ORDERS)
    _check_choice("coord_range", coord_range, RANGES)
    selected = _normalise_axes(axes, len(shape))
    if order == "xy":
        selected = tuple(reversed(selected))

    channels, centred_sq = [], []
    max_sq = 0.0
    for axis in selected:
        ramp, offset, reach = _ramp(shape[axis], coord_range)
        view = [1] * len(shape)
        view[axis] = shape[axis]
        channels.append(jnp.broadcast_to(jnp.asarray(ramp).reshape(view), shape))
        centred_sq.append(jnp.asarray(np.square(offset).reshape(view)))
        max_sq += reach**2
    if with_r:
        r = jnp.sqrt(jnp.broadcast_to(sum(centred_sq[1:], centred_sq[0]), shape))
        if normalize_r:
            if max_sq > 0:
                # Divide by the largest value itself. XLA's division is not correctly rounded on
                # every backend (on CPU r / r can be 0.99999994), so the maximum is set to exactly
                # 1 and the rest clipped to [0, 1].
                r_max = jnp.max(r)
                r = jnp.where(r < r_max, jnp.minimum(r / r_max, 1), 1)
            else:
                r = jnp.zeros_like(r)
        channels.append(r)
    _warn_if_unresolvable(shape, selected, coord_range, dtype)
    return jnp.stack(channels, axis=-1).astype(dtype)


def _warn_if_unresolvable(shape, selected, coord_range, dtype) -> None:
    try:
        dtype = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"dtype must be a floating dtype; got {dtype!r}") from None
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(f"dtype must be a floating dtype; got {dtype}")
    if dtype.itemsize >= 4:
        return
    for axis in selected:
        ramp = _ramp(shape[axis], coord_range)[0]
        if np.unique(ramp.astype(dtype)).size < ramp.size:
            warnings.warn(
                f"{dtype} cannot distinguish all {shape[axis]} coordinates of spatial axis {axis} "
                f"(coord_range={coord_range!r}); pass dtype=jnp.float32 to keep float32 "
                "coordinates.",
                CoordinatePrecisionWarning,
                stacklevel=3,
            )


def add_coords(
    x: jax.Array,
    *,
    spatial_ndim: int = 2,
    with_r: bool = False,
    normalize_r: bool = False,
    order: Order = "ij",
    coord_range: Range = "corners",
    axes: Sequence[int] | None = None,
    position: Position = "append",
    dtype=None,
) -> jax.Array:
    """Concatenates coordinate channels to a channels-last array.

    Args:
      x: ``(*batch, *spatial, C)``: any number of leading batch dims (or none), then
        ``spatial_ndim`` spatial dims, then channels. Floating dtype.
      spatial_ndim: number of spatial dims (1 for sequences, 2 for images, 3 for volumes, ...).
      with_r, normalize_r, order, coord_range, axes: as in :func:`coord_channels`.
      position: ``"append"`` (after the input channels, default) or ``"prepend"``.
      dtype: dtype of the coordinate channels; default ``x.dtype``.

    Returns:
      ``(*batch, *spatial, C + d)`` (or ``d + C`` when prepended). The grid is built once and
      broadcast over the batch dims, not computed per example.

    >>> add_coords(jnp.zeros((8, 64, 64, 3))).shape
    (8, 64, 64, 5)
    """
    if not isinstance(x, (jax.Array, np.ndarray)):
        raise TypeError(f"x must be a jax or numpy array; got {type(x).__name__}")
    _positive_int("spatial_ndim", spatial_ndim)
    if x.ndim < spatial_ndim + 1:
        raise ValueError(
            f"x must have shape (*batch, *spatial, C) with spatial_ndim={spatial_ndim} spatial "
            f"dim(s), i.e. rank >= {spatial_ndim + 1}; got shape {tuple(x.shape)}"
        )
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(f"x must have a floating dtype; got {x.dtype}")
    _check_choice("position", position, POSITIONS)
    # A NumPy array (float64 by default) becomes a JAX array of the canonical dtype (float32
    # unless x64 is enabled) before its dtype is used, as jnp.concatenate would do anyway.
    x = jnp.asarray(x)
    spatial = tuple(x.shape[x.ndim - 1 - spatial_ndim : x.ndim - 1])
    grid = coord_channels(
        spatial,
        with_r=with_r,
        normalize_r=normalize_r,
        order=order,
        coord_range=coord_range,
        axes=axes,
        dtype=x.dtype if dtype is None else dtype,
    )
    grid = jnp.broadcast_to(grid, (*x.shape[:-1], grid.shape[-1]))
    if grid.dtype != x.dtype:
        # The caller asked for this dtype explicitly: promote by the standard lattice, also
        # under jax_numpy_dtype_promotion="strict".
        with jax.numpy_dtype_promotion("standard"):
            out_dtype = jnp.promote_types(x.dtype, grid.dtype)
        x = x.astype(out_dtype)
        grid = grid.astype(x.dtype)
    parts = (x, grid) if position == "append" else (grid, x)
    return jnp.concatenate(parts, axis=-1)

"""CoordConv layers for ``flax.linen``: ``AddCoords``, ``CoordConv``, ``CoordConvTranspose``.

A CoordConv (Liu et al. 2018, section 3) is a convolution over the input with coordinate channels
concatenated (:func:`coordjax.add_coords`). The layers here take the same arguments as Flax's
``Conv`` / ``ConvTranspose`` plus the coordinate options of :func:`coordjax.add_coords`, and two
ways to hold the coordinate weights (``coord_weights``):

``"concat"`` (default, the paper's layer)
  One kernel ``(*k, C + d, C')`` over ``add_coords(x)``: exactly ``Conv(add_coords(x))``.
  Parameters ``{"kernel", "bias"}``; count ``(C + d)·C'·prod(k) + C'``.
``"split"`` (the paper's footnote 4)
  A ``k``-sized convolution of the data plus a 1×1 convolution of the coordinate channels, summed.
  The 1×1 term is evaluated at the same output positions as the data term: the layer equals the
  concat layer whose coordinate kernel is zero except at tap ``(k - 1) // 2`` of every spatial
  axis (the centre for odd ``k``), for every stride, padding and dilation. Parameters
  ``{"kernel" (*k, C, C'), "coord_kernel" (1, ..., 1, d, C'), "bias"}``; count
  ``C·C'·prod(k) + d·C' + C'``.

Both variants are computed as ``conv(x, data kernel) + conv(grid, coordinate kernel) + bias``:
convolution is linear in its input, and the coordinate grid is the same for every example, so
its term is computed once per call on the ``(*spatial, d)`` grid and broadcast over the batch
(never concatenated per example). The convolutions themselves are Flax's own ``Conv`` and
``ConvTranspose``, applied functionally, so strides, paddings (``"SAME"``, ``"VALID"``,
explicit, ``"CIRCULAR"``, ``"REFLECT"``, ``"CAUSAL"``) and dilations mean exactly what they mean
in Flax. The coordinates are computed in float32 and cast to the layer's compute dtype (``dtype``,
or what ``promote_dtype`` makes of the input and parameter dtypes).

With ``feature_group_count = g > 1`` the data term is a grouped convolution (kernel in-channels
``C / g``) and every output channel also sees all ``d`` coordinate channels; the concat kernel is
then ``(*k, C / g + d, C')``. (This is not ``Conv(add_coords(x))`` with groups, which would hand
different coordinates to different groups.)

This module also holds the framework-free machinery shared with :mod:`coordjax.nnx`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn
from flax.linen.dtypes import promote_dtype as _promote_dtype
from flax.typing import Array, Dtype, Initializer, PaddingLike, PrecisionLike

from coordjax import conv as _lowering
from coordjax.coords import (
    ORDERS,
    POSITIONS,
    RANGES,
    Order,
    Position,
    Range,
    add_coords,
    coord_channels,
    num_coord_channels,
)

__all__ = [
    "COORD_WEIGHTS",
    "AddCoords",
    "Conv",
    "ConvTranspose",
    "CoordConv",
    "CoordConvTranspose",
    "CoordWeights",
    "retrofit_conv_params",
]

CoordWeights = Literal["concat", "split"]
COORD_WEIGHTS = ("concat", "split")

default_kernel_init = nn.initializers.lecun_normal()
default_bias_init = nn.initializers.zeros_init()


# --------------------------------------------------------------------------------------------
# Framework-free machinery (shared with coordjax.nnx)
# --------------------------------------------------------------------------------------------


def _check_choice(name: str, value, allowed: Sequence[str]) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {list(allowed)}; got {value!r}")


def _canonical_kernel_size(kernel_size) -> tuple[int, ...]:
    if isinstance(kernel_size, (int, np.integer)) and not isinstance(kernel_size, bool):
        kernel_size = (kernel_size,)
    try:
        ks = tuple(kernel_size)
    except TypeError as err:
        raise TypeError(
            f"kernel_size must be an int or a sequence of ints; got {kernel_size!r}"
        ) from err
    if not ks or not all(
        isinstance(k, (int, np.integer)) and not isinstance(k, bool) and k >= 1 for k in ks
    ):
        raise ValueError(
            "kernel_size must be a positive int or a non-empty sequence of positive ints (one per "
            f"spatial dimension); got {kernel_size!r}"
        )
    return tuple(int(k) for k in ks)


@dataclasses.dataclass(frozen=True)
class _Spec:
    """Validated, framework-free description of a CoordConv / CoordConvTranspose layer."""

    transpose: bool
    features: int
    kernel_size: tuple[int, ...]
    num_coords: int
    coord_weights: str
    position: str
    coord_options: tuple[tuple[str, Any], ...]  # keyword arguments of coord_channels
    conv_options: tuple[tuple[str, Any], ...]  # keyword arguments of flax's Conv/ConvTranspose
    feature_group_count: int
    transpose_kernel: bool
    lowering: str = "auto"
    tile_shape: tuple[int, ...] | None = None
    dense_kernel: bool = False

    @property
    def spatial_ndim(self) -> int:
        return len(self.kernel_size)

    @property
    def in_axis(self) -> int:
        """Axis of the kernel that indexes input channels."""
        return -1 if self.transpose_kernel else -2

    def kernel_shape(self, n_in: int, spatial: tuple[int, ...] | None = None) -> tuple[int, ...]:
        spatial = self.kernel_size if spatial is None else spatial
        if self.dense_kernel:
            spatial = ()  # a 1x1 kernel stored as (C_in, C_out)
        if self.transpose_kernel:
            return (*spatial, self.features, n_in)
        return (*spatial, n_in, self.features)


def _check_window(name: str, value, ndim: int) -> None:
    """strides / dilations: None, a positive int, or one positive int per spatial axis."""
    if value is None or (isinstance(value, (int, np.integer)) and not isinstance(value, bool)
                         and value >= 1):  # fmt: skip
        return
    values = tuple(value) if isinstance(value, Sequence) else None
    if (
        values is None
        or len(values) != ndim
        or not all(
            isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= 1 for v in values
        )
    ):
        raise ValueError(
            f"{name} must be a positive int or {ndim} positive ints (one per spatial axis of "
            f"kernel_size); got {value!r}"
        )


def _make_spec(
    *,
    transpose: bool,
    features,
    kernel_size,
    with_r,
    normalize_r,
    order,
    coord_range,
    axes,
    position,
    coord_weights,
    zero_init_coords,
    coord_kernel_init,
    feature_group_count=1,
    transpose_kernel=False,
    conv_options: Mapping[str, Any],
    lowering="auto",
    tile_shape=None,
    dense_kernel=False,
) -> _Spec:
    """Validates a layer's arguments; every error names the offending argument."""
    if not isinstance(features, (int, np.integer)) or isinstance(features, bool) or features < 1:
        raise ValueError(f"features must be a positive int; got {features!r}")
    ks = _canonical_kernel_size(kernel_size)
    for name in ("strides", "input_dilation", "kernel_dilation"):
        _check_window(name, conv_options.get(name), len(ks))
    _check_choice("coord_weights", coord_weights, COORD_WEIGHTS)
    _check_choice("order", order, ORDERS)
    _check_choice("coord_range", coord_range, RANGES)
    _check_choice("position", position, POSITIONS)
    if isinstance(axes, (int, np.integer)):
        axes = (axes,)
    d = num_coord_channels(len(ks), with_r=with_r, axes=axes)  # validates axes
    if (
        not isinstance(feature_group_count, (int, np.integer))
        or isinstance(feature_group_count, bool)
        or feature_group_count < 1
    ):
        raise ValueError(f"feature_group_count must be a positive int; got {feature_group_count!r}")
    if features % feature_group_count:
        raise ValueError(
            f"feature_group_count={feature_group_count} must divide features={features}"
        )
    if zero_init_coords and coord_kernel_init is not None:
        raise ValueError(
            "zero_init_coords=True and coord_kernel_init are mutually exclusive: "
            "zero_init_coords=True means coord_kernel_init=zeros"
        )
    _check_choice("lowering", lowering, _lowering.LOWERINGS)
    pointwise = all(k == 1 for k in ks)
    if dense_kernel and (transpose or not pointwise):
        raise ValueError(
            "dense_kernel=True stores a 1x1 kernel as (C_in, C_out): it needs a CoordConv with "
            f"kernel_size of all ones; got kernel_size={kernel_size!r}"
            + (" on a transposed convolution" if transpose else "")
        )
    if tile_shape is not None:
        tile_shape = tuple(tile_shape)
        if len(tile_shape) != len(ks) or not all(
            isinstance(t, (int, np.integer)) and not isinstance(t, bool) and t >= 1
            for t in tile_shape
        ):
            raise ValueError(
                f"tile_shape must be {len(ks)} positive ints (one per spatial dim of "
                f"kernel_size={ks}); got {tile_shape!r}"
            )
        tile_shape = tuple(int(t) for t in tile_shape)
    if lowering == "matmul":
        unsupported = _matmul_unsupported(conv_options, feature_group_count, transpose_kernel)
        if unsupported:
            raise ValueError(
                f"lowering='matmul' does not support {unsupported}; use lowering='lax' or "
                "'auto' (which falls back to lax for it)"
            )
    coord_options = (
        ("with_r", bool(with_r)),
        ("normalize_r", bool(normalize_r)),
        ("order", order),
        ("coord_range", coord_range),
        ("axes", None if axes is None else tuple(int(a) for a in axes)),
    )
    return _Spec(
        transpose=transpose,
        features=int(features),
        kernel_size=ks,
        num_coords=d,
        coord_weights=coord_weights,
        position=position,
        coord_options=coord_options,
        conv_options=tuple(conv_options.items()),
        feature_group_count=int(feature_group_count),
        transpose_kernel=bool(transpose_kernel),
        lowering=lowering,
        tile_shape=tile_shape,
        dense_kernel=bool(dense_kernel),
    )


def _matmul_unsupported(conv_options: Mapping[str, Any], feature_group_count, transpose_kernel):
    """Why the matmul lowering cannot compute a layer (empty string: it can)."""
    del transpose_kernel  # handled by coordjax.conv.conv_transpose
    padding = conv_options.get("padding", "SAME")
    if isinstance(padding, str) and padding.upper() not in ("SAME", "VALID"):
        return f"padding={padding!r}"
    if feature_group_count != 1:
        return f"feature_group_count={feature_group_count}"
    dilation = conv_options.get("input_dilation", 1)
    if dilation is not None and any(d != 1 for d in np.atleast_1d(dilation)):
        return f"input_dilation={dilation!r}"
    if conv_options.get("preferred_element_type") is not None:
        return "preferred_element_type"
    return ""


def _coord_init(spec: _Spec, kernel_init, coord_kernel_init, zero_init_coords):
    """Initializer of the coordinate weights; None means "part of one joint concat kernel"."""
    if zero_init_coords:
        return nn.initializers.zeros_init()
    if coord_kernel_init is not None:
        return coord_kernel_init
    return None if spec.coord_weights == "concat" else kernel_init


def _join(data, coord, spec: _Spec):
    parts = (data, coord) if spec.position == "append" else (coord, data)
    return jnp.concatenate(parts, axis=spec.in_axis)


def _split_parts(kernel, spec: _Spec):
    """(data kernel, coordinate kernel) of a concat kernel."""
    axis = kernel.ndim + spec.in_axis
    n_in, d = kernel.shape[axis], spec.num_coords
    cut = n_in - d if spec.position == "append" else d
    first = jax.lax.slice_in_dim(kernel, 0, cut, axis=axis)
    second = jax.lax.slice_in_dim(kernel, cut, n_in, axis=axis)
    return (first, second) if spec.position == "append" else (second, first)


def _concat_kernel_init(spec: _Spec, kernel_init, coord_init):
    """Initializer of a concat kernel whose data and coordinate parts are drawn separately.

    The data part is ``kernel_init(key, (*k, C, C'))``, so it equals the kernel of a plain
    ``Conv`` initialised with the same key; the coordinate part uses ``fold_in(key, 1)``.
    """

    def init(key, shape, dtype=jnp.float32):
        axis = len(shape) + spec.in_axis
        data_shape = list(shape)
        coord_shape = list(shape)
        data_shape[axis] -= spec.num_coords
        coord_shape[axis] = spec.num_coords
        data = kernel_init(key, tuple(data_shape), dtype)
        coord = coord_init(jax.random.fold_in(key, 1), tuple(coord_shape), dtype)
        return _join(data, coord, spec)

    return init


def _param_specs(
    spec: _Spec,
    in_features: int,
    *,
    use_bias: bool,
    kernel_init,
    bias_init,
    coord_kernel_init,
    zero_init_coords: bool,
) -> dict[str, tuple[Callable, tuple[int, ...]]]:
    """``{name: (initializer, shape)}`` of a layer's parameters, in creation order."""
    g = spec.feature_group_count
    if in_features % g:
        raise ValueError(
            f"feature_group_count={g} must divide the number of input channels ({in_features})"
        )
    data_in = in_features // g
    coord_init = _coord_init(spec, kernel_init, coord_kernel_init, zero_init_coords)
    out: dict[str, tuple[Callable, tuple[int, ...]]] = {}
    if spec.coord_weights == "concat":
        init = (
            kernel_init
            if coord_init is None
            else _concat_kernel_init(spec, kernel_init, coord_init)
        )
        out["kernel"] = (init, spec.kernel_shape(data_in + spec.num_coords))
    else:
        out["kernel"] = (kernel_init, spec.kernel_shape(data_in))
    if use_bias:
        out["bias"] = (bias_init, (spec.features,))
    if spec.coord_weights == "split":
        ones = (1,) * spec.spatial_ndim
        out["coord_kernel"] = (coord_init, spec.kernel_shape(spec.num_coords, ones))
    return out


def _check_input(spec: _Spec, x, in_features: int | None = None) -> None:
    if not hasattr(x, "ndim") or not hasattr(x, "shape"):
        raise TypeError(f"x must be a jax or numpy array; got {type(x).__name__}")
    n = spec.spatial_ndim
    if spec.tile_shape is not None:
        if x.ndim < 1:
            raise ValueError(
                f"with tile_shape={spec.tile_shape}, x must have shape (*batch, C) (one vector "
                f"per example, tiled over the grid); got shape {tuple(x.shape)}"
            )
    elif x.ndim < n + 1:
        raise ValueError(
            f"x must have shape (*batch, *spatial, C) with {n} spatial dim(s) (the length of "
            f"kernel_size={spec.kernel_size}), i.e. rank >= {n + 1}; got shape {tuple(x.shape)}"
        )
    if in_features is not None and x.shape[-1] != in_features:
        raise ValueError(
            f"x has {x.shape[-1]} channels (last axis) but the layer was built with "
            f"in_features={in_features}; got shape {tuple(x.shape)}"
        )


def _centre_tap(coord_kernel, kernel_size: tuple[int, ...]):
    """Embeds a ``(1, ..., 1, a, b)`` kernel at tap ``(k - 1) // 2`` of a zero ``(*k, a, b)``."""
    pads = [((k - 1) // 2, k - 1 - (k - 1) // 2) for k in kernel_size] + [(0, 0), (0, 0)]
    return jnp.pad(coord_kernel, pads)


def _conv(spec: _Spec, inputs, kernel, *, grouped: bool):
    """Flax's (transposed) convolution of ``inputs`` with ``kernel``, no bias, as a pure fn.

    Lowered by :mod:`coordjax.conv` as ``spec.lowering`` resolves on this platform; options the
    matmul lowering does not support (``"auto"`` only) take Flax's own modules.
    """
    options = dict(spec.conv_options)
    lowering = _lowering.resolve_lowering(spec.lowering)
    groups = spec.feature_group_count if grouped else 1
    if lowering == "matmul" and not _matmul_unsupported(options, groups, spec.transpose_kernel):
        common = dict(
            strides=options.get("strides") or 1,
            padding=options.get("padding", "SAME"),
            kernel_dilation=options.get("kernel_dilation") or 1,
            lowering="matmul",
            precision=options.get("precision"),
        )
        if spec.transpose:
            return _lowering.conv_transpose(
                inputs, kernel, transpose_kernel=spec.transpose_kernel, **common
            )
        return _lowering.conv(inputs, kernel, **common)
    kernel_size = tuple(kernel.shape[:-2])
    if spec.transpose:
        features = kernel.shape[-2] if spec.transpose_kernel else kernel.shape[-1]
        layer = nn.ConvTranspose(
            features,
            kernel_size,
            use_bias=False,
            transpose_kernel=spec.transpose_kernel,
            parent=None,
            **options,
        )
    else:
        layer = nn.Conv(
            kernel.shape[-1],
            kernel_size,
            use_bias=False,
            feature_group_count=spec.feature_group_count if grouped else 1,
            parent=None,
            **options,
        )
    return layer.apply({"params": {"kernel": kernel}}, inputs)


def _forward(spec: _Spec, x, params: Mapping[str, Any], *, mask, promote: Callable):
    """The layer's output from raw parameters.

    Args:
      spec: the validated layer description.
      x: ``(*batch, *spatial, C)``.
      params: ``{"kernel", "bias"?, "coord_kernel"?}`` as created from :func:`_param_specs`.
      mask: optional array of the kernel's shape, multiplied into ``params["kernel"]``.
      promote: ``promote(x, kernel, bias) -> (x, kernel, bias)`` in the compute dtype.

    Returns:
      ``(*batch, *spatial_out, features)``.
    """
    kernel = params["kernel"]
    if mask is not None:
        if tuple(mask.shape) != tuple(kernel.shape):
            raise ValueError(
                f"mask must have the kernel's shape {tuple(kernel.shape)}; got {tuple(mask.shape)}"
            )
        kernel = kernel * jnp.asarray(mask, kernel.dtype)
    x, kernel, bias = promote(x, kernel, params.get("bias"))
    n = spec.spatial_ndim
    ones = (1,) * n
    if spec.dense_kernel:
        kernel = kernel.reshape(ones + kernel.shape)
    if spec.coord_weights == "concat":
        kernel, coord_kernel = _split_parts(kernel, spec)
    else:
        coord_kernel = jnp.asarray(params["coord_kernel"], kernel.dtype)
        coord_kernel = _centre_tap(coord_kernel.reshape(ones + coord_kernel.shape[-2:]),
                                   spec.kernel_size)  # fmt: skip

    if spec.tile_shape is not None:
        # The factored first layer: x (*batch, C) is the same at every position of the grid.
        nb = x.ndim - 1
        spatial = spec.tile_shape
        x = x.reshape(x.shape[:nb] + ones + x.shape[-1:])
        if not _is_pointwise(spec):
            x = jnp.broadcast_to(x, x.shape[:nb] + spatial + x.shape[-1:])
        # else: a 1x1 stride-1 unpadded conv of a tiled input is the tiled (*batch, 1.., C') term
    else:
        nb = x.ndim - n - 1
        spatial = x.shape[nb : nb + n]
    grid = coord_channels(spatial, dtype=kernel.dtype, **dict(spec.coord_options))
    y = _conv(spec, x, kernel, grouped=True)
    y_coords = _conv(spec, grid, coord_kernel, grouped=False)  # once, broadcast over the batch
    y = y + y_coords.reshape((1,) * nb + y_coords.shape)
    if bias is not None:
        y = y + jnp.reshape(bias, (1,) * (y.ndim - 1) + (-1,)).astype(y.dtype)
    return y


def _is_pointwise(spec: _Spec) -> bool:
    """A stride-1, unpadded 1x1 (non-transposed) convolution: a contraction over channels."""
    if spec.transpose or any(k != 1 for k in spec.kernel_size):
        return False
    options = dict(spec.conv_options)
    strides = options.get("strides") or 1
    if any(s != 1 for s in np.atleast_1d(strides)):
        return False
    dilation = options.get("input_dilation") or 1
    if any(d != 1 for d in np.atleast_1d(dilation)):
        return False
    padding = options.get("padding", "SAME")
    if isinstance(padding, str):
        return padding.upper() in ("SAME", "VALID")
    return all(p == 0 for p in np.ravel(np.asarray(padding, dtype=object)))


# --------------------------------------------------------------------------------------------
# Retrofit
# --------------------------------------------------------------------------------------------


def retrofit_conv_params(
    conv_params: Mapping[str, Any],
    *,
    in_features: int | None = None,
    coord_weights: CoordWeights = "concat",
    with_r: bool = False,
    axes: Sequence[int] | None = None,
    position: Position = "append",
    feature_group_count: int = 1,
    transpose_kernel: bool = False,
) -> dict[str, jax.Array]:
    """Turns a plain (transposed) convolution's params into CoordConv params, same function.

    The coordinate weights are zero, so the CoordConv built with the same convolution arguments
    (and these coordinate options) computes exactly what the plain layer computed; training can
    then move the coordinate weights away from zero. Works for Linen params and for the values of
    an NNX layer's ``nnx.Param`` s (see also :func:`coordjax.nnx.retrofit_conv`).

    Args:
      conv_params: ``{"kernel": (*k, C_in, C'), "bias": (C',)}`` (``bias`` optional) of an
        ``nn.Conv`` / ``nn.ConvTranspose``, i.e. ``variables["params"]`` of that layer;
        ``C_in = C / feature_group_count``. With ``transpose_kernel=True`` the kernel is
        ``(*k, C', C)``.
      in_features: ``C``, the layer's input channels; optional, checked against the kernel.
      coord_weights: ``"concat"`` or ``"split"``, the target layer's variant.
      with_r, axes: the target layer's coordinate channels (they fix ``d``).
      position: the target layer's ``position`` (where the coordinate rows go in a concat kernel).
      feature_group_count: the plain layer's group count (only used to check ``in_features``).
      transpose_kernel: the plain ``ConvTranspose`` used ``transpose_kernel=True``.

    Returns:
      concat: ``{"kernel": (*k, C_in + d, C'), "bias"}`` with zero coordinate rows;
      split: ``{"kernel": (*k, C_in, C'), "bias", "coord_kernel": (1, ..., 1, d, C')}`` with a
      zero coordinate kernel. Arrays keep the kernel's dtype.
    """
    if not isinstance(conv_params, Mapping) or "kernel" not in conv_params:
        raise ValueError(
            "conv_params must be a convolution's params {'kernel', 'bias'} (for Linen, "
            f"variables['params'] of the Conv); got {type(conv_params).__name__} with keys "
            f"{sorted(conv_params) if isinstance(conv_params, Mapping) else None}"
        )
    extra = set(conv_params) - {"kernel", "bias"}
    if extra:
        raise ValueError(
            f"conv_params must hold only 'kernel' and 'bias'; got extra keys {sorted(extra)}"
        )
    _check_choice("coord_weights", coord_weights, COORD_WEIGHTS)
    _check_choice("position", position, POSITIONS)
    kernel = jnp.asarray(conv_params["kernel"])
    if kernel.ndim < 3:
        raise ValueError(
            f"conv_params['kernel'] must have shape (*kernel_size, C_in, C'); got {kernel.shape}"
        )
    if isinstance(axes, (int, np.integer)):
        axes = (axes,)
    ks = tuple(kernel.shape[:-2])
    spec = _make_spec(
        transpose=False,
        features=kernel.shape[-2] if transpose_kernel else kernel.shape[-1],
        kernel_size=ks,
        with_r=with_r,
        normalize_r=False,
        order="ij",
        coord_range="corners",
        axes=axes,
        position=position,
        coord_weights=coord_weights,
        zero_init_coords=False,
        coord_kernel_init=None,
        transpose_kernel=transpose_kernel,
        conv_options={},
    )
    if in_features is not None and kernel.shape[spec.in_axis] * feature_group_count != in_features:
        raise ValueError(
            f"in_features={in_features} does not match the kernel {kernel.shape} with "
            f"feature_group_count={feature_group_count}"
        )
    d = spec.num_coords
    out: dict[str, jax.Array] = {}
    if coord_weights == "concat":
        coord_shape = list(kernel.shape)
        coord_shape[kernel.ndim + spec.in_axis] = d
        out["kernel"] = _join(kernel, jnp.zeros(coord_shape, kernel.dtype), spec)
    else:
        out["kernel"] = kernel
    if "bias" in conv_params and conv_params["bias"] is not None:
        out["bias"] = jnp.asarray(conv_params["bias"])
    if coord_weights == "split":
        out["coord_kernel"] = jnp.zeros(spec.kernel_shape(d, (1,) * len(ks)), kernel.dtype)
    return out


# --------------------------------------------------------------------------------------------
# Linen modules
# --------------------------------------------------------------------------------------------


class AddCoords(nn.Module):
    """Concatenates coordinate channels: a parameter-free module over :func:`coordjax.add_coords`.

    ``x: (*batch, *spatial, C) → (*batch, *spatial, C + d)`` with ``d = len(axes) + with_r``
    (``d + C`` with ``position="prepend"``).

    Attributes:
      spatial_ndim: number of spatial dims (1 sequences, 2 images, 3 volumes, ...).
      with_r, normalize_r, order, coord_range, axes, position, dtype: as in
        :func:`coordjax.add_coords` (``dtype`` is the coordinates' dtype; default ``x.dtype``).
    """

    spatial_ndim: int = 2
    with_r: bool = False
    normalize_r: bool = False
    order: Order = "ij"
    coord_range: Range = "corners"
    axes: Sequence[int] | None = None
    position: Position = "append"
    dtype: Dtype | None = None

    def __call__(self, x: Array) -> Array:
        """``(*batch, *spatial, C) → (*batch, *spatial, C + d)``."""
        return add_coords(
            x,
            spatial_ndim=self.spatial_ndim,
            with_r=self.with_r,
            normalize_r=self.normalize_r,
            order=self.order,
            coord_range=self.coord_range,
            axes=self.axes,
            position=self.position,
            dtype=self.dtype,
        )


class CoordConv(nn.Module):
    """Convolution with coordinate channels (CoordConv), channels-last, any spatial rank.

    ``x: (*batch, *spatial, C) → (*batch, *spatial_out, features)``, where ``spatial`` has
    ``len(kernel_size)`` dims and ``spatial_out`` is what ``nn.Conv`` gives for the same
    arguments. With ``coord_weights="concat"`` this is exactly
    ``nn.Conv(...)(add_coords(x, ...))``; see the module docstring for ``"split"``.

    Attributes:
      features, kernel_size, strides, padding, input_dilation, kernel_dilation,
        feature_group_count, use_bias, mask, dtype, param_dtype, precision, kernel_init,
        bias_init, promote_dtype: as in ``flax.linen.Conv``. ``kernel_size`` fixes the number of
        spatial dims. ``mask`` has the shape of ``kernel``. With the default initialisation,
        the concat kernel is ``kernel_init`` of the whole ``(*k, C + d, C')`` shape, the same
        draw as ``nn.Conv`` on ``add_coords(x)``.
      with_r, normalize_r, order, coord_range, axes, position: the coordinate channels, as in
        :func:`coordjax.add_coords`.
      coord_weights: ``"concat"`` (one kernel ``(*k, C + d, C')``) or ``"split"`` (``kernel``
        ``(*k, C, C')`` plus ``coord_kernel`` ``(1, ..., 1, d, C')``).
      zero_init_coords: initialise the coordinate weights to exactly zero; the data kernel is
        then ``kernel_init(key, (*k, C, C'))``, the kernel of an ``nn.Conv`` given the same key,
        and the layer equals that plain convolution at init.
      coord_kernel_init: initializer of the coordinate weights (default: ``kernel_init``;
        exclusive with ``zero_init_coords``).
      lowering: ``"auto"`` (default), ``"lax"`` or ``"matmul"``: how the convolutions are
        computed (:mod:`coordjax.conv`; same values to float rounding).
      tile_shape: the *factored first layer* (the reference's ``skiptile=False``): ``x`` is
        ``(*batch, C)``, one vector per example, as if tiled over a ``tile_shape`` grid before
        the coordinates are added. Output ``(*batch, *tile_shape_out, features)``. For a
        stride-1 1x1 kernel the tiled input is never materialised: the layer is one small
        contraction of ``x`` plus the coordinate term computed once on the grid.
      dense_kernel: store a 1x1 kernel as ``(C + d, C')`` (a dense layer's kernel) instead of
        ``(1, ..., 1, C + d, C')``; same values, same initial draw for shape-agnostic
        initialisers. Needs ``kernel_size`` of all ones.
    """

    features: int
    kernel_size: int | Sequence[int]
    strides: None | int | Sequence[int] = 1
    padding: PaddingLike = "SAME"
    input_dilation: None | int | Sequence[int] = 1
    kernel_dilation: None | int | Sequence[int] = 1
    feature_group_count: int = 1
    use_bias: bool = True
    mask: Array | None = None
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32
    precision: PrecisionLike = None
    kernel_init: Initializer = default_kernel_init
    bias_init: Initializer = default_bias_init
    promote_dtype: Callable[..., Any] = _promote_dtype
    with_r: bool = False
    normalize_r: bool = False
    order: Order = "ij"
    coord_range: Range = "corners"
    axes: Sequence[int] | None = None
    position: Position = "append"
    coord_weights: CoordWeights = "concat"
    zero_init_coords: bool = False
    coord_kernel_init: Initializer | None = None
    lowering: _lowering.Lowering = "auto"
    tile_shape: Sequence[int] | None = None
    dense_kernel: bool = False

    def __post_init__(self):
        self._spec()  # fail at construction, naming the bad argument
        super().__post_init__()

    def _spec(self) -> _Spec:
        return _make_spec(
            transpose=False,
            features=self.features,
            kernel_size=self.kernel_size,
            with_r=self.with_r,
            normalize_r=self.normalize_r,
            order=self.order,
            coord_range=self.coord_range,
            axes=self.axes,
            position=self.position,
            coord_weights=self.coord_weights,
            zero_init_coords=self.zero_init_coords,
            coord_kernel_init=self.coord_kernel_init,
            feature_group_count=self.feature_group_count,
            conv_options=dict(
                strides=self.strides,
                padding=self.padding,
                input_dilation=self.input_dilation,
                kernel_dilation=self.kernel_dilation,
                precision=self.precision,
            ),
            lowering=self.lowering,
            tile_shape=self.tile_shape,
            dense_kernel=self.dense_kernel,
        )

    @nn.compact
    def __call__(self, x: Array) -> Array:
        """``(*batch, *spatial, C) → (*batch, *spatial_out, features)``."""
        return _linen_call(self, self._spec(), x)


class CoordConvTranspose(nn.Module):
    """Transposed convolution with coordinate channels, channels-last, any spatial rank.

    ``x: (*batch, *spatial, C) → (*batch, *spatial_out, features)`` with ``spatial_out`` what
    ``nn.ConvTranspose`` gives. The coordinates are those of the *input* grid. With
    ``coord_weights="concat"`` this is exactly ``nn.ConvTranspose(...)(add_coords(x, ...))``;
    ``"split"`` equals the concat layer whose coordinate kernel is zero except at tap
    ``(k - 1) // 2`` (a strided 1×1 transposed convolution of the coordinates).

    Attributes:
      features, kernel_size, strides, padding, kernel_dilation, use_bias, mask, dtype,
        param_dtype, precision, kernel_init, bias_init, transpose_kernel, promote_dtype,
        preferred_element_type: as in ``flax.linen.ConvTranspose``. With
        ``transpose_kernel=True`` kernels are ``(*k, features, C_in)`` and the coordinate rows
        are on the last axis.
      with_r, normalize_r, order, coord_range, axes, position, coord_weights, zero_init_coords,
        coord_kernel_init, lowering: as in :class:`CoordConv`.
    """

    features: int
    kernel_size: int | Sequence[int]
    strides: Sequence[int] | None = None
    padding: PaddingLike = "SAME"
    kernel_dilation: Sequence[int] | None = None
    use_bias: bool = True
    mask: Array | None = None
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32
    precision: PrecisionLike = None
    kernel_init: Initializer = default_kernel_init
    bias_init: Initializer = default_bias_init
    transpose_kernel: bool = False
    promote_dtype: Callable[..., Any] = _promote_dtype
    preferred_element_type: Dtype | None = None
    with_r: bool = False
    normalize_r: bool = False
    order: Order = "ij"
    coord_range: Range = "corners"
    axes: Sequence[int] | None = None
    position: Position = "append"
    coord_weights: CoordWeights = "concat"
    zero_init_coords: bool = False
    coord_kernel_init: Initializer | None = None
    lowering: _lowering.Lowering = "auto"

    def __post_init__(self):
        self._spec()
        super().__post_init__()

    def _spec(self) -> _Spec:
        return _make_spec(
            transpose=True,
            features=self.features,
            kernel_size=self.kernel_size,
            with_r=self.with_r,
            normalize_r=self.normalize_r,
            order=self.order,
            coord_range=self.coord_range,
            axes=self.axes,
            position=self.position,
            coord_weights=self.coord_weights,
            zero_init_coords=self.zero_init_coords,
            coord_kernel_init=self.coord_kernel_init,
            transpose_kernel=self.transpose_kernel,
            conv_options=dict(
                strides=self.strides,
                padding=self.padding,
                kernel_dilation=self.kernel_dilation,
                precision=self.precision,
                preferred_element_type=self.preferred_element_type,
            ),
            lowering=self.lowering,
        )

    @nn.compact
    def __call__(self, x: Array) -> Array:
        """``(*batch, *spatial, C) → (*batch, *spatial_out, features)``."""
        return _linen_call(self, self._spec(), x)


def _linen_call(module, spec: _Spec, x):
    _check_input(spec, x)
    specs = _param_specs(
        spec,
        x.shape[-1],
        use_bias=module.use_bias,
        kernel_init=module.kernel_init,
        bias_init=module.bias_init,
        coord_kernel_init=module.coord_kernel_init,
        zero_init_coords=module.zero_init_coords,
    )
    params = {
        name: module.param(name, init, shape, module.param_dtype)
        for name, (init, shape) in specs.items()
    }
    return _forward(
        spec,
        x,
        params,
        mask=module.mask,
        promote=lambda *a: module.promote_dtype(*a, dtype=module.dtype),
    )


# --------------------------------------------------------------------------------------------
# Plain convolutions with a choice of lowering (the model zoo's building blocks)
# --------------------------------------------------------------------------------------------


def _plain_call(module, x, transpose: bool):
    """Shared body of :class:`Conv` / :class:`ConvTranspose`: flax's parameters, our lowering."""
    n = len(_canonical_kernel_size(module.kernel_size))
    if not hasattr(x, "ndim") or x.ndim < n + 1:
        raise ValueError(
            f"x must have shape (*batch, *spatial, C) with {n} spatial dim(s); "
            f"got {getattr(x, 'shape', type(x).__name__)}"
        )
    ks = _canonical_kernel_size(module.kernel_size)
    kernel = module.param(
        "kernel", module.kernel_init, (*ks, x.shape[-1], module.features), module.param_dtype
    )
    bias = (
        module.param("bias", module.bias_init, (module.features,), module.param_dtype)
        if module.use_bias
        else None
    )
    x, kernel, bias = _promote_dtype(x, kernel, bias, dtype=module.dtype)
    fn = _lowering.conv_transpose if transpose else _lowering.conv
    y = fn(
        x,
        kernel,
        strides=module.strides if module.strides is not None else 1,
        padding=module.padding,
        kernel_dilation=module.kernel_dilation if module.kernel_dilation is not None else 1,
        lowering=module.lowering,
        precision=module.precision,
    )
    if bias is not None:
        y = y + bias.reshape((1,) * (y.ndim - 1) + (-1,))
    return y


class Conv(nn.Module):
    """``flax.linen.Conv`` (no groups, no input dilation) with a choice of lowering.

    ``x: (*batch, *spatial, C) → (*batch, *spatial_out, features)``; the same parameters
    (``kernel (*k, C, features)``, ``bias``, created in that order with the same initializers'
    draws) and the same values as ``nn.Conv`` given the same arguments.

    Attributes:
      features, kernel_size, strides, padding (``'SAME'``, ``'VALID'``, int, or per-dim ints /
        pairs), kernel_dilation, use_bias, dtype, param_dtype, precision, kernel_init,
        bias_init: as in ``nn.Conv``.
      lowering: ``"auto"``, ``"lax"`` or ``"matmul"`` (:mod:`coordjax.conv`).
    """

    features: int
    kernel_size: int | Sequence[int]
    strides: None | int | Sequence[int] = 1
    padding: PaddingLike = "SAME"
    kernel_dilation: None | int | Sequence[int] = 1
    use_bias: bool = True
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32
    precision: PrecisionLike = None
    kernel_init: Initializer = default_kernel_init
    bias_init: Initializer = default_bias_init
    lowering: _lowering.Lowering = "auto"

    @nn.compact
    def __call__(self, x: Array) -> Array:
        """``(*batch, *spatial, C) → (*batch, *spatial_out, features)``."""
        return _plain_call(self, x, transpose=False)


class ConvTranspose(nn.Module):
    """``flax.linen.ConvTranspose`` (``transpose_kernel=False``) with a choice of lowering.

    ``x: (*batch, *spatial, C) → (*batch, *spatial_out, features)``; kernel
    ``(*k, C, features)`` and bias, the same parameters and values as ``nn.ConvTranspose``.
    The matmul lowering is the sub-pixel decomposition (:func:`coordjax.conv.conv_transpose`).

    Attributes:
      features, kernel_size, strides, padding, kernel_dilation, use_bias, dtype, param_dtype,
        precision, kernel_init, bias_init: as in ``nn.ConvTranspose``.
      lowering: ``"auto"``, ``"lax"`` or ``"matmul"``.
    """

    features: int
    kernel_size: int | Sequence[int]
    strides: None | int | Sequence[int] = None
    padding: PaddingLike = "SAME"
    kernel_dilation: None | int | Sequence[int] = None
    use_bias: bool = True
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32
    precision: PrecisionLike = None
    kernel_init: Initializer = default_kernel_init
    bias_init: Initializer = default_bias_init
    lowering: _lowering.Lowering = "auto"

    @nn.compact
    def __call__(self, x: Array) -> Array:
        """``(*batch, *spatial, C) → (*batch, *spatial_out, features)``."""
        return _plain_call(self, x, transpose=True)

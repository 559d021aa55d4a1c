"""The CoordConv layer as pure functions: the core of :mod:`coordjax.linen` and :mod:`coordjax.nnx`.

A layer is described by a :class:`CoordConvSpec`, built and validated once from the layer's
arguments by :func:`coord_conv_spec` (every error names the argument); :func:`param_layout`
says which parameters it has (names, initialisers, shapes) and :func:`coord_conv` computes its
output from those parameters: ``coord_conv(spec, params, x)``. Every convolution goes through
:mod:`coordjax.conv` (``lax.conv_general_dilated`` / ``lax.conv_transpose`` under the
``"lax"`` lowering, the patches and sub-pixel matmul forms otherwise). The Linen and NNX layers
only hold the parameters their framework's way and call these. See :mod:`coordjax.linen` for
the layer semantics (``"concat"`` and ``"split"`` coordinate weights, the factored first layer).

>>> import jax, jax.numpy as jnp
>>> spec = coord_conv_spec(transpose=False, features=8, kernel_size=(3, 3))
>>> layout = param_layout(spec, 4)  # 4 data channels, 2 coordinate channels
>>> {name: shape for name, (_, shape) in layout.items()}
{'kernel': (3, 3, 6, 8), 'bias': (8,)}
>>> params = {name: init(jax.random.key(0), shape) for name, (init, shape) in layout.items()}
>>> coord_conv(spec, params, jnp.ones((2, 16, 16, 4))).shape
(2, 16, 16, 8)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn
from flax.linen.dtypes import promote_dtype

from coordjax import conv as _conv_lowerings
from coordjax._checks import check_choice, per_dim, positive_int
from coordjax._checks import kernel_size as _kernel_size
from coordjax.coords import (
    ORDERS,
    POSITIONS,
    RANGES,
    Order,
    Position,
    Range,
    coord_channels,
    num_coord_channels,
)

__all__ = [
    "COORD_WEIGHTS",
    "CONV_OPTIONS",
    "CONV_TRANSPOSE_OPTIONS",
    "CoordConvSpec",
    "CoordOptions",
    "CoordWeights",
    "check_input",
    "coord_conv",
    "coord_conv_spec",
    "layer_spec",
    "param_layout",
    "retrofit_conv_params",
]

CoordWeights = Literal["concat", "split"]
COORD_WEIGHTS = ("concat", "split")

default_kernel_init = nn.initializers.lecun_normal()
"""Flax's default kernel initialiser (LeCun normal), the layers' default."""
default_bias_init = nn.initializers.zeros_init()
"""Flax's default bias initialiser (zeros), the layers' default."""


@dataclasses.dataclass(frozen=True)
class CoordOptions:
    """The coordinate channels of a layer: the options of :func:`coordjax.add_coords`.

    Attributes:
      with_r, normalize_r, order, coord_range, axes, position: as in
        :func:`coordjax.add_coords`; ``axes`` is kept as a tuple (an int ``a`` becomes ``(a,)``).
    """

    with_r: bool = False
    normalize_r: bool = False
    order: Order = "ij"
    coord_range: Range = "corners"
    axes: tuple[int, ...] | None = None
    position: Position = "append"

    def __post_init__(self):
        axes = self.axes
        if axes is not None and not isinstance(axes, tuple):
            # A hashable, static tuple (an NNX attribute must not be a list); checked by check().
            try:
                axes = tuple(axes)
            except TypeError:  # one axis (or a bad value, which check() refuses naming axes)
                axes = (axes,)
            object.__setattr__(self, "axes", axes)

    @classmethod
    def of(cls, layer: Any) -> CoordOptions:
        """The options held as attributes of ``layer`` (a Linen module's fields, say)."""
        return cls(**{f.name: getattr(layer, f.name) for f in dataclasses.fields(cls)})

    def as_kwargs(self) -> dict[str, Any]:
        """All six options as keyword arguments (of :func:`coordjax.add_coords`, a layer)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def channel_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of :func:`coordjax.coord_channels` (all but ``position``)."""
        kwargs = self.as_kwargs()
        del kwargs["position"]
        return kwargs

    def check(self, spatial_ndim: int) -> tuple[CoordOptions, int]:
        """Validates the options for ``spatial_ndim`` spatial dims.

        Returns:
          ``(canonical options, d)``: plain bools, ``axes`` a tuple of Python ints (or None),
          and ``d``, the number of coordinate channels.

        Raises:
          ValueError, TypeError: naming the offending option.
        """
        check_choice("order", self.order, ORDERS)
        check_choice("coord_range", self.coord_range, RANGES)
        check_choice("position", self.position, POSITIONS)
        d = num_coord_channels(spatial_ndim, with_r=self.with_r, axes=self.axes)  # validates axes
        canonical = dataclasses.replace(
            self,
            with_r=bool(self.with_r),
            normalize_r=bool(self.normalize_r),
            axes=None if self.axes is None else tuple(int(a) for a in self.axes),
        )
        return canonical, d


@dataclasses.dataclass(frozen=True)
class CoordConvSpec:
    """A validated description of a CoordConv / CoordConvTranspose layer (no parameters).

    Built by :func:`coord_conv_spec` (or :func:`layer_spec`), which validates and canonicalises
    the arguments; read by :func:`param_layout`, :func:`check_input` and :func:`coord_conv`.

    Attributes:
      transpose: a transposed convolution (``CoordConvTranspose``).
      features: output channels ``C'``.
      kernel_size: the window, one int per spatial dim (its length is the spatial rank).
      num_coords: ``d``, the number of coordinate channels.
      coord_weights: ``"concat"`` or ``"split"``.
      coords: the coordinate options, validated.
      conv_options: ``(name, value)`` pairs, the keyword arguments of Flax's ``Conv`` /
        ``ConvTranspose`` among :data:`CONV_OPTIONS` / :data:`CONV_TRANSPOSE_OPTIONS`.
      feature_group_count: groups of the data convolution.
      transpose_kernel: kernels are ``(*k, C', C_in)`` (``ConvTranspose(transpose_kernel=True)``).
      lowering: one of :data:`coordjax.conv.LOWERINGS`.
      tile_shape: the factored first layer's grid, or None.
      dense_kernel: a 1x1 kernel stored as ``(C_in, C')``.
    """

    transpose: bool
    features: int
    kernel_size: tuple[int, ...]
    num_coords: int
    coord_weights: str
    coords: CoordOptions
    conv_options: tuple[tuple[str, Any], ...]
    feature_group_count: int
    transpose_kernel: bool
    lowering: str = "auto"
    tile_shape: tuple[int, ...] | None = None
    dense_kernel: bool = False

    @property
    def spatial_ndim(self) -> int:
        """The number of spatial dims, ``len(kernel_size)``."""
        return len(self.kernel_size)

    @property
    def in_axis(self) -> int:
        """Axis of the kernel that indexes input channels (-2, or -1 for ``transpose_kernel``)."""
        return -1 if self.transpose_kernel else -2

    def kernel_shape(self, n_in: int, spatial: tuple[int, ...] | None = None) -> tuple[int, ...]:
        """The shape of a kernel with ``n_in`` input channels: ``(*spatial, n_in, features)``
        (``(*spatial, features, n_in)`` for ``transpose_kernel``; no spatial dims for
        ``dense_kernel``); ``spatial`` defaults to ``kernel_size``."""
        spatial = self.kernel_size if spatial is None else spatial
        if self.dense_kernel:
            spatial = ()  # a 1x1 kernel stored as (C_in, C_out)
        if self.transpose_kernel:
            return (*spatial, self.features, n_in)
        return (*spatial, n_in, self.features)

    def join(self, data: jax.Array, coord: jax.Array) -> jax.Array:
        """A concat kernel (or mask) from its data part ``(*k, C_in, C')`` and its coordinate
        part ``(*k, d, C')``, in the order of ``coords.position``, on the input-channel axis
        (:attr:`in_axis`)."""
        parts = (data, coord) if self.coords.position == "append" else (coord, data)
        return jnp.concatenate(parts, axis=self.in_axis)

    def split(self, kernel: jax.Array) -> tuple[jax.Array, jax.Array]:
        """``(data part, coordinate part)`` of a concat kernel: the inverse of :meth:`join`."""
        axis = kernel.ndim + self.in_axis
        n_in, d = kernel.shape[axis], self.num_coords
        cut = n_in - d if self.coords.position == "append" else d
        first = jax.lax.slice_in_dim(kernel, 0, cut, axis=axis)
        second = jax.lax.slice_in_dim(kernel, cut, n_in, axis=axis)
        return (first, second) if self.coords.position == "append" else (second, first)


def coord_conv_spec(
    *,
    transpose: bool,
    features: int,
    kernel_size: int | Sequence[int],
    coords: CoordOptions | None = None,
    coord_weights: CoordWeights = "concat",
    zero_init_coords: bool = False,
    coord_kernel_init: Any = None,
    feature_group_count: int = 1,
    transpose_kernel: bool = False,
    conv_options: Mapping[str, Any] | None = None,
    lowering: str = "auto",
    tile_shape: Sequence[int] | None = None,
    dense_kernel: bool = False,
) -> CoordConvSpec:
    """Validates a layer's arguments into its :class:`CoordConvSpec`.

    Args:
      transpose: a CoordConvTranspose (else a CoordConv).
      features: output channels ``C'``.
      kernel_size: an int (one spatial dim) or one int per spatial dim.
      coords: the coordinate channels' options; default ``CoordOptions()``.
      coord_weights: ``"concat"`` or ``"split"``.
      zero_init_coords, coord_kernel_init: only checked here (they are exclusive); they are
        arguments of :func:`param_layout`.
      feature_group_count: groups of the data convolution; must divide ``features``.
      transpose_kernel: kernels are ``(*k, C', C_in)``.
      conv_options: Flax's ``Conv`` (:data:`CONV_OPTIONS`) or ``ConvTranspose``
        (:data:`CONV_TRANSPOSE_OPTIONS`) keyword arguments.
      lowering: one of :data:`coordjax.conv.LOWERINGS`.
      tile_shape: the factored first layer's grid, one positive int per spatial dim.
      dense_kernel: store a 1x1 kernel as ``(C_in, C')`` (a CoordConv of kernel_size all ones).

    Returns:
      The spec, with canonical values (tuples, Python ints and bools, ``d`` counted).

    Raises:
      ValueError, TypeError: naming the offending argument.
    """
    conv_options = {} if conv_options is None else dict(conv_options)
    features = positive_int("features", features)
    ks = _kernel_size(kernel_size)
    for name in ("strides", "input_dilation", "kernel_dilation"):
        per_dim(name, conv_options.get(name), len(ks), where="spatial dim of kernel_size")
    check_choice("coord_weights", coord_weights, COORD_WEIGHTS)
    coords, d = (CoordOptions() if coords is None else coords).check(len(ks))
    feature_group_count = positive_int("feature_group_count", feature_group_count)
    if features % feature_group_count:
        raise ValueError(
            f"feature_group_count={feature_group_count} must divide features={features}"
        )
    if zero_init_coords and coord_kernel_init is not None:
        raise ValueError(
            "zero_init_coords=True and coord_kernel_init are mutually exclusive: "
            "zero_init_coords=True means coord_kernel_init=zeros"
        )
    check_choice("lowering", lowering, _conv_lowerings.LOWERINGS)
    pointwise = all(k == 1 for k in ks)
    if dense_kernel and (transpose or not pointwise):
        raise ValueError(
            "dense_kernel=True stores a 1x1 kernel as (C_in, C_out): it needs a CoordConv with "
            f"kernel_size of all ones; got kernel_size={kernel_size!r}"
            + (" on a transposed convolution" if transpose else "")
        )
    if tile_shape is not None:
        tile_shape = per_dim("tile_shape", tuple(tile_shape), len(ks),
                             where=f"spatial dim of kernel_size={ks}")  # fmt: skip
    if lowering == "matmul" or (lowering == "zero_insertion" and transpose):
        unsupported = _matmul_unsupported(conv_options, feature_group_count)
        if unsupported:
            raise ValueError(
                f"lowering={lowering!r} does not support {unsupported}; use lowering='lax' or "
                "'auto' (which falls back to lax for it)"
            )
    return CoordConvSpec(
        transpose=bool(transpose),
        features=features,
        kernel_size=ks,
        num_coords=d,
        coord_weights=coord_weights,
        coords=coords,
        conv_options=tuple((name, _hashable(value)) for name, value in conv_options.items()),
        feature_group_count=feature_group_count,
        transpose_kernel=bool(transpose_kernel),
        lowering=lowering,
        tile_shape=tile_shape,
        dense_kernel=bool(dense_kernel),
    )


CONV_OPTIONS = ("strides", "padding", "input_dilation", "kernel_dilation", "precision")
"""The attributes of a CoordConv that are options of flax's ``Conv`` (in ``conv_options``)."""

CONV_TRANSPOSE_OPTIONS = ("strides", "padding", "kernel_dilation", "precision",
                          "preferred_element_type")  # fmt: skip
"""The attributes of a CoordConvTranspose that are options of flax's ``ConvTranspose``."""


def _hashable(value):
    """Lists (a padding's pairs, say) as tuples, so that a spec can be static data (NNX)."""
    if isinstance(value, (list, tuple)):
        return tuple(_hashable(v) for v in value)
    return value


def layer_spec(
    layer: Any,
    *,
    transpose: bool,
    features: int,
    zero_init_coords: bool = False,
    coord_kernel_init: Any = None,
) -> CoordConvSpec:
    """The spec of a Linen or NNX CoordConv / CoordConvTranspose, read from its attributes.

    Args:
      layer: holds the six coordinate options, ``kernel_size``, ``coord_weights``,
        ``lowering`` and the flax options :data:`CONV_OPTIONS` (or
        :data:`CONV_TRANSPOSE_OPTIONS`); optionally ``feature_group_count``,
        ``transpose_kernel``, ``tile_shape`` and ``dense_kernel``.
      transpose, features, zero_init_coords, coord_kernel_init: as in :func:`coord_conv_spec`.

    Returns:
      :func:`coord_conv_spec` of those arguments.

    Raises:
      ValueError, TypeError: naming the offending attribute.
    """
    names = CONV_TRANSPOSE_OPTIONS if transpose else CONV_OPTIONS
    return coord_conv_spec(
        transpose=transpose,
        features=features,
        kernel_size=layer.kernel_size,
        coords=CoordOptions.of(layer),
        coord_weights=layer.coord_weights,
        zero_init_coords=zero_init_coords,
        coord_kernel_init=coord_kernel_init,
        feature_group_count=getattr(layer, "feature_group_count", 1),
        transpose_kernel=getattr(layer, "transpose_kernel", False),
        conv_options={name: getattr(layer, name) for name in names},
        lowering=layer.lowering,
        tile_shape=getattr(layer, "tile_shape", None),
        dense_kernel=getattr(layer, "dense_kernel", False),
    )


def _matmul_unsupported(conv_options: Mapping[str, Any], feature_group_count) -> str:
    """Why the matmul or zero-insertion lowering cannot compute a layer (empty: it can)."""
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


def _coord_init(spec: CoordConvSpec, kernel_init, coord_kernel_init, zero_init_coords):
    """Initializer of the coordinate weights; None means "part of one joint concat kernel"."""
    if zero_init_coords:
        return nn.initializers.zeros_init()
    if coord_kernel_init is not None:
        return coord_kernel_init
    return None if spec.coord_weights == "concat" else kernel_init


def _concat_kernel_init(spec: CoordConvSpec, kernel_init, coord_init):
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
        return spec.join(data, coord)

    return init


def param_layout(
    spec: CoordConvSpec,
    in_features: int,
    *,
    use_bias: bool = True,
    kernel_init: Callable = default_kernel_init,
    bias_init: Callable = default_bias_init,
    coord_kernel_init: Callable | None = None,
    zero_init_coords: bool = False,
) -> dict[str, tuple[Callable, tuple[int, ...]]]:
    """The layer's parameters: names, initialisers and shapes, in creation order.

    Args:
      spec: the layer.
      in_features: ``C``, the data channels of the input (without the coordinates).
      use_bias: whether there is a ``bias``.
      kernel_init, bias_init: Flax initialisers, ``init(key, shape, dtype)``.
      coord_kernel_init: initialiser of the coordinate weights (default ``kernel_init``; for
        ``"concat"``, then drawn with the data rows as one kernel).
      zero_init_coords: coordinate weights start at zero (the data kernel is drawn as a plain
        ``Conv``'s kernel, the coordinate part from ``fold_in(key, 1)``).

    Returns:
      ``{name: (initializer, shape)}``: concat ``kernel (*k, C / g + d, C')``, ``bias (C',)``;
      split ``kernel (*k, C / g, C')``, ``bias``, ``coord_kernel (1, ..., 1, d, C')``
      (``dense_kernel``: kernels without the spatial dims; ``transpose_kernel``: the last two
      axes swapped).

    Raises:
      ValueError: ``feature_group_count`` does not divide ``in_features``.
    """
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


def check_input(spec: CoordConvSpec, x, in_features: int | None = None) -> None:
    """Checks that ``x`` fits the layer.

    Args:
      spec: the layer.
      x: ``(*batch, *spatial, C)`` with ``spec.spatial_ndim`` spatial dims; ``(*batch, C)``
        with ``tile_shape``.
      in_features: ``C``, if the layer fixed it (NNX).

    Raises:
      TypeError: ``x`` is not an array.
      ValueError: ``x``'s rank or channels do not fit.
    """
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


def _conv(spec: CoordConvSpec, inputs, kernel, *, grouped: bool):
    """Flax's (transposed) convolution of ``inputs`` with ``kernel``, no bias, through
    :mod:`coordjax.conv`, lowered as ``spec.lowering`` resolves on this platform; options the
    matmul and zero-insertion lowerings do not compute (``"auto"`` only) take ``"lax"``."""
    options = dict(spec.conv_options)
    lowering = _conv_lowerings.resolve_lowering(
        spec.lowering, transposed=spec.transpose, vmapped=False
    )
    groups = spec.feature_group_count if grouped else 1
    if _matmul_unsupported(options, groups):
        lowering = "lax"
    common = dict(
        strides=options.get("strides"),
        padding=options.get("padding", "SAME"),
        kernel_dilation=options.get("kernel_dilation"),
        lowering=lowering,
        precision=options.get("precision"),
    )
    if spec.transpose:
        return _conv_lowerings.conv_transpose(
            inputs,
            kernel,
            transpose_kernel=spec.transpose_kernel,
            preferred_element_type=options.get("preferred_element_type"),
            **common,
        )
    return _conv_lowerings.conv(
        inputs,
        kernel,
        input_dilation=options.get("input_dilation"),
        feature_group_count=groups,
        **common,
    )


def coord_conv(
    spec: CoordConvSpec,
    params: Mapping[str, Any],
    x: jax.Array,
    *,
    mask: jax.Array | None = None,
    promote: Callable | None = None,
) -> jax.Array:
    """The layer's output: ``conv(x, data kernel) + conv(grid, coordinate kernel) + bias``.

    The coordinate term is computed once on the ``(*spatial, d)`` grid and broadcast over the
    batch. Every convolution goes through :mod:`coordjax.conv` (``spec.lowering``).

    Args:
      spec: the layer.
      params: ``{"kernel", "bias"?, "coord_kernel"?}`` with the shapes of :func:`param_layout`.
      x: ``(*batch, *spatial, C)``; ``(*batch, C)`` with ``spec.tile_shape``.
      mask: optional array of the kernel's shape, multiplied into ``params["kernel"]``.
      promote: ``promote(x, kernel, bias) -> (x, kernel, bias)`` in the compute dtype; default
        Flax's ``promote_dtype`` (the inputs' common dtype).

    Returns:
      ``(*batch, *spatial_out, features)``, ``spatial_out`` as Flax's ``Conv`` /
      ``ConvTranspose`` give it (``tile_shape`` in place of ``spatial`` for the factored first
      layer).

    Raises:
      ValueError: ``mask`` does not have the kernel's shape.
    """
    if promote is None:
        promote = promote_dtype
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
        kernel, coord_kernel = spec.split(kernel)
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
    grid = coord_channels(spatial, dtype=kernel.dtype, **spec.coords.channel_kwargs())
    y = _conv(spec, x, kernel, grouped=True)
    y_coords = _conv(spec, grid, coord_kernel, grouped=False)  # once, broadcast over the batch
    y = y + y_coords.reshape((1,) * nb + y_coords.shape)
    if bias is not None:
        y = y + jnp.reshape(bias, (1,) * (y.ndim - 1) + (-1,)).astype(y.dtype)
    return y


def _is_pointwise(spec: CoordConvSpec) -> bool:
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

    Raises:
      ValueError: ``conv_params`` is not a convolution's params, or an argument (named) is
        invalid or does not match the kernel.
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
    check_choice("coord_weights", coord_weights, COORD_WEIGHTS)
    check_choice("position", position, POSITIONS)
    kernel = jnp.asarray(conv_params["kernel"])
    if kernel.ndim < 3:
        raise ValueError(
            f"conv_params['kernel'] must have shape (*kernel_size, C_in, C'); got {kernel.shape}"
        )
    ks = tuple(kernel.shape[:-2])
    spec = coord_conv_spec(
        transpose=False,
        features=kernel.shape[-2] if transpose_kernel else kernel.shape[-1],
        kernel_size=ks,
        coords=CoordOptions(with_r=with_r, axes=axes, position=position),
        coord_weights=coord_weights,
        transpose_kernel=transpose_kernel,
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
        out["kernel"] = spec.join(kernel, jnp.zeros(coord_shape, kernel.dtype))
    else:
        out["kernel"] = kernel
    if "bias" in conv_params and conv_params["bias"] is not None:
        out["bias"] = jnp.asarray(conv_params["bias"])
    if coord_weights == "split":
        out["coord_kernel"] = jnp.zeros(spec.kernel_shape(d, (1,) * len(ks)), kernel.dtype)
    return out

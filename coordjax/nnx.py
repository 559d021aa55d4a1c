"""CoordConv layers for ``flax.nnx``: ``AddCoords``, ``CoordConv``, ``CoordConvTranspose``.

Same layers, variants and numbers as :mod:`coordjax.linen` (see its module docstring for the
``"concat"`` and ``"split"`` coordinate weights); the constructors mirror ``nnx.Conv`` and
``nnx.ConvTranspose`` (``in_features``, ``out_features``, ``kernel_size``, ..., ``rngs=``) plus
the coordinate options. ``in_features`` counts the data channels only; the ``d`` coordinate
channels are added by the layer.

Parameters (``nnx.Param``): concat ``kernel (*k, C / g + d, C')``, ``bias (C',)``; split
``kernel (*k, C / g, C')``, ``coord_kernel (1, ..., 1, d, C')``, ``bias (C',)`` (no bias with
``use_bias=False``). Random keys: ``kernel`` then ``bias`` are drawn from ``rngs.params()`` in the
same order as ``nnx.Conv``; the coordinate weights, when drawn separately, use
``fold_in(kernel_key, 1)``, so a CoordConv consumes the same keys as the plain layer it replaces.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx
from flax.nnx.nn import dtypes as _dtypes
from flax.typing import Array, Dtype, Initializer, PaddingLike, PrecisionLike

from coordjax import functional
from coordjax._checks import positive_int
from coordjax.coords import Order, Position, Range, add_coords
from coordjax.functional import (
    COORD_WEIGHTS,
    CoordOptions,
    CoordWeights,
    default_bias_init,
    default_kernel_init,
    retrofit_conv_params,
)

__all__ = [
    "COORD_WEIGHTS",
    "AddCoords",
    "CoordConv",
    "CoordConvTranspose",
    "CoordWeights",
    "retrofit_conv",
    "retrofit_conv_params",
]


def _hold_coord_options(module: nnx.Module, coords: CoordOptions) -> None:
    """Sets the six coordinate options as attributes (``module.with_r``, ...), as Linen has them;
    ``axes`` as a static tuple."""
    for name, value in coords.as_kwargs().items():
        setattr(module, name, value)


class AddCoords(nnx.Module):
    """Concatenates coordinate channels: a parameter-free module over :func:`coordjax.add_coords`.

    ``x: (*batch, *spatial, C) → (*batch, *spatial, C + d)`` with ``d = len(axes) + with_r``
    (``d + C`` with ``position="prepend"``).

    Args:
      spatial_ndim: number of spatial dims (1 sequences, 2 images, 3 volumes, ...).
      with_r, normalize_r, order, coord_range, axes, position, dtype: as in
        :func:`coordjax.add_coords` (``dtype`` is the coordinates' dtype; default ``x.dtype``).
    """

    def __init__(
        self,
        spatial_ndim: int = 2,
        *,
        with_r: bool = False,
        normalize_r: bool = False,
        order: Order = "ij",
        coord_range: Range = "corners",
        axes: Sequence[int] | None = None,
        position: Position = "append",
        dtype: Dtype | None = None,
    ):
        self.spatial_ndim = spatial_ndim
        _hold_coord_options(
            self, CoordOptions(with_r, normalize_r, order, coord_range, axes, position)
        )
        self.dtype = dtype

    def __call__(self, x: Array) -> Array:
        """``(*batch, *spatial, C) → (*batch, *spatial, C + d)``."""
        coords = CoordOptions.of(self).as_kwargs()
        return add_coords(x, spatial_ndim=self.spatial_ndim, dtype=self.dtype, **coords)


class _CoordConvBase(nnx.Module):
    """Parameter creation and the forward pass shared by the two NNX layers."""

    _transpose: bool  # set by each subclass

    def _build_spec(
        self, *, zero_init_coords=False, coord_kernel_init=None
    ) -> functional.CoordConvSpec:
        return functional.layer_spec(
            self,
            transpose=self._transpose,
            features=self.out_features,
            zero_init_coords=zero_init_coords,
            coord_kernel_init=coord_kernel_init,
        )

    def _init_layer(
        self,
        coords: CoordOptions,
        *,
        kernel_init,
        bias_init,
        coord_kernel_init,
        zero_init_coords,
        rngs: nnx.Rngs,
        kernel_metadata: Mapping[str, Any],
        bias_metadata: Mapping[str, Any],
    ) -> None:
        """Validates the layer (its other options already set) and creates its parameters."""
        _hold_coord_options(self, coords)
        spec = self._build_spec(
            zero_init_coords=zero_init_coords, coord_kernel_init=coord_kernel_init
        )
        self._coord_spec = spec  # built once, static (hashable)
        self.kernel_size = spec.kernel_size  # canonical tuple, as nnx.Conv stores it
        positive_int("in_features", self.in_features)
        layout = functional.param_layout(
            spec,
            self.in_features,
            use_bias=self.use_bias,
            kernel_init=kernel_init,
            bias_init=bias_init,
            coord_kernel_init=coord_kernel_init,
            zero_init_coords=zero_init_coords,
        )
        kernel_key = rngs.params()
        init, shape = layout["kernel"]
        self.kernel = nnx.Param(init(kernel_key, shape, self.param_dtype), **kernel_metadata)
        self.bias: nnx.Param | None
        if "bias" in layout:
            init, shape = layout["bias"]
            self.bias = nnx.Param(init(rngs.params(), shape, self.param_dtype), **bias_metadata)
        else:
            self.bias = nnx.data(None)
        if "coord_kernel" in layout:
            init, shape = layout["coord_kernel"]
            key = jax.random.fold_in(kernel_key, 1)
            self.coord_kernel = nnx.Param(init(key, shape, self.param_dtype), **kernel_metadata)

    def __call__(self, x: Array) -> Array:
        """``(*batch, *spatial, in_features) → (*batch, *spatial_out, out_features)``."""
        spec = self._coord_spec
        functional.check_input(spec, x, self.in_features)
        params = {"kernel": self.kernel[...]}
        if self.bias is not None:
            params["bias"] = self.bias[...]
        if spec.coord_weights == "split":
            params["coord_kernel"] = self.coord_kernel[...]
        return functional.coord_conv(
            spec,
            params,
            x,
            mask=self.mask,
            promote=lambda *a: self.promote_dtype(a, dtype=self.dtype),
        )


class CoordConv(_CoordConvBase):
    """Convolution with coordinate channels (CoordConv), channels-last, any spatial rank.

    ``x: (*batch, *spatial, in_features) → (*batch, *spatial_out, out_features)``, where
    ``spatial`` has ``len(kernel_size)`` dims and ``spatial_out`` is what ``nnx.Conv`` gives.
    With ``coord_weights="concat"`` this is exactly
    ``nnx.Conv(in_features + d, ...)(add_coords(x, ...))``.

    Args:
      in_features: data channels ``C`` (without the coordinates).
      out_features: output channels ``C'``.
      kernel_size, strides, padding, input_dilation, kernel_dilation, feature_group_count:
        as in ``nnx.Conv``.
      use_bias, mask, dtype, param_dtype, precision, kernel_init, bias_init, promote_dtype: as
        in ``nnx.Conv``; ``mask`` has the shape of ``kernel``.
      with_r, normalize_r, order, coord_range, axes, position: the coordinate channels, as in
        :func:`coordjax.add_coords`.
      coord_weights: ``"concat"`` or ``"split"`` (see :mod:`coordjax.linen`).
      zero_init_coords: coordinate weights start at exactly zero; the data kernel is then the
        kernel an ``nnx.Conv`` draws from the same ``rngs``, and the layer equals it at init.
      coord_kernel_init: initializer of the coordinate weights (default ``kernel_init``;
        exclusive with ``zero_init_coords``).
      lowering: ``"auto"`` (default), ``"lax"``, ``"matmul"`` or ``"zero_insertion"``: how
        the convolutions are computed (:mod:`coordjax.conv`).
      tile_shape: the factored first layer: ``x`` is ``(*batch, in_features)``, one vector per
        example, as if tiled over a ``tile_shape`` grid before the coordinates are added; output
        ``(*batch, *tile_shape_out, out_features)`` (see :class:`coordjax.linen.CoordConv`).
      dense_kernel: store a 1x1 kernel as ``(in_features + d, out_features)`` instead of
        ``(1, ..., 1, in_features + d, out_features)``. Needs ``kernel_size`` of all ones.
      rngs: random streams; ``rngs.params()`` is drawn for the kernel and the bias.
      kernel_metadata, bias_metadata: metadata (e.g. sharding) of the ``nnx.Param`` s, as in
        ``nnx.Conv``; ``kernel_metadata`` also applies to ``coord_kernel``.

    ``nnx.Conv``'s ``conv_general_dilated`` and ``preferred_element_type`` are not supported.
    """

    _transpose = False

    def __init__(
        self,
        in_features: int,
        out_features: int,
        kernel_size: int | Sequence[int],
        strides: None | int | Sequence[int] = 1,
        *,
        padding: PaddingLike = "SAME",
        input_dilation: None | int | Sequence[int] = 1,
        kernel_dilation: None | int | Sequence[int] = 1,
        feature_group_count: int = 1,
        use_bias: bool = True,
        mask: Array | None = None,
        dtype: Dtype | None = None,
        param_dtype: Dtype = jnp.float32,
        precision: PrecisionLike = None,
        kernel_init: Initializer = default_kernel_init,
        bias_init: Initializer = default_bias_init,
        promote_dtype: Callable[..., Any] = _dtypes.promote_dtype,
        with_r: bool = False,
        normalize_r: bool = False,
        order: Order = "ij",
        coord_range: Range = "corners",
        axes: Sequence[int] | None = None,
        position: Position = "append",
        coord_weights: CoordWeights = "concat",
        zero_init_coords: bool = False,
        coord_kernel_init: Initializer | None = None,
        lowering: str = "auto",
        tile_shape: Sequence[int] | None = None,
        dense_kernel: bool = False,
        rngs: nnx.Rngs,
        kernel_metadata: Mapping[str, Any] = MappingProxyType({}),
        bias_metadata: Mapping[str, Any] = MappingProxyType({}),
    ):
        self.in_features = in_features
        self.out_features = out_features
        self.kernel_size = kernel_size
        self.strides = strides
        self.padding = padding
        self.input_dilation = input_dilation
        self.kernel_dilation = kernel_dilation
        self.feature_group_count = feature_group_count
        self.use_bias = use_bias
        self.mask = mask
        self.dtype = dtype
        self.param_dtype = param_dtype
        self.precision = precision
        self.promote_dtype = promote_dtype
        self.coord_weights = coord_weights
        self.lowering = lowering
        self.tile_shape = tile_shape
        self.dense_kernel = dense_kernel
        self._init_layer(
            CoordOptions(with_r, normalize_r, order, coord_range, axes, position),
            kernel_init=kernel_init,
            bias_init=bias_init,
            coord_kernel_init=coord_kernel_init,
            zero_init_coords=zero_init_coords,
            rngs=rngs,
            kernel_metadata=kernel_metadata,
            bias_metadata=bias_metadata,
        )
        self.tile_shape = self._coord_spec.tile_shape  # canonical tuple (or None), validated


class CoordConvTranspose(_CoordConvBase):
    """Transposed convolution with coordinate channels, channels-last, any spatial rank.

    ``x: (*batch, *spatial, in_features) → (*batch, *spatial_out, out_features)`` with
    ``spatial_out`` what ``nnx.ConvTranspose`` gives; the coordinates are those of the input
    grid. With ``coord_weights="concat"`` this is exactly
    ``nnx.ConvTranspose(in_features + d, ...)(add_coords(x, ...))``.

    Args:
      in_features, out_features: as in ``nnx.ConvTranspose`` (``in_features`` without the
        coordinates).
      kernel_size, strides, padding, kernel_dilation, use_bias, mask, dtype, param_dtype: as in
        ``nnx.ConvTranspose``.
      precision, kernel_init, bias_init, promote_dtype, preferred_element_type: as in
        ``nnx.ConvTranspose``.
      transpose_kernel: as in ``nnx.ConvTranspose``. With ``transpose_kernel=True`` kernels are
        ``(*k, C', C_in)`` and the coordinate rows are on the last axis.
      with_r, normalize_r, order, coord_range, axes, position, coord_weights: as in
        :class:`CoordConv`.
      zero_init_coords, coord_kernel_init, lowering, rngs, kernel_metadata, bias_metadata: as in
        :class:`CoordConv`.
    """

    _transpose = True

    def __init__(
        self,
        in_features: int,
        out_features: int,
        kernel_size: int | Sequence[int],
        strides: int | Sequence[int] | None = None,
        *,
        padding: PaddingLike = "SAME",
        kernel_dilation: int | Sequence[int] | None = None,
        use_bias: bool = True,
        mask: Array | None = None,
        dtype: Dtype | None = None,
        param_dtype: Dtype = jnp.float32,
        precision: PrecisionLike = None,
        kernel_init: Initializer = default_kernel_init,
        bias_init: Initializer = default_bias_init,
        transpose_kernel: bool = False,
        promote_dtype: Callable[..., Any] = _dtypes.promote_dtype,
        preferred_element_type: Dtype | None = None,
        with_r: bool = False,
        normalize_r: bool = False,
        order: Order = "ij",
        coord_range: Range = "corners",
        axes: Sequence[int] | None = None,
        position: Position = "append",
        coord_weights: CoordWeights = "concat",
        zero_init_coords: bool = False,
        coord_kernel_init: Initializer | None = None,
        lowering: str = "auto",
        rngs: nnx.Rngs,
        kernel_metadata: Mapping[str, Any] = MappingProxyType({}),
        bias_metadata: Mapping[str, Any] = MappingProxyType({}),
    ):
        self.in_features = in_features
        self.out_features = out_features
        self.kernel_size = kernel_size
        self.strides = strides
        self.padding = padding
        self.kernel_dilation = kernel_dilation
        self.use_bias = use_bias
        self.mask = mask
        self.dtype = dtype
        self.param_dtype = param_dtype
        self.precision = precision
        self.transpose_kernel = transpose_kernel
        self.promote_dtype = promote_dtype
        self.preferred_element_type = preferred_element_type
        self.coord_weights = coord_weights
        self.lowering = lowering
        self._init_layer(
            CoordOptions(with_r, normalize_r, order, coord_range, axes, position),
            kernel_init=kernel_init,
            bias_init=bias_init,
            coord_kernel_init=coord_kernel_init,
            zero_init_coords=zero_init_coords,
            rngs=rngs,
            kernel_metadata=kernel_metadata,
            bias_metadata=bias_metadata,
        )


def retrofit_conv(
    conv: nnx.Conv | nnx.ConvTranspose,
    *,
    coord_weights: CoordWeights = "concat",
    with_r: bool = False,
    normalize_r: bool = False,
    order: Order = "ij",
    coord_range: Range = "corners",
    axes: Sequence[int] | None = None,
    position: Position = "append",
) -> CoordConv | CoordConvTranspose:
    """A CoordConv computing the same function as a (trained) ``nnx.Conv`` / ``ConvTranspose``.

    Copies the layer's configuration and weights and adds zero coordinate weights (see
    :func:`coordjax.linen.retrofit_conv_params`); ``conv`` itself is left untouched. Draws no
    random numbers.

    Args:
      conv: the plain layer, ``(*batch, *spatial, C) → (*batch, *spatial_out, C')``.
      coord_weights, with_r, normalize_r, order, coord_range, axes, position: the new layer's
        coordinate options.

    Returns:
      :class:`CoordConv` (for ``nnx.Conv``) or :class:`CoordConvTranspose`, same input and output
      shapes, equal to ``conv`` until its coordinate weights are trained.
    """
    if isinstance(conv, nnx.Conv):
        if conv.preferred_element_type is not None:
            raise NotImplementedError(
                "retrofit_conv: nnx.Conv with preferred_element_type is not supported by CoordConv"
            )
        if conv.conv_general_dilated is not jax.lax.conv_general_dilated:
            raise NotImplementedError(
                "retrofit_conv: nnx.Conv with a custom conv_general_dilated is not supported"
            )
        cls, groups = CoordConv, conv.feature_group_count
        conv_args = dict(
            padding=conv.padding,
            input_dilation=conv.input_dilation,
            kernel_dilation=conv.kernel_dilation,
            feature_group_count=conv.feature_group_count,
        )
    elif isinstance(conv, nnx.ConvTranspose):
        cls, groups = CoordConvTranspose, 1
        conv_args = dict(
            padding=conv.padding,
            kernel_dilation=conv.kernel_dilation,
            transpose_kernel=conv.transpose_kernel,
            preferred_element_type=conv.preferred_element_type,
        )
    else:
        raise TypeError(f"conv must be an nnx.Conv or nnx.ConvTranspose; got {type(conv).__name__}")
    transpose_kernel = bool(getattr(conv, "transpose_kernel", False))
    coords = CoordOptions(with_r, normalize_r, order, coord_range, axes, position)
    params = {"kernel": conv.kernel[...]}
    if conv.bias is not None:
        params["bias"] = conv.bias[...]
    new_params = retrofit_conv_params(
        params,
        in_features=conv.in_features,
        coord_weights=coord_weights,
        with_r=with_r,
        axes=axes,
        position=position,
        feature_group_count=groups,
        transpose_kernel=transpose_kernel,
    )

    def build():
        return cls(
            conv.in_features,
            conv.out_features,
            conv.kernel_size,
            conv.strides,
            use_bias=conv.bias is not None,
            dtype=conv.dtype,
            param_dtype=conv.param_dtype,
            precision=conv.precision,
            promote_dtype=conv.promote_dtype,
            rngs=nnx.Rngs(0),  # only shapes are built; every value is replaced below
            coord_weights=coord_weights,
            **conv_args,
            **coords.as_kwargs(),
        )

    layer = nnx.eval_shape(build)  # abstract: no random draws, no wasted initialisation
    nnx.update(layer, new_params)
    mask = conv.mask
    if mask is not None:  # set after eval_shape, which would have made it abstract too
        if coord_weights == "concat":
            # The coordinate rows of the new kernel are not masked.
            mask = jnp.asarray(mask)
            spec = layer._coord_spec
            ones_shape = list(mask.shape)
            ones_shape[mask.ndim + spec.in_axis] = spec.num_coords
            mask = spec.join(mask, jnp.ones(ones_shape, mask.dtype))
        layer.mask = nnx.data(mask)
    return layer

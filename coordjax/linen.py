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
(never concatenated per example). The convolutions compute what Flax's ``Conv`` and
``ConvTranspose`` compute (:mod:`coordjax.conv`; the ``"lax"`` lowering makes the same XLA
calls), so strides, paddings (``"SAME"``, ``"VALID"``, explicit, and under ``"lax"``
``"CIRCULAR"``, ``"REFLECT"``, ``"CAUSAL"``) and dilations mean exactly what they mean in
Flax. The coordinates are computed in float32 and cast to the layer's compute dtype (``dtype``,
or what ``promote_dtype`` makes of the input and parameter dtypes).

With ``feature_group_count = g > 1`` the data term is a grouped convolution (kernel in-channels
``C / g``) and every output channel also sees all ``d`` coordinate channels; the concat kernel is
then ``(*k, C / g + d, C')``. (This is not ``Conv(add_coords(x))`` with groups, which would hand
different coordinates to different groups.)

The layers are thin shells over the pure functions of :mod:`coordjax.functional` (spec,
parameter layout, forward pass, retrofit), shared with :mod:`coordjax.nnx`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import jax.numpy as jnp
from flax import linen as nn
from flax.linen.dtypes import promote_dtype as _promote_dtype
from flax.typing import Array, Dtype, Initializer, PaddingLike, PrecisionLike

from coordjax import conv as _lowering
from coordjax import functional
from coordjax._checks import kernel_size as _kernel_size
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
    "Conv",
    "ConvTranspose",
    "CoordConv",
    "CoordConvTranspose",
    "CoordWeights",
    "retrofit_conv_params",
]


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
        coords = CoordOptions.of(self).as_kwargs()
        return add_coords(x, spatial_ndim=self.spatial_ndim, dtype=self.dtype, **coords)


class _CoordLayer(nn.Module):
    """The coordinate fields and the call shared by :class:`CoordConv` and
    :class:`CoordConvTranspose`.

    The fields here are keyword-only (they follow the flax ``Conv`` / ``ConvTranspose`` fields,
    which keep flax's positional order).
    """

    _: dataclasses.KW_ONLY
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
        # The spec is built once per module (and fails at construction, naming the bad
        # argument); object.__setattr__ because a Linen module takes no attributes but fields.
        object.__setattr__(self, "_coord_spec", self._build_spec())
        super().__post_init__()

    _transpose: ClassVar[bool]  # set by each subclass

    def _build_spec(self) -> functional.CoordConvSpec:
        return functional.layer_spec(
            self,
            transpose=self._transpose,
            features=self.features,
            zero_init_coords=self.zero_init_coords,
            coord_kernel_init=self.coord_kernel_init,
        )

    @nn.compact
    def __call__(self, x: Array) -> Array:
        """``(*batch, *spatial, C) → (*batch, *spatial_out, features)``."""
        spec = self._coord_spec
        functional.check_input(spec, x)
        layout = functional.param_layout(
            spec,
            x.shape[-1],
            use_bias=self.use_bias,
            kernel_init=self.kernel_init,
            bias_init=self.bias_init,
            coord_kernel_init=self.coord_kernel_init,
            zero_init_coords=self.zero_init_coords,
        )
        params = {
            name: self.param(name, init, shape, self.param_dtype)
            for name, (init, shape) in layout.items()
        }
        return functional.coord_conv(
            spec,
            params,
            x,
            mask=self.mask,
            promote=lambda *a: self.promote_dtype(*a, dtype=self.dtype),
        )


class CoordConv(_CoordLayer):
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
        :func:`coordjax.add_coords`. These and the options below, up to ``lowering``, are
        keyword-only.
      coord_weights: ``"concat"`` (one kernel ``(*k, C + d, C')``) or ``"split"`` (``kernel``
        ``(*k, C, C')`` plus ``coord_kernel`` ``(1, ..., 1, d, C')``).
      zero_init_coords: initialise the coordinate weights to exactly zero; the data kernel is
        then ``kernel_init(key, (*k, C, C'))``, the kernel of an ``nn.Conv`` given the same key,
        and the layer equals that plain convolution at init.
      coord_kernel_init: initializer of the coordinate weights (default: ``kernel_init``;
        exclusive with ``zero_init_coords``).
      lowering: ``"auto"`` (default), ``"lax"``, ``"matmul"`` or ``"zero_insertion"``: how
        the convolutions are computed (:mod:`coordjax.conv`; same values to float rounding).
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
    tile_shape: Sequence[int] | None = None
    dense_kernel: bool = False

    _transpose = False


class CoordConvTranspose(_CoordLayer):
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

    _transpose = True


# --------------------------------------------------------------------------------------------
# Plain convolutions with a choice of lowering (the model zoo's building blocks)
# --------------------------------------------------------------------------------------------


def _plain_call(module, x, transpose: bool):
    """Shared body of :class:`Conv` / :class:`ConvTranspose`: flax's parameters, our lowering."""
    ks = _kernel_size(module.kernel_size)
    n = len(ks)
    if not hasattr(x, "ndim") or x.ndim < n + 1:
        raise ValueError(
            f"x must have shape (*batch, *spatial, C) with {n} spatial dim(s); "
            f"got {getattr(x, 'shape', type(x).__name__)}"
        )
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
        strides=module.strides,
        padding=module.padding,
        kernel_dilation=module.kernel_dilation,
        lowering=module.lowering,
        precision=module.precision,
    )
    if bias is not None:
        y = y + bias.reshape((1,) * (y.ndim - 1) + (-1,))
    return y


class _PlainConv(nn.Module):
    """The fields and the call shared by :class:`Conv` and :class:`ConvTranspose`."""

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

    _transpose: ClassVar[bool] = False

    @nn.compact
    def __call__(self, x: Array) -> Array:
        """``(*batch, *spatial, C) → (*batch, *spatial_out, features)``."""
        return _plain_call(self, x, transpose=self._transpose)


class Conv(_PlainConv):
    """``flax.linen.Conv`` (no groups, no input dilation) with a choice of lowering.

    ``x: (*batch, *spatial, C) → (*batch, *spatial_out, features)``; the same parameters
    (``kernel (*k, C, features)``, ``bias``, created in that order with the same initializers'
    draws) and the same values as ``nn.Conv`` given the same arguments.

    Attributes:
      features, kernel_size, strides, padding (``'SAME'``, ``'VALID'``, int, or per-dim ints /
        pairs), kernel_dilation, use_bias, dtype, param_dtype, precision, kernel_init,
        bias_init: as in ``nn.Conv``.
      lowering: ``"auto"``, ``"lax"``, ``"matmul"`` or ``"zero_insertion"`` (the last is
        ``"lax"`` for plain convolutions; :mod:`coordjax.conv`).
    """


class ConvTranspose(_PlainConv):
    """``flax.linen.ConvTranspose`` (``transpose_kernel=False``) with a choice of lowering.

    ``x: (*batch, *spatial, C) → (*batch, *spatial_out, features)``; kernel
    ``(*k, C, features)`` and bias, the same parameters and values as ``nn.ConvTranspose``.
    The matmul lowering is the sub-pixel decomposition (:func:`coordjax.conv.conv_transpose`).

    Attributes:
      features, kernel_size, strides, padding, kernel_dilation, use_bias, dtype, param_dtype,
        precision, kernel_init, bias_init: as in ``nn.ConvTranspose``.
      lowering: ``"auto"``, ``"lax"``, ``"matmul"`` or ``"zero_insertion"``.
    """

    # flax's ConvTranspose defaults (a redeclared field keeps its place in the field order)
    strides: None | int | Sequence[int] = None
    kernel_dilation: None | int | Sequence[int] = None

    _transpose = True

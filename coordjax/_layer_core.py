"""The CoordConv layer core shared by :mod:`coordjax.linen` and :mod:`coordjax.nnx`.

Framework-free (no module state): a layer is described by a validated :class:`_Spec` built by
:func:`_make_spec`; :func:`_param_specs` says which parameters it has (names, initialisers,
shapes) and :func:`_forward` computes its output from raw parameters. The two public modules only
hold the parameters their framework's way and call these. The coordinate options travel as one
:class:`CoordOptions` value. See :mod:`coordjax.linen` for the layer semantics (``"concat"`` and
``"split"`` coordinate weights, the factored first layer).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from coordjax import conv as _lowering
from coordjax.coords import (
    ORDERS,
    POSITIONS,
    RANGES,
    Order,
    Position,
    Range,
    _check_choice,
    coord_channels,
    num_coord_channels,
)

CoordWeights = Literal["concat", "split"]
COORD_WEIGHTS = ("concat", "split")

default_kernel_init = nn.initializers.lecun_normal()
default_bias_init = nn.initializers.zeros_init()


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
            axes = (axes,) if isinstance(axes, (int, np.integer)) else tuple(axes)
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
        _check_choice("order", self.order, ORDERS)
        _check_choice("coord_range", self.coord_range, RANGES)
        _check_choice("position", self.position, POSITIONS)
        d = num_coord_channels(spatial_ndim, with_r=self.with_r, axes=self.axes)  # validates axes
        canonical = dataclasses.replace(
            self,
            with_r=bool(self.with_r),
            normalize_r=bool(self.normalize_r),
            axes=None if self.axes is None else tuple(int(a) for a in self.axes),
        )
        return canonical, d


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
    coords: CoordOptions  # validated
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
    coords: CoordOptions,
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
    coords, d = coords.check(len(ks))
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
    if lowering == "matmul" or (lowering == "zero_insertion" and transpose):
        unsupported = _matmul_unsupported(conv_options, feature_group_count, transpose_kernel)
        if unsupported:
            raise ValueError(
                f"lowering={lowering!r} does not support {unsupported}; use lowering='lax' or "
                "'auto' (which falls back to lax for it)"
            )
    return _Spec(
        transpose=transpose,
        features=int(features),
        kernel_size=ks,
        num_coords=d,
        coord_weights=coord_weights,
        coords=coords,
        conv_options=tuple(conv_options.items()),
        feature_group_count=int(feature_group_count),
        transpose_kernel=bool(transpose_kernel),
        lowering=lowering,
        tile_shape=tile_shape,
        dense_kernel=bool(dense_kernel),
    )


CONV_OPTIONS = ("strides", "padding", "input_dilation", "kernel_dilation", "precision")
"""The attributes of a CoordConv that are options of flax's ``Conv`` (in ``_Spec.conv_options``)."""

CONV_TRANSPOSE_OPTIONS = ("strides", "padding", "kernel_dilation", "precision",
                          "preferred_element_type")  # fmt: skip
"""The attributes of a CoordConvTranspose that are options of flax's ``ConvTranspose``."""


def _spec_of(
    layer: Any,
    *,
    transpose: bool,
    features: int,
    zero_init_coords: bool = False,
    coord_kernel_init: Any = None,
) -> _Spec:
    """The spec of a Linen or NNX CoordConv / CoordConvTranspose, read from its attributes.

    ``layer`` holds the six coordinate options, ``kernel_size``, ``coord_weights``, ``lowering``
    and the flax options :data:`CONV_OPTIONS` (or :data:`CONV_TRANSPOSE_OPTIONS`); optionally
    ``feature_group_count``, ``transpose_kernel``, ``tile_shape`` and ``dense_kernel``.
    """
    names = CONV_TRANSPOSE_OPTIONS if transpose else CONV_OPTIONS
    return _make_spec(
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


def _matmul_unsupported(conv_options: Mapping[str, Any], feature_group_count, transpose_kernel):
    """Why the matmul or zero-insertion lowering cannot compute a layer (empty: it can)."""
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
    parts = (data, coord) if spec.coords.position == "append" else (coord, data)
    return jnp.concatenate(parts, axis=spec.in_axis)


def _split_parts(kernel, spec: _Spec):
    """(data kernel, coordinate kernel) of a concat kernel."""
    axis = kernel.ndim + spec.in_axis
    n_in, d = kernel.shape[axis], spec.num_coords
    cut = n_in - d if spec.coords.position == "append" else d
    first = jax.lax.slice_in_dim(kernel, 0, cut, axis=axis)
    second = jax.lax.slice_in_dim(kernel, cut, n_in, axis=axis)
    return (first, second) if spec.coords.position == "append" else (second, first)


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
    matmul and zero-insertion lowerings do not support (``"auto"`` only) take Flax's own
    modules.
    """
    options = dict(spec.conv_options)
    lowering = _lowering.resolve_lowering(spec.lowering, transposed=spec.transpose, vmapped=False)
    if lowering == "zero_insertion" and not spec.transpose:
        lowering = "lax"  # plain convolutions are lax ones under zero_insertion
    groups = spec.feature_group_count if grouped else 1
    if lowering != "lax" and not _matmul_unsupported(options, groups, spec.transpose_kernel):
        common = dict(
            strides=options.get("strides") or 1,
            padding=options.get("padding", "SAME"),
            kernel_dilation=options.get("kernel_dilation") or 1,
            lowering=lowering,
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
    grid = coord_channels(spatial, dtype=kernel.dtype, **spec.coords.channel_kwargs())
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
    params, _ = _retrofit(
        conv_params,
        in_features=in_features,
        coord_weights=coord_weights,
        coords=CoordOptions(with_r=with_r, axes=axes, position=position),
        feature_group_count=feature_group_count,
        transpose_kernel=transpose_kernel,
    )
    return params


def _retrofit(
    conv_params: Mapping[str, Any],
    *,
    in_features: int | None,
    coord_weights: CoordWeights,
    coords: CoordOptions,
    feature_group_count: int,
    transpose_kernel: bool,
) -> tuple[dict[str, jax.Array], _Spec]:
    """:func:`retrofit_conv_params`, plus the spec it built (kernel layout, ``d``)."""
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
    _check_choice("position", coords.position, POSITIONS)
    kernel = jnp.asarray(conv_params["kernel"])
    if kernel.ndim < 3:
        raise ValueError(
            f"conv_params['kernel'] must have shape (*kernel_size, C_in, C'); got {kernel.shape}"
        )
    ks = tuple(kernel.shape[:-2])
    spec = _make_spec(
        transpose=False,
        features=kernel.shape[-2] if transpose_kernel else kernel.shape[-1],
        kernel_size=ks,
        coords=coords,
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
    return out, spec

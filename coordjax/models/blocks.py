"""The zoo's building blocks: initialisers, input checks, convolutions, BatchNorm.

Shared by :mod:`coordjax.models.painters` and :mod:`coordjax.models.regressors`; the
conventions are in :mod:`coordjax.models`.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.typing import Initializer

from coordjax import linen as cjnn

CANVAS = 64
"""Side of the Not-so-Clevr canvas: painters output, and regressors read, 64x64 maps."""

BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5


def he_normal(out_axis: int = -1) -> Initializer:
    """Keras ``he_normal``: truncated normal (cut at 2 sd) with variance ``2 / fan_in``.

    ``fan_in = size / shape[out_axis]``: the receptive field times the input channels. The values
    are exactly those of ``nn.initializers.variance_scaling(2.0, "fan_in", "truncated_normal",
    in_axis=<the other channel axis>, out_axis=out_axis)``; the draw is made as a flat vector
    and reshaped (JAX's random bits depend only on the flat index), which compiles several times
    faster on CPU than drawing a rank-4 kernel directly.

    Args:
      out_axis: the kernel axis that is *not* in the fan-in: ``-1`` for ``nn.Conv`` / ``nn.Dense``
        kernels ``(..., in, out)``; ``-2`` for ``nn.ConvTranspose`` kernels ``(fs, fs, in, out)``,
        whose Keras fan-in is ``out * fs**2`` (as the reference's Keras layers did).
    """

    def init(key: jax.Array, shape: tuple[int, ...], dtype: Any = jnp.float32) -> jax.Array:
        shape = tuple(shape)
        size = math.prod(shape)
        variance = jnp.array(2.0 / (size // shape[out_axis]), dtype=dtype)
        stddev = jnp.sqrt(variance) / jnp.array(0.87962566103423978, dtype)
        return (jax.random.truncated_normal(key, -2, 2, (size,), dtype) * stddev).reshape(shape)

    return init


HE_NORMAL = he_normal()
"""he-normal for ``nn.Conv`` and ``nn.Dense`` kernels ``(..., C_in, C_out)``."""

HE_NORMAL_TRANSPOSED = he_normal(out_axis=-2)
"""he-normal for ``nn.ConvTranspose`` kernels ``(fs, fs, in, out)``: fan_in ``out * fs**2``."""

GLOROT_UNIFORM = nn.initializers.glorot_uniform()
"""``tf.layers.dense`` default kernel init (used only by the conv_uniform regressor's head)."""

NO_L2_PREFIX = "nol2_"
"""The name prefix of :class:`ConvRegressorUniform`'s Dense head (``nol2_dense_0``,
``nol2_dense_1``), kept so that parameter trees and checkpoints keep their names. It decides
nothing any more (each model declares ``l2_exempt``), except in the deprecated one-argument
:func:`coordjax.models.l2_mask`."""


def _as_float(x: jax.Array) -> jax.Array:
    x = jnp.asarray(x)
    return x if jnp.issubdtype(x.dtype, jnp.floating) else x.astype(jnp.float32)


def _coords_input(x: jax.Array, model: str) -> jax.Array:
    x = _as_float(x)
    if x.ndim != 2 or x.shape[-1] != 2:
        raise ValueError(
            f"{model} expects x of shape (B, 2) (raw pixel coordinates [x, y]); "
            f"got shape {tuple(x.shape)}"
        )
    return x


def _image_input(x: jax.Array, model: str) -> jax.Array:
    x = _as_float(x)
    if x.ndim != 4 or x.shape[-1] != 1:
        raise ValueError(
            f"{model} expects x of shape (B, H, W, 1) (one-hot images, H = W = {CANVAS} in the "
            f"paper); got shape {tuple(x.shape)}"
        )
    return x


def _pointwise(features: int, name: str) -> nn.Dense:
    """A stride-1 1x1 convolution as a dense contraction over the channel (last) axis."""
    return nn.Dense(features, kernel_init=HE_NORMAL, name=name)


def _conv(features: int, filter_size: int, name: str, lowering: str, stride: int = 1) -> nn.Module:
    """A ``'SAME'`` convolution; a stride-1 1x1 one is built as :func:`_pointwise`."""
    if filter_size == 1 and stride == 1:
        return _pointwise(features, name)
    return cjnn.Conv(
        features,
        (filter_size, filter_size),
        strides=(stride, stride),
        padding="SAME",
        kernel_init=HE_NORMAL,
        lowering=lowering,
        name=name,
    )


def coord_1x1(
    features: int,
    *,
    name: str,
    lowering: str = "auto",
    tile_shape: tuple[int, int] | None = (CANVAS, CANVAS),
) -> cjnn.CoordConv:
    """The zoo's first CoordConv layer: AddCoords then a 1x1 convolution, factored.

    ``coordjax.linen.CoordConv`` with ``kernel_size=(1, 1)``, coordinates ``[inputs..., xx
    (column), yy (row)]`` in ``[-1, 1]`` (``order="xy"``, the reference's layout, which pairs
    the raw ``x`` with the column), he-normal kernel ``(C + 2, features)`` (``dense_kernel``) and
    zero bias. With ``tile_shape`` (``(64, 64)``: the reference's ``skiptile=False``) a
    ``(B, C)`` input is tiled over that grid without materialising it; with ``None`` the input
    is ``(B, H, W, C)``. Output ``(B, H, W, features)``.
    """
    return cjnn.CoordConv(
        features,
        (1, 1),
        order="xy",
        kernel_init=HE_NORMAL,
        dense_kernel=True,
        tile_shape=tile_shape,
        lowering=lowering,
        name=name,
    )


def _batch_norm(h: jax.Array, *, train: bool, mask: jax.Array | None, name: str) -> jax.Array:
    """BatchNorm over all axes but the last; ``mask`` (B,) drops examples from the statistics."""
    bn_mask = None
    if train and mask is not None:
        mask = jnp.asarray(mask)
        if mask.shape != h.shape[:1]:
            raise ValueError(
                f"mask must have shape (B,) = {h.shape[:1]} (one flag per example); "
                f"got shape {tuple(mask.shape)}"
            )
        bn_mask = jnp.broadcast_to(
            mask.astype(bool).reshape(mask.shape + (1,) * (h.ndim - 1)), h.shape
        )
    bn = nn.BatchNorm(momentum=BN_MOMENTUM, epsilon=BN_EPSILON, use_fast_variance=False, name=name)
    return bn(h, use_running_average=not train, mask=bn_mask)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def max_pool(x: jax.Array, window: tuple[int, int]) -> jax.Array:
    """``nn.max_pool(x, window, strides=window, padding="VALID")`` for sizes the window divides:
    the same values and the same gradient, without XLA's ``reduce_window``.

    The gradient of ``reduce_window`` is a ``select_and_scatter``, which XLA:CPU runs about 2.6x
    slower than this form (a 2x2 pool of ``(256, 64, 64, 16)``, forward and gradient;
    ``docs/benchmarks/cpu-parity.md``). Like ``nn.max_pool``'s, the gradient goes to the first
    maximum of each window in row-major order, so ties (a one-hot image's flat regions) train
    exactly as before.

    ``x: (B, H, W, C) -> (B, H / wy, W / wx, C)``.
    """
    b, h, w, c = x.shape
    wy, wx = window
    if h % wy or w % wx:
        raise ValueError(f"max_pool: window {window} must divide the spatial shape {(h, w)}")
    return x.reshape(b, h // wy, wy, w // wx, wx, c).max(axis=(2, 4))


def _max_pool_forward(x, window):
    return max_pool(x, window), x


def _max_pool_backward(window, x, g):
    b, h, w, c = x.shape
    wy, wx = window
    windows = x.reshape(b, h // wy, wy, w // wx, wx, c)
    is_max = windows == windows.max(axis=(2, 4), keepdims=True)
    # The first maximum in row-major order: no maximum in an earlier row of the window, nor
    # earlier in its own row (exclusive running counts; no transposes, so XLA fuses it all).
    in_row = is_max.astype(jnp.int32)
    row_has = jnp.max(in_row, axis=4, keepdims=True)
    earlier_row = jnp.cumsum(row_has, axis=2) - row_has
    earlier_in_row = jnp.cumsum(in_row, axis=4) - in_row
    first = is_max & (earlier_row == 0) & (earlier_in_row == 0)
    spread = jnp.where(first, g[:, :, None, :, None, :], jnp.zeros((), x.dtype))
    return (spread.reshape(b, h, w, c),)


max_pool.defvjp(_max_pool_forward, _max_pool_backward)

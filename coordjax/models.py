"""The paper's model zoo (flax.linen) and a registry of it by name.

Liu et al. 2018 (arXiv:1807.03247), supplementary S1 (Figure S1) and S3 (Table S1), as implemented
in the reference code (``uber-research/CoordConv:model_builders.py``); exact layer lists and
parameter counts are in ``reference/experiments_spec.md`` sections 3-5.

Every model is a ``flax.linen.Module`` applied as::

    model.apply(variables, x, train=bool, mask=None, mutable=["batch_stats"])

* ``x``: ``(B, 2)`` float raw pixel coordinates ``[x, y]`` (values 4..59, not normalised, as the
  reference did: quirk B14) for painters, classifiers and renderers; ``(B, 64, 64, 1)`` one-hot
  images for regressors. Non-float inputs are cast to float32.
* Output: logits ``(B, 64, 64, 1)`` (``output_kind == "map"``) or ``(B, 2)`` (``"vector"``).
* ``train``: BatchNorm uses batch statistics and updates ``"batch_stats"`` when True, running
  averages when False (then each example's output depends only on that example).
* ``mask``: optional ``(B,)`` bool example mask. In training, examples with ``mask == False``
  (padding of the last partial batch) are left out of the BatchNorm batch statistics, so they
  change neither the running averages nor the outputs of the real examples. At least one example
  must be unmasked. Models without BatchNorm ignore it.

Conventions shared by the zoo:

* Kernels are he-normal (Keras ``he_normal``: truncated normal, variance ``2 / fan_in``), biases
  zero. Transposed-conv kernels, shaped ``(fs, fs, in, out)`` in Flax, use Keras' fan-in
  ``out * fs**2`` (quirk B15).
* Convolutions are the library's layers (:mod:`coordjax.linen`: ``Conv``, ``ConvTranspose``,
  ``CoordConv``), lowered as the model's ``lowering`` attribute says (``"auto"``, ``"lax"``,
  ``"matmul"``; :mod:`coordjax.conv`): the same parameters and values as Flax's ``nn.Conv`` /
  ``nn.ConvTranspose`` whatever the lowering. :func:`build` passes it to every conv.
* Every stride-1 1x1 convolution is written as a dense contraction over the channel axis
  (``nn.Dense``, kernel ``(C_in, C_out)``): identical to a 1x1 ``nn.Conv`` with the kernel reshaped
  to ``(1, 1, C_in, C_out)``, and faster on CPU and under vmap.
* BatchNorm: momentum 0.9, epsilon 1e-5, running statistics in the ``"batch_stats"`` collection.
* The first CoordConv layer (AddCoords followed by a 1x1 conv, :func:`coord_1x1`) is the library's
  ``coordjax.linen.CoordConv`` with its factored form (``tile_shape``: the ``(B, 2)`` input is
  never tiled, the coordinate term is computed once) and a ``(C + 2, F)`` kernel
  (``dense_kernel``); the coordinate channel layout is the reference's
  ``[inputs..., xx (column), yy (row)]`` (``order="xy"``).
* L2: the reference puts ``l2 * sum(w**2)`` on every conv/deconv/1x1 kernel and on nothing else.
  :func:`l2_mask` marks exactly those. Layers that must not carry L2 although they have a
  ``kernel`` (the Dense head of ``conv_regressor_uniform``) are named with the reserved prefix
  :data:`NO_L2_PREFIX`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.typing import Initializer

from coordjax import conv
from coordjax import linen as cjnn

__all__ = [
    "BN_EPSILON",
    "BN_MOMENTUM",
    "CANVAS",
    "GLOROT_UNIFORM",
    "HE_NORMAL",
    "HE_NORMAL_TRANSPOSED",
    "MODELS",
    "NO_L2_PREFIX",
    "ConvRegressorQuadrant",
    "ConvRegressorUniform",
    "CoordConvClassifier",
    "CoordConvRegressor",
    "CoordConvRenderer",
    "DeconvPainter",
    "ModelSpec",
    "TinyPainter",
    "build",
    "coord_1x1",
    "count_params",
    "he_normal",
    "l2_mask",
    "same_conv_offset",
    "same_transposed_s2_offset",
]

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
        whose Keras fan-in is ``out * fs**2`` (quirk B15).
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
"""Reserved submodule-name prefix: kernels below a module so named carry no L2 penalty."""


# --------------------------------------------------------------------------------------------
# Building blocks


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


# --------------------------------------------------------------------------------------------
# Supervised coordinate classification and rendering (coordinates -> 64x64 map)


class DeconvPainter(nn.Module):
    """The deconvolutional painter (Figure S1, top; reference ``DeconvPainter``).

    ``(B, 2)`` is reshaped to ``(B, 1, 1, 2)`` and upsampled by six stride-2 ``'SAME'`` transposed
    convolutions of widths ``64c, 64c, 64c, 32c, 32c`` (each followed by BatchNorm and ReLU) and
    ``1`` (logits): ``1 -> 2 -> 4 -> 8 -> 16 -> 32 -> 64``. The same network serves coordinate
    classification and rendering. Parameters (kernels, biases, BN scale and bias):
    ``fs**2 * (11264 c**2 + 160 c) + 768 c + 1``, e.g. 103,585 at ``fs=3, c=1``.

    Attributes:
      filter_size: ``fs``, the transposed-conv kernel side (the paper sweeps 2, 3, 4).
      channel_mult: ``c``, the width multiplier (the paper sweeps 1, 2, 3).
    """

    filter_size: int = 3
    channel_mult: int = 1
    lowering: str = "auto"

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool, mask: jax.Array | None = None) -> jax.Array:
        """Paints the centre (or square) logits.

        Args:
          x: ``(B, 2)`` raw pixel coordinates ``[x, y]``.
          train: use and update batch statistics (True) or the running averages.
          mask: optional ``(B,)`` bool; False rows are left out of the batch statistics.

        Returns:
          Logits ``(B, 64, 64, 1)``.
        """
        x = _coords_input(x, "DeconvPainter")
        c, fs = self.channel_mult, self.filter_size
        h = x.reshape(x.shape[0], 1, 1, 2)
        widths = (64 * c, 64 * c, 64 * c, 32 * c, 32 * c, 1)
        for i, width in enumerate(widths):
            h = cjnn.ConvTranspose(
                width,
                (fs, fs),
                strides=(2, 2),
                padding="SAME",
                kernel_init=HE_NORMAL_TRANSPOSED,
                lowering=self.lowering,
                name=f"deconv_{i}",
            )(h)
            if i < len(widths) - 1:
                h = nn.relu(_batch_norm(h, train=train, mask=mask, name=f"bn_{i}"))
        return h


class CoordConvClassifier(nn.Module):
    """The CoordConv coordinate classifier (Figure S1; reference ``CoordConvPainter``).

    ``(x, y)`` is tiled over 64x64, coordinates are added (channels ``[x, y, xx, yy]``), then
    1x1 convolutions ``32c, 32c, 64c, 64c`` (ReLU) and ``1`` (logits). No BatchNorm. Parameters:
    ``7168 c**2 + 384 c + 1`` (7,553 at ``c=1``).

    Attributes:
      channel_mult: ``c``, the width multiplier (the paper uses 1).
      lowering: how convolutions are computed (:mod:`coordjax.conv`).
    """

    channel_mult: int = 1
    lowering: str = "auto"

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool, mask: jax.Array | None = None) -> jax.Array:
        """Paints the centre logits.

        Args:
          x: ``(B, 2)`` raw pixel coordinates ``[x, y]``.
          train, mask: accepted for the common interface; unused (no BatchNorm).

        Returns:
          Logits ``(B, 64, 64, 1)``.
        """
        del train, mask
        x = _coords_input(x, "CoordConvClassifier")
        c = self.channel_mult
        h = nn.relu(coord_1x1(32 * c, name="coord_1x1", lowering=self.lowering)(x))
        for i, width in enumerate((32 * c, 64 * c, 64 * c), start=1):
            h = nn.relu(_pointwise(width, name=f"conv1x1_{i}")(h))
        return _pointwise(1, name="logits")(h)


class CoordConvRenderer(nn.Module):
    """The CoordConv renderer (Figure S1; reference ``CoordConvImagePainter``, 'working').

    A fixed-width (``c=1``, 7,553 parameters) :class:`CoordConvClassifier` paints the centre
    logits; a softmax over all 4096 positions sharpens them into a ``(B, 64, 64, 1)`` map, and
    ``'SAME'`` convolutions ``fs x fs`` of widths ``8m, 8m, 16m, 16m`` (ReLU) and ``1`` turn it
    into square logits (the sigmoid belongs to the loss). Parameters:
    ``7553 + fs**2 (448 m**2 + 24 m) + 48 m + 1`` (9,490 at ``fs=1, m=2``).

    Attributes:
      filter_size: ``fs`` of the convolutions after the softmax (the paper sweeps 1, 2).
      channel_mult: ``m``, their width multiplier (the paper sweeps 1, 2).
    """

    filter_size: int = 1
    channel_mult: int = 2
    lowering: str = "auto"

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool, mask: jax.Array | None = None) -> jax.Array:
        """Renders the square logits.

        Args:
          x: ``(B, 2)`` raw pixel coordinates ``[x, y]``.
          train, mask: accepted for the common interface; unused (no BatchNorm).

        Returns:
          Logits ``(B, 64, 64, 1)`` (apply a sigmoid for pixel probabilities).
        """
        x = _coords_input(x, "CoordConvRenderer")
        centre = CoordConvClassifier(channel_mult=1, lowering=self.lowering, name="coordconv")(
            x, train=train
        )
        b = centre.shape[0]
        h = jax.nn.softmax(centre.reshape(b, -1), axis=-1).reshape(centre.shape)
        m, fs = self.channel_mult, self.filter_size
        for i, width in enumerate((8 * m, 8 * m, 16 * m, 16 * m)):
            h = nn.relu(_conv(width, fs, f"conv_{i}", self.lowering)(h))
        return _conv(1, fs, "logits", self.lowering)(h)


# --------------------------------------------------------------------------------------------
# Supervised coordinate regression (one-hot 64x64 image -> (x/64, y/64))


class ConvRegressorUniform(nn.Module):
    """Conv regressor for the uniform split (Table S1; reference ``big_conv``).

    With ``c = 16 m``: four ``3x3 'SAME'`` convolutions of width ``c`` with ReLU, the first three
    each followed by 2x2 max pooling (64 -> 32 -> 16 -> 8), then flatten (``8*8*c``), Dense 64,
    ReLU, Dense 2. The Dense head uses glorot-uniform kernels and carries no L2 (its modules are
    named with :data:`NO_L2_PREFIX`). Parameters: 72,850 at ``m=1``.

    Attributes:
      channel_mult: ``m`` (reference ``-mul``; the logged runs use 1).
      lowering: how convolutions are computed (:mod:`coordjax.conv`).
    """

    channel_mult: int = 1
    lowering: str = "auto"

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool, mask: jax.Array | None = None) -> jax.Array:
        """Regresses the centre.

        Args:
          x: ``(B, 64, 64, 1)`` one-hot images.
          train, mask: accepted for the common interface; unused (no BatchNorm).

        Returns:
          ``(B, 2)`` predicted ``[x/64, y/64]``.
        """
        del train, mask
        h = _image_input(x, "ConvRegressorUniform")
        c = 16 * self.channel_mult
        for i in range(4):
            h = nn.relu(_conv(c, 3, f"conv_{i}", self.lowering)(h))
            if i < 3:
                h = nn.max_pool(h, (2, 2), strides=(2, 2), padding="VALID")
        h = h.reshape(h.shape[0], -1)
        h = nn.relu(nn.Dense(64, kernel_init=GLOROT_UNIFORM, name=f"{NO_L2_PREFIX}dense_0")(h))
        return nn.Dense(2, kernel_init=GLOROT_UNIFORM, name=f"{NO_L2_PREFIX}dense_1")(h)


class ConvRegressorQuadrant(nn.Module):
    """Fully convolutional regressor for the quadrant split (Table S1; reference ``big_conv2``).

    With ``c = 16 m`` and ``'SAME'`` padding: 5x5/2 c, ReLU; 1x1 c, ReLU; BN; 3x3 c, ReLU;
    3x3/2 c, ReLU; 3x3/2 c, BN, ReLU; 3x3/2 c, ReLU; 1x1 c, ReLU; 3x3/2 c, ReLU; 3x3 2, ReLU;
    global average pool (64 -> 32 -> 16 -> 8 -> 4 -> 2 -> mean). Parameters: 12,914 at ``m=1``.

    Attributes:
      channel_mult: ``m`` (reference ``-mul``; the logged runs use 1).
      lowering: how convolutions are computed (:mod:`coordjax.conv`).
    """

    channel_mult: int = 1
    lowering: str = "auto"

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool, mask: jax.Array | None = None) -> jax.Array:
        """Regresses the centre.

        Args:
          x: ``(B, 64, 64, 1)`` one-hot images.
          train: use and update batch statistics (True) or the running averages.
          mask: optional ``(B,)`` bool; False rows are left out of the batch statistics.

        Returns:
          ``(B, 2)`` predicted ``[x/64, y/64]``.
        """
        h = _image_input(x, "ConvRegressorQuadrant")
        c = 16 * self.channel_mult
        low = self.lowering
        h = nn.relu(_conv(c, 5, "conv_0", low, stride=2)(h))
        h = nn.relu(_conv(c, 1, "conv_1", low)(h))
        h = _batch_norm(h, train=train, mask=mask, name="bn_0")
        h = nn.relu(_conv(c, 3, "conv_2", low)(h))
        h = nn.relu(_conv(c, 3, "conv_3", low, stride=2)(h))
        h = _conv(c, 3, "conv_4", low, stride=2)(h)
        h = nn.relu(_batch_norm(h, train=train, mask=mask, name="bn_1"))
        h = nn.relu(_conv(c, 3, "conv_5", low, stride=2)(h))
        h = nn.relu(_conv(c, 1, "conv_6", low)(h))
        h = nn.relu(_conv(c, 3, "conv_7", low, stride=2)(h))
        h = nn.relu(_conv(2, 3, "conv_8", low)(h))
        return jnp.mean(h, axis=(1, 2))


class CoordConvRegressor(nn.Module):
    """The CoordConv regressor (Table S1; reference ``coordconv``), 906 parameters.

    AddCoords on the 64x64 input (channels ``[onehot, xx, yy]``), 1x1 convs 8, 8, 8, 3x3 8,
    3x3 2 (``'SAME'``), global **max** pool. There is no activation anywhere (quirk B13): the
    network is linear up to the max.

    Attributes:
      lowering: how convolutions are computed (:mod:`coordjax.conv`).
    """

    lowering: str = "auto"

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool, mask: jax.Array | None = None) -> jax.Array:
        """Regresses the centre.

        Args:
          x: ``(B, H, W, 1)`` one-hot images (64x64 in the paper).
          train, mask: accepted for the common interface; unused (no BatchNorm).

        Returns:
          ``(B, 2)`` predicted ``[x/64, y/64]``.
        """
        del train, mask
        h = _image_input(x, "CoordConvRegressor")
        h = coord_1x1(8, name="coord_1x1", lowering=self.lowering, tile_shape=None)(h)
        h = _pointwise(8, name="conv1x1_1")(h)
        h = _pointwise(8, name="conv1x1_2")(h)
        h = _conv(8, 3, "conv_3", self.lowering)(h)
        h = _conv(2, 3, "conv_4", self.lowering)(h)
        return jnp.max(h, axis=(1, 2))


class TinyPainter(nn.Module):
    """Test-only: a very small coordinates -> 64x64 logits model for fast engine tests.

    :func:`coord_1x1` of ``2 c`` channels, BatchNorm, ReLU, 1x1 to 1 logit. It exercises the
    CoordConv and BatchNorm (masking, ``batch_stats``) code paths at a negligible cost:
    ``16 c + 1`` parameters (17 at ``c=1``). Not a paper model.

    Attributes:
      channel_mult: ``c``; the hidden layer has ``2 c`` channels.
      lowering: how convolutions are computed (:mod:`coordjax.conv`).
    """

    channel_mult: int = 1
    lowering: str = "auto"

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool, mask: jax.Array | None = None) -> jax.Array:
        """Paints logits.

        Args:
          x: ``(B, 2)`` raw pixel coordinates ``[x, y]``.
          train: use and update batch statistics (True) or the running averages.
          mask: optional ``(B,)`` bool; False rows are left out of the batch statistics.

        Returns:
          Logits ``(B, 64, 64, 1)``.
        """
        x = _coords_input(x, "TinyPainter")
        h = coord_1x1(2 * self.channel_mult, name="coord_1x1", lowering=self.lowering)(x)
        h = nn.relu(_batch_norm(h, train=train, mask=mask, name="bn_0"))
        return _pointwise(1, name="logits")(h)


# --------------------------------------------------------------------------------------------
# Registry


class ModelSpec(NamedTuple):
    """A registry entry.

    Attributes:
      name: registry key.
      build: ``build(lowering=..., **shape_kwargs) -> nn.Module``.
      input_kind: ``"coords"`` (``(B, 2)`` float pixel coordinates) or ``"onehot"``
        (``(B, 64, 64, 1)``).
      output_kind: ``"map"`` (``(B, 64, 64, 1)`` logits) or ``"vector"`` (``(B, 2)``).
      shape_args: the keyword arguments of ``build``; each changes parameter shapes.
      paddable: the shape args for which a smaller model embeds exactly in a larger one
        (``coordjax.train.padding``): its channels are the leading channels of every layer and
        its ``k x k`` kernels sit inside the larger ``K x K`` kernels at ``kernel_offset(k, K)``.
      kernel_offset: ``(k, K) -> offset`` of a ``k x k`` kernel inside a ``K x K`` one, per
        spatial axis, such that the larger layer computes the smaller one's output (``None``
        when no paddable arg changes a spatial kernel size).
    """

    name: str
    build: Callable[..., nn.Module]
    input_kind: str
    output_kind: str
    shape_args: tuple[str, ...]
    paddable: tuple[str, ...] = ()
    kernel_offset: Callable[[int, int], int] | None = None

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Per-example input shape: ``(2,)`` or ``(64, 64, 1)``."""
        return (2,) if self.input_kind == "coords" else (CANVAS, CANVAS, 1)

    @property
    def output_shape(self) -> tuple[int, ...]:
        """Per-example output shape: ``(64, 64, 1)`` or ``(2,)``."""
        return (CANVAS, CANVAS, 1) if self.output_kind == "map" else (2,)


def same_conv_offset(k: int, big_k: int) -> int:
    """Offset of a ``k``-tap kernel inside a ``big_k``-tap one for stride-1 ``'SAME'`` convs.

    ``'SAME'`` pads ``(k - 1) // 2`` before, so tap ``t`` of the small kernel reads the same
    input as tap ``t + offset`` of the large one.
    """
    return (big_k - 1) // 2 - (k - 1) // 2


def same_transposed_s2_offset(k: int, big_k: int) -> int:
    """Offset of a ``k``-tap kernel inside a ``big_k``-tap one for stride-2 ``'SAME'``
    transposed convs (``lax.conv_transpose`` / ``nn.ConvTranspose``, kernel not flipped).

    Their dilated input is padded ``k - 1`` before when ``k <= 2`` and ``ceil(k / 2)`` otherwise
    (``lax``'s rule for stride 2); the kernels align when the paddings do.
    """

    def pad_before(size: int) -> int:
        return size - 1 if size <= 2 else -(-size // 2)

    return pad_before(big_k) - pad_before(k)


MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            "deconv_painter",
            DeconvPainter,
            "coords",
            "map",
            ("filter_size", "channel_mult"),
            paddable=("filter_size", "channel_mult"),
            kernel_offset=same_transposed_s2_offset,
        ),
        ModelSpec(
            "coordconv_classifier",
            CoordConvClassifier,
            "coords",
            "map",
            ("channel_mult",),
            paddable=("channel_mult",),
        ),
        ModelSpec(
            "coordconv_renderer",
            CoordConvRenderer,
            "coords",
            "map",
            ("filter_size", "channel_mult"),
            paddable=("filter_size", "channel_mult"),
            kernel_offset=same_conv_offset,
        ),
        ModelSpec(
            "conv_regressor_uniform", ConvRegressorUniform, "onehot", "vector", ("channel_mult",)
        ),
        ModelSpec(
            "conv_regressor_quadrant", ConvRegressorQuadrant, "onehot", "vector", ("channel_mult",)
        ),
        ModelSpec("coordconv_regressor", CoordConvRegressor, "onehot", "vector", ()),
        ModelSpec(
            "tiny",
            TinyPainter,
            "coords",
            "map",
            ("channel_mult",),
            paddable=("channel_mult",),
        ),
    )
}
"""The paper's models by name (plus ``"tiny"``, test-only)."""


def build(name: str, *, lowering: str = "auto", **shape_kwargs: int) -> nn.Module:
    """Builds a registry model.

    Args:
      name: a key of :data:`MODELS`.
      lowering: how every convolution of the model is computed: ``"auto"`` (resolved per
        platform when traced, :func:`coordjax.conv.resolve_lowering`), ``"lax"`` or
        ``"matmul"``. Parameters and values do not depend on it (to float rounding).
      **shape_kwargs: some of the entry's ``shape_args``, each a positive int.

    Returns:
      The (unbound) ``flax.linen`` module.

    Raises:
      ValueError: unknown name, unknown keyword, a value that is not a positive int, or an
        unknown lowering.

    >>> build("deconv_painter", filter_size=4, channel_mult=2).filter_size
    4
    """
    if name not in MODELS:
        raise ValueError(f"unknown model name {name!r}; known models: {sorted(MODELS)}")
    spec = MODELS[name]
    if lowering not in conv.LOWERINGS:
        raise ValueError(f"lowering must be one of {list(conv.LOWERINGS)}; got {lowering!r}")
    for key, value in shape_kwargs.items():
        if key not in spec.shape_args:
            raise ValueError(
                f"model {name!r} has no shape argument {key!r}; allowed: {list(spec.shape_args)}"
            )
        if isinstance(value, bool) or not isinstance(value, (int, jnp.integer)) or value < 1:
            raise ValueError(f"{key} of model {name!r} must be a positive int; got {value!r}")
    # NumPy ints accepted
    return spec.build(lowering=lowering, **{k: int(v) for k, v in shape_kwargs.items()})


def _params_of(tree: Any) -> Any:
    if isinstance(tree, Mapping) and "params" in tree:
        return tree["params"]
    return tree


def count_params(variables_or_params: Any) -> int:
    """Number of scalars in the ``"params"`` collection (kernels, biases, BN scale and bias).

    Args:
      variables_or_params: the variables dict of ``model.init`` (only its ``"params"`` are
        counted; ``"batch_stats"`` are not) or a params tree of one model. Leaves may be arrays
        or ``jax.ShapeDtypeStruct`` (from ``jax.eval_shape``).

    Returns:
      The count as a Python int.
    """
    leaves = jax.tree_util.tree_leaves(_params_of(variables_or_params))
    return sum(math.prod(leaf.shape) for leaf in leaves)


def _key_name(entry: Any) -> str:
    for attr in ("key", "name", "idx"):
        if hasattr(entry, attr):
            return str(getattr(entry, attr))
    return str(entry)


def l2_mask(params: Any) -> Any:
    """Which leaves carry the reference's L2 penalty ``l2 * sum(w**2)``.

    True exactly for conv, transposed-conv and 1x1 (Dense-form) kernels: leaves named ``kernel``
    none of whose enclosing module names start with :data:`NO_L2_PREFIX`. False for biases,
    BatchNorm scale/bias (and statistics) and the uniform regressor's Dense head.

    Args:
      params: a params tree (or any tree with the same naming, e.g. stacked over models).

    Returns:
      A tree of Python bools with the structure of ``params`` (usable with ``optax.masked``).
    """

    def mark(path, _leaf) -> bool:
        names = [_key_name(p) for p in path]
        return (
            bool(names)
            and names[-1] == "kernel"
            and not any(n.startswith(NO_L2_PREFIX) for n in names[:-1])
        )

    return jax.tree_util.tree_map_with_path(mark, params)

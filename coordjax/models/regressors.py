"""Regressors: one-hot 64x64 images ``(B, 64, 64, 1)`` -> the centre ``(x/64, y/64)``.

The paper's conv regressors for the uniform and quadrant splits and the CoordConv regressor
(Table S1).
"""

from __future__ import annotations

from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from coordjax.models.blocks import (
    GLOROT_UNIFORM,
    NO_L2_PREFIX,
    _batch_norm,
    _conv,
    _image_input,
    _pointwise,
    coord_1x1,
    max_pool,
)


class ConvRegressorUniform(nn.Module):
    """Conv regressor for the uniform split (Table S1; reference ``big_conv``).

    With ``c = 16 m``: four ``3x3 'SAME'`` convolutions of width ``c`` with ReLU, the first three
    each followed by 2x2 max pooling (64 -> 32 -> 16 -> 8), then flatten (``8*8*c``), Dense 64,
    ReLU, Dense 2. The Dense head uses glorot-uniform kernels and carries no L2 (it is not a
    convolution; :attr:`l2_exempt`). Parameters: 72,850 at ``m=1``.

    Attributes:
      channel_mult: ``m`` (reference ``-mul``; the logged runs use 1).
      lowering: how convolutions are computed (:mod:`coordjax.conv`).
    """

    channel_mult: int = 1
    lowering: str = "auto"

    l2_exempt: ClassVar[tuple[str, ...]] = (f"{NO_L2_PREFIX}dense_0", f"{NO_L2_PREFIX}dense_1")
    """The submodules whose kernels carry no L2 (:func:`coordjax.models.l2_mask`): the head."""

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
                h = max_pool(h, (2, 2))
        h = h.reshape(h.shape[0], -1)
        head_hidden, head_out = self.l2_exempt  # the Dense head is named by its L2 exemption
        h = nn.relu(nn.Dense(64, kernel_init=GLOROT_UNIFORM, name=head_hidden)(h))
        return nn.Dense(2, kernel_init=GLOROT_UNIFORM, name=head_out)(h)


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
    3x3 2 (``'SAME'``), global **max** pool. No activation anywhere (as in the reference code):
    the network is linear up to the max.

    Attributes:
      lowering: how convolutions are computed (:mod:`coordjax.conv`).
      pool_margin: the global max pool skips this many pixels at each border (0, the
        reference: the whole map). An intervention for the quadrant stall: no one-hot's 5x5
        receptive field reaches the 2-pixel border, so a max there gets no gradient from it.
    """

    lowering: str = "auto"
    pool_margin: int = 0

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
        m = self.pool_margin
        if not isinstance(m, int) or isinstance(m, bool) or not 0 <= 2 * m < min(h.shape[1:3]):
            raise ValueError(
                f"pool_margin must be an int >= 0 leaving part of the {h.shape[1]}x{h.shape[2]} "
                f"map; got {m!r}"
            )
        return jnp.max(h[:, m : h.shape[1] - m, m : h.shape[2] - m], axis=(1, 2))

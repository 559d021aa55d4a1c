"""Painters: coordinates ``(B, 2)`` -> 64x64 logits (classification and rendering).

The deconvolutional painter, the CoordConv classifier and renderer of the paper (Figure S1), and
the test-only :class:`TinyPainter`.
"""

from __future__ import annotations

import flax.linen as nn
import jax

from coordjax import linen as cjnn
from coordjax.models.blocks import (
    HE_NORMAL_TRANSPOSED,
    _batch_norm,
    _conv,
    _coords_input,
    _pointwise,
    coord_1x1,
)


class DeconvPainter(nn.Module):
    """The deconvolutional painter (Figure S1, top; reference ``DeconvPainter``).

    ``(B, 2)`` is reshaped to ``(B, 1, 1, 2)`` and upsampled by six stride-2 ``'SAME'`` transposed
    convolutions of widths ``64c, 64c, 64c, 32c, 32c`` (each followed by BatchNorm and ReLU) and
    ``1`` (logits): ``1 -> 2 -> 4 -> 8 -> 16 -> 32 -> 64``. The same network serves coordinate
    classification and rendering. Parameters (kernels, biases, BN scale and bias):
    ``fs**2 * (11264 c**2 + 160 c) + 768 c + 1``, e.g. 103,585 at ``fs=3, c=1``.

    With ``batch_norm=False`` (registry ``"deconv_painter_nobn"``: the Keras tutorial's painter,
    which reached the paper's ~86 % uniform test accuracy without BatchNorm) each deconvolution
    is followed by ReLU only: ``fs**2 * (11264 c**2 + 160 c) + 256 c + 1`` parameters.

    Attributes:
      filter_size: ``fs``, the transposed-conv kernel side (the paper sweeps 2, 3, 4).
      channel_mult: ``c``, the width multiplier (the paper sweeps 1, 2, 3).
      batch_norm: BatchNorm after every hidden deconvolution (the reference's painter).
    """

    filter_size: int = 3
    channel_mult: int = 1
    lowering: str = "auto"
    batch_norm: bool = True

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
                if self.batch_norm:
                    h = _batch_norm(h, train=train, mask=mask, name=f"bn_{i}")
                h = nn.relu(h)
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

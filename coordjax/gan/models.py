"""Table S4's generators and discriminators (Flax Linen), with a width multiplier and a canvas.

At ``canvas=64, width=1`` the parameter counts are the paper's: conv generator 6,413,315,
CoordConv generator 444,931, discriminator 4,316,545, CoordConv discriminator 4,319,745. Table
S4 lists only kernels and channels; the counts come out exactly with the reference code's
layers (shared/reference/experiments_spec.md, section 7.2):

* every convolution, transposed convolution and dense layer has a bias;
* BatchNorm with a scale and an offset (2 parameters per channel; its running statistics are
  not parameters) after the generator's FC layer and its first three transposed convolutions,
  and after the discriminator's second, third and fourth convolutions; none in the CoordConv
  generator;
* the CoordConv layers add two coordinate channels (row and column in [-1, 1], no radius): the
  CoordConv generator's first layer sees ``256 + 2`` channels, the CoordConv discriminator's
  ``3 + 2``.

Other choices the table leaves open, from the reference code: ReLU in the generators, leaky
ReLU (slope 0.2) in the discriminators, Glorot-uniform kernels (TensorFlow's default) except
He-normal in the CoordConv generator, BatchNorm momentum 0.9 and epsilon 1e-5 (ours; the
reference's values were not recorded). The CoordConv generator ends without tanh in Table S4 and
in the reference code, whose discriminator receives that raw output while its samples are shown
through tanh; ``tanh=True`` puts tanh on both paths.

``width`` multiplies every hidden channel count (``max(1, round(c * width))``; the 3 image
channels and the discriminator's one logit stay); ``canvas`` (a multiple of 16) sets the image
side: the conv generator starts from ``canvas / 16`` squared positions.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from coordjax.linen import CoordConv

GLOROT = nn.initializers.glorot_uniform()
HE = nn.initializers.he_normal()
BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5
LEAK = 0.2
PAPER_PARAMS = {
    ("generator", "conv"): 6_413_315,
    ("generator", "coordconv"): 444_931,
    ("discriminator", False): 4_316_545,
    ("discriminator", True): 4_319_745,
}
"""Table S4's parameter counts at 64 x 64 and width 1."""


def channels(base: int, width: float) -> int:
    """A hidden layer's channels at width multiplier ``width``."""
    return max(1, round(base * width))


def _norm(train: bool) -> nn.BatchNorm:
    return nn.BatchNorm(use_running_average=not train, momentum=BN_MOMENTUM, epsilon=BN_EPSILON)


class ConvGenerator(nn.Module):
    """The conv (DCGAN) generator: FC to ``(canvas/16)^2 x 512``, four 5x5 stride-2
    transposed convolutions (256, 128, 64, 3), tanh.

    ``z: (B, Z) -> (B, canvas, canvas, 3)`` in [-1, 1].
    """

    canvas: int = 64
    width: float = 1.0

    @nn.compact
    def __call__(self, z: jax.Array, train: bool = False) -> jax.Array:
        start, c0 = self.canvas // 16, channels(512, self.width)
        x = nn.Dense(start * start * c0, kernel_init=GLOROT)(z)
        x = nn.relu(_norm(train)(x.reshape(z.shape[0], start, start, c0)))
        for base in (256, 128, 64):
            x = nn.ConvTranspose(channels(base, self.width), (5, 5), strides=(2, 2),
                                 padding="SAME", kernel_init=GLOROT)(x)  # fmt: skip
            x = nn.relu(_norm(train)(x))
        x = nn.ConvTranspose(3, (5, 5), strides=(2, 2), padding="SAME", kernel_init=GLOROT)(x)
        return jnp.tanh(x)


class CoordConvGenerator(nn.Module):
    """The CoordConv generator: ``z`` tiled over the canvas with two coordinate channels, then
    1x1 convolutions 512, 256, 256, 128, 64, two 3x3 of 64 and a 1x1 of 3 (ReLU between).

    ``z: (B, Z) -> (B, canvas, canvas, 3)``: raw (the reference's) or through tanh (``tanh``).
    The first layer never materialises the tiled ``z`` (``CoordConv(tile_shape=...)``).
    """

    canvas: int = 64
    width: float = 1.0
    tanh: bool = False

    @nn.compact
    def __call__(self, z: jax.Array, train: bool = False) -> jax.Array:
        del train  # no BatchNorm
        x = CoordConv(channels(512, self.width), (1, 1), kernel_init=HE,
                      tile_shape=(self.canvas, self.canvas))(z)  # fmt: skip
        x = nn.relu(x)
        for base in (256, 256, 128, 64):
            x = nn.relu(nn.Conv(channels(base, self.width), (1, 1), kernel_init=HE)(x))
        for _ in range(2):
            x = nn.relu(nn.Conv(channels(64, self.width), (3, 3), padding="SAME",
                                kernel_init=HE)(x))  # fmt: skip
        x = nn.Conv(3, (1, 1), kernel_init=HE)(x)
        return jnp.tanh(x) if self.tanh else x


class Discriminator(nn.Module):
    """Four 5x5 stride-2 convolutions (64, 128, 256, 512; BatchNorm after the last three),
    leaky ReLU, then a dense layer to one logit; ``coords``: the first is CoordConv.

    ``x: (B, canvas, canvas, 3) -> (B,)`` logits (real: large).
    """

    canvas: int = 64
    width: float = 1.0
    coords: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        first = CoordConv if self.coords else nn.Conv
        x = first(channels(64, self.width), (5, 5), strides=(2, 2), padding="SAME",
                  kernel_init=GLOROT)(x)  # fmt: skip
        x = nn.leaky_relu(x, LEAK)
        for base in (128, 256, 512):
            x = nn.Conv(channels(base, self.width), (5, 5), strides=(2, 2), padding="SAME",
                        kernel_init=GLOROT)(x)  # fmt: skip
            x = nn.leaky_relu(_norm(train)(x), LEAK)
        return nn.Dense(1, kernel_init=GLOROT)(x.reshape(x.shape[0], -1))[:, 0]


GENERATORS = ("conv", "coordconv")


def generator(kind: str, canvas: int = 64, width: float = 1.0, tanh: bool = False) -> nn.Module:
    """The ``kind`` generator (``"conv"`` or ``"coordconv"``); ``tanh`` applies to CoordConv
    only (the conv generator always ends in tanh)."""
    if kind == "conv":
        return ConvGenerator(canvas=canvas, width=width)
    if kind == "coordconv":
        return CoordConvGenerator(canvas=canvas, width=width, tanh=tanh)
    raise ValueError(f"generator must be one of {list(GENERATORS)}; got {kind!r}")


def samples(kind: str, tanh: bool, outputs: jax.Array) -> jax.Array:
    """A generator's outputs as images in [-1, 1]: the raw CoordConv output through tanh, as
    the reference shows its samples; anything else as it is."""
    return jnp.tanh(outputs) if kind == "coordconv" and not tanh else outputs


def param_count(module: nn.Module, input_shape: tuple[int, ...]) -> int:
    """The parameters of ``module`` on inputs ``input_shape`` (shapes only: ``eval_shape``)."""
    shapes = jax.eval_shape(
        lambda x: module.init(jax.random.key(0), x)["params"],
        jax.ShapeDtypeStruct(input_shape, jnp.float32),
    )
    return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(shapes))

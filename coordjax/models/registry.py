"""The zoo's registry: the models by name, how to build them, their parameter counts and L2."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from coordjax import conv
from coordjax.models.blocks import CANVAS
from coordjax.models.painters import (
    CoordConvClassifier,
    CoordConvRenderer,
    DeconvPainter,
    TinyPainter,
)
from coordjax.models.regressors import (
    ConvRegressorQuadrant,
    ConvRegressorUniform,
    CoordConvRegressor,
)
from coordjax.train.penalty import l2_mask as l2_mask


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
        (``coordjax.paper.padding``): its channels are the leading channels of every layer and
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

    @property
    def l2_exempt(self) -> tuple[str, ...]:
        """The submodules whose kernels carry no L2, as the model declares (:func:`l2_mask`)."""
        return tuple(getattr(self.build, "l2_exempt", ()))


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
            "deconv_painter_nobn",
            functools.partial(DeconvPainter, batch_norm=False),
            "coords",
            "map",
            ("filter_size", "channel_mult"),
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
        platform and kind of convolution when traced, :func:`coordjax.conv.default_lowering`),
        ``"lax"``, ``"matmul"`` or ``"zero_insertion"``. Parameters and values do not depend
        on it (to float rounding).
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

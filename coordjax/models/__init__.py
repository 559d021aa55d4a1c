"""The paper's model zoo (flax.linen) and a registry of it by name.

Liu et al. 2018 (arXiv:1807.03247), supplementary S1 (Figure S1) and S3 (Table S1), as implemented
in the reference code (``uber-research/CoordConv:model_builders.py``); each model's docstring
gives its exact layers and parameter count.

Every model is a ``flax.linen.Module`` applied as::

    model.apply(variables, x, train=bool, mask=None, mutable=["batch_stats"])

* ``x``: ``(B, 2)`` float raw pixel coordinates ``[x, y]`` (values 4..59, not normalised, as the
  reference did) for painters, classifiers and renderers; ``(B, 64, 64, 1)`` one-hot
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
  ``out * fs**2`` (as the reference's Keras layers did).
* Convolutions are the library's layers (:mod:`coordjax.linen`: ``Conv``, ``ConvTranspose``,
  ``CoordConv``), lowered as the model's ``lowering`` attribute says (``"auto"``, ``"lax"``,
  ``"matmul"``, ``"zero_insertion"``; :mod:`coordjax.conv`): the same parameters and values as
  Flax's ``nn.Conv`` / ``nn.ConvTranspose`` whatever the lowering. :func:`build` passes it
  to every conv.
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
  :func:`l2_mask` marks exactly those: every ``kernel`` except those of the submodules a model
  lists in its ``l2_exempt`` (the Dense head of ``conv_regressor_uniform``; see also
  :attr:`ModelSpec.l2_exempt`).

Modules by job: :mod:`~coordjax.models.blocks` (initialisers, shared layers),
:mod:`~coordjax.models.painters` (coordinates -> 64x64 maps), :mod:`~coordjax.models.regressors`
(images -> centres), :mod:`~coordjax.models.registry` (:data:`MODELS`, :func:`build`,
:func:`count_params`, :func:`l2_mask`). Every public name is importable from here.
"""

from coordjax.models.blocks import (
    BN_EPSILON,
    BN_MOMENTUM,
    CANVAS,
    GLOROT_UNIFORM,
    HE_NORMAL,
    HE_NORMAL_TRANSPOSED,
    coord_1x1,
    he_normal,
)
from coordjax.models.painters import (
    CoordConvClassifier,
    CoordConvRenderer,
    DeconvPainter,
    TinyPainter,
)
from coordjax.models.registry import (
    MODELS,
    ModelSpec,
    build,
    count_params,
    l2_mask,
    same_conv_offset,
    same_transposed_s2_offset,
)
from coordjax.models.regressors import (
    NO_L2_PREFIX,
    ConvRegressorQuadrant,
    ConvRegressorUniform,
    CoordConvRegressor,
)

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

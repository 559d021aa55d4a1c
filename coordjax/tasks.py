"""The paper's three supervised coordinate tasks: what a model is fed, its loss and its metrics.

Liu et al. 2018 (arXiv:1807.03247), section 4 and supplementary S2-S4, as the reference code
(``uber-research/CoordConv``) defines them.

Every loss and metric is per example: it maps model outputs and targets with a leading batch
axis ``B`` to ``(B,)`` float32 values, so a trainer can take masked means over padded batches
(and vmap over models). Targets may be any numeric dtype (bool, int or float); they are cast to
the outputs' dtype. The L2 penalty on kernels is not part of a task (see
:func:`coordjax.models.l2_mask`).

=============== ================ ======================== ======================================
task            input_field      target_field             loss (per example)
=============== ================ ======================== ======================================
classification  ``centers``      ``onehots``              softmax cross-entropy over 4096 pixels
rendering       ``centers``      ``images``               mean pixel sigmoid CE, or MSE on logits
regression      ``onehots``      ``normalized_centers``   mean over the 2 outputs of squared error
=============== ================ ======================== ======================================

``centers`` are fed as float32 raw pixel coordinates ``[x, y]`` (x = column, y = row), not
normalised (as the reference code feeds them).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax

from coordjax.train.task import Task  # the type lives with the recipe: coordjax.train.Task

__all__ = [
    "RENDERING_LOSSES",
    "TASKS",
    "classification",
    "get",
    "regression",
    "rendering",
]

REGRESSION_PIXEL_SCALE = 64.0
"""Regression targets are ``[x / 64, y / 64]``, so an error of 1/64 is one pixel."""

RENDERING_LOSSES = ("sigmoid", "mse")


def _check_pair(outputs: jax.Array, targets: jax.Array, task: str, ndim: int) -> jax.Array:
    """Checks shapes (trace-time) and returns the targets cast to the outputs' dtype."""
    if outputs.ndim != ndim or outputs.shape != targets.shape:
        want = "(B, H, W, 1) maps" if ndim == 4 else "(B, 2) vectors"
        raise ValueError(
            f"{task}: outputs and targets must be {want} of the same shape; "
            f"got outputs {tuple(outputs.shape)} and targets {tuple(targets.shape)}"
        )
    return jnp.asarray(targets).astype(outputs.dtype)


def _flat(a: jax.Array) -> jax.Array:
    return a.reshape(a.shape[0], -1)


# --------------------------------------------------------------------------------------------
# Supervised coordinate classification


def _classification_loss(logits: jax.Array, onehots: jax.Array) -> jax.Array:
    """Softmax cross-entropy over the flattened pixels.

    Args:
      logits: ``(B, H, W, 1)``.
      onehots: ``(B, H, W, 1)``, one 1 per example (any probability map works).

    Returns:
      ``(B,)``.
    """
    onehots = _check_pair(logits, onehots, "classification", 4)
    return optax.softmax_cross_entropy(_flat(logits), _flat(onehots))


def _classification_metrics(logits: jax.Array, onehots: jax.Array) -> dict[str, jax.Array]:
    """Exact-pixel accuracy and pixel distances between the predicted and true argmax.

    A flat index ``a`` of an ``(H, W)`` map is decoded as ``row = a // W``, ``col = a % W``.
    Ties (e.g. constant logits) resolve to the first maximal index, like ``np.argmax``.

    Args:
      logits: ``(B, H, W, 1)``.
      onehots: ``(B, H, W, 1)``.

    Returns:
      ``accuracy`` (1.0 for a hit, else 0.0), ``eucl_dist`` and ``manh_dist`` (pixels), each
      ``(B,)`` float32.
    """
    onehots = _check_pair(logits, onehots, "classification", 4)
    width = logits.shape[2]
    pred = jnp.argmax(_flat(logits), axis=-1)
    true = jnp.argmax(_flat(onehots), axis=-1)
    d_row = (pred // width - true // width).astype(jnp.float32)
    d_col = (pred % width - true % width).astype(jnp.float32)
    return {
        "accuracy": (pred == true).astype(jnp.float32),
        "eucl_dist": jnp.sqrt(d_row**2 + d_col**2),
        "manh_dist": jnp.abs(d_row) + jnp.abs(d_col),
    }


def classification() -> Task:
    """Supervised Coordinate Classification: ``(x, y)`` -> one-hot 64x64 map (paper section 4).

    Returns:
      A :class:`Task` with softmax cross-entropy over the 4096 pixels and metrics ``accuracy``,
      ``eucl_dist``, ``manh_dist``.
    """
    return Task(
        name="classification",
        input_field="centers",
        target_field="onehots",
        loss=_classification_loss,
        metrics=_classification_metrics,
    )


# --------------------------------------------------------------------------------------------
# Supervised rendering


def _sigmoid_loss(logits: jax.Array, images: jax.Array) -> jax.Array:
    """Mean over pixels of the sigmoid cross-entropy; ``(B, H, W, 1)`` x 2 -> ``(B,)``."""
    images = _check_pair(logits, images, "rendering", 4)
    return jnp.mean(optax.sigmoid_binary_cross_entropy(_flat(logits), _flat(images)), axis=-1)


def _mse_loss(logits: jax.Array, images: jax.Array) -> jax.Array:
    """Mean over pixels of ``(logits - target)**2``, on raw logits (as the reference code does)."""
    images = _check_pair(logits, images, "rendering", 4)
    return jnp.mean(jnp.square(_flat(logits) - _flat(images)), axis=-1)


def _iou(painted: jax.Array, target: jax.Array) -> jax.Array:
    """IoU of two ``(B, P)`` boolean masks, ``(B,)``; 1.0 where both are empty (they agree)."""
    inter = jnp.sum(painted & target, axis=-1).astype(jnp.float32)
    union = jnp.sum(painted | target, axis=-1).astype(jnp.float32)
    return jnp.where(union > 0, inter / jnp.maximum(union, 1.0), 1.0)


def _rendering_metrics(logits: jax.Array, images: jax.Array) -> dict[str, jax.Array]:
    """IoU and pixel accuracy of the painted square.

    A pixel is painted when ``sigmoid(logit) > 0.5`` strictly (``tf.round`` sends exactly 0.5 to
    0), and is in the target when the target value is ``> 0`` (targets are binarised, unlike the
    reference, whose soft 0.502 targets capped IoU at ~0.5). When neither the painting
    nor the target has any pixel (empty union) the IoU is defined as 1.0: the two agree exactly.

    Args:
      logits: ``(B, H, W, 1)``.
      images: ``(B, H, W, 1)`` target images.

    Returns:
      ``iou`` and ``pixel_accuracy`` (fraction of pixels where painted == target), each ``(B,)``
      float32.
    """
    images = _check_pair(logits, images, "rendering", 4)
    painted = jax.nn.sigmoid(_flat(logits)) > 0.5
    target = _flat(images) > 0
    return {
        "iou": _iou(painted, target),
        "pixel_accuracy": jnp.mean((painted == target).astype(jnp.float32), axis=-1),
    }


def _mse_rendering_metrics(logits: jax.Array, images: jax.Array) -> dict[str, jax.Array]:
    """:func:`_rendering_metrics` plus ``output_iou``, ``(B,)``: the IoU with a pixel painted where
    the raw output is ``> 0.5``, the midpoint of the 0 / 1 targets that the MSE regresses onto.

    The faithful ``iou`` thresholds ``sigmoid(output)`` at 0.5, i.e. the output at 0, where the
    MSE puts the background: under this loss it paints background pixels by the sign of their
    residual noise (the reference's behaviour), so ``output_iou`` is the one that measures the fit.
    """
    metrics = _rendering_metrics(logits, images)
    metrics["output_iou"] = _iou(_flat(logits) > 0.5, _flat(images) > 0)
    return metrics


def rendering(loss: str = "sigmoid") -> Task:
    """Supervised Rendering: ``(x, y)`` -> 64x64 image of the 9x9 square (paper section 4).

    Args:
      loss: ``"sigmoid"`` (mean pixelwise sigmoid cross-entropy, the paper's) or ``"mse"`` (mean
        squared error on raw logits, the reference's ``-mse``).

    Returns:
      A :class:`Task` with metrics ``iou`` and ``pixel_accuracy``, and under ``"mse"`` also
      ``output_iou`` (painted where the raw output is ``> 0.5``; see ``iou``'s threshold there).

    Raises:
      ValueError: unknown ``loss``.
    """
    losses = {"sigmoid": _sigmoid_loss, "mse": _mse_loss}
    if loss not in losses:
        raise ValueError(f"rendering loss must be one of {list(RENDERING_LOSSES)}; got {loss!r}")
    return Task(
        name="rendering",
        input_field="centers",
        target_field="images",
        loss=losses[loss],
        metrics=_mse_rendering_metrics if loss == "mse" else _rendering_metrics,
    )


# --------------------------------------------------------------------------------------------
# Supervised coordinate regression


def _regression_loss(pred: jax.Array, target: jax.Array) -> jax.Array:
    """Mean over the 2 outputs of the squared error; ``(B, 2)`` x 2 -> ``(B,)``."""
    target = _check_pair(pred, target, "regression", 2)
    return jnp.mean(jnp.square(pred - target), axis=-1)


def _regression_metrics(pred: jax.Array, target: jax.Array) -> dict[str, jax.Array]:
    """Pixel error and squared error.

    Args:
      pred: ``(B, 2)`` predicted ``[x/64, y/64]``.
      target: ``(B, 2)`` true ``[x/64, y/64]``.

    Returns:
      ``pixel_error`` = ``64 * ||pred - target||_2`` (the reference's ``eucl_dist``) and ``mse``
      (the loss), each ``(B,)`` float32.
    """
    target = _check_pair(pred, target, "regression", 2)
    sq = jnp.square(pred - target)
    return {
        "pixel_error": REGRESSION_PIXEL_SCALE * jnp.sqrt(jnp.sum(sq, axis=-1)),
        "mse": jnp.mean(sq, axis=-1),
    }


def regression() -> Task:
    """Supervised Coordinate Regression: one-hot 64x64 image -> ``[x/64, y/64]`` (section 4).

    Returns:
      A :class:`Task` with the mean squared error and metrics ``pixel_error``, ``mse``.
    """
    return Task(
        name="regression",
        input_field="onehots",
        target_field="normalized_centers",
        loss=_regression_loss,
        metrics=_regression_metrics,
    )


TASKS: dict[str, Callable[..., Task]] = {
    "classification": classification,
    "rendering": rendering,
    "regression": regression,
}
"""Task factories by name; options are their keyword arguments."""


def get(name: str, **options) -> Task:
    """The task ``name`` with its options.

    Args:
      name: a key of :data:`TASKS`.
      **options: keyword arguments of that task's factory (``rendering``: ``loss``).

    Returns:
      The :class:`Task`.

    Raises:
      ValueError: unknown task name, unknown option, or invalid option value.

    >>> get("rendering", loss="mse").target_field
    'images'
    """
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; known tasks: {sorted(TASKS)}")
    factory = TASKS[name]
    allowed = list(inspect.signature(factory).parameters)
    for key in options:
        if key not in allowed:
            raise ValueError(f"task {name!r} has no option {key!r}; allowed options: {allowed}")
    return factory(**options)

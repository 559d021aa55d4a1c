"""Padding: a smaller model trained exactly inside a larger ("superset") one.

A model with fewer channels or smaller kernels embeds in a larger model of the same family: its
parameters fill the leading channels of every layer and, for ``k x k`` kernels inside ``K x K``
ones, the taps at ``kernel_offset(k, K)`` (``ModelSpec.kernel_offset``); everything else is zero.
Zero channels stay zero through every layer (their BatchNorm scale and bias are zero too), so the
superset computes the small model's outputs. Training keeps it that way through a parameter mask
(1 on the embedded entries, 0 elsewhere): the forward pass uses ``params * mask``, so the masked
entries get exactly zero gradient, zero Adam moments, zero L2 and zero updates (the extra kernel
taps would otherwise see real inputs and learn).

The sweep engine uses this to train models of different filter sizes and widths in one vmapped
program (``EngineOptions(pad=...)``): :func:`init_padded` builds such a program's initial state,
and :func:`unpad_state` cuts one model back out of a saved one.

Leaves follow Flax's layouts: rank-4 leaves are
``(K, K, C_in, C_out)`` kernels (axes 0 and 1 spatial), every other axis is a channel axis, and a
rank-2 ``(C_in, C_out)`` kernel inside a rank-4 one is a 1x1 kernel (the zoo writes 1x1
convolutions as dense contractions).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import numpy as np

from coordjax import models
from coordjax.train.step import RunSpec, TrainSetup, TrainState

KernelOffset = Callable[[int, int], int] | None


def leaf_slices(
    small_shape: tuple[int, ...], big_shape: tuple[int, ...], kernel_offset: KernelOffset
) -> tuple[slice, ...]:
    """Where a small leaf sits inside the big one (per axis: a slice of the big leaf).

    Raises:
      ValueError: the ranks differ, the small leaf is larger on some axis, or a spatial axis
        differs but the model declares no ``kernel_offset``.
    """
    small_shape = _in_rank_of(small_shape, big_shape)
    if len(small_shape) != len(big_shape) or any(
        s > b for s, b in zip(small_shape, big_shape, strict=True)
    ):
        raise ValueError(f"a leaf of shape {small_shape} does not fit in one of shape {big_shape}")
    slices = []
    for axis, (small, big) in enumerate(zip(small_shape, big_shape, strict=True)):
        start = 0
        if small != big and len(big_shape) == 4 and axis < 2:
            if kernel_offset is None:
                raise ValueError(
                    f"kernel size {small} differs from {big} but the model declares no "
                    "kernel_offset (its spatial kernels cannot be padded)"
                )
            start = kernel_offset(small, big)
        slices.append(slice(start, start + small))
    return tuple(slices)


def _in_rank_of(small_shape: tuple[int, ...], big_shape: tuple[int, ...]) -> tuple[int, ...]:
    """A dense-form 1x1 kernel ``(C_in, C_out)`` seen as ``(1, 1, C_in, C_out)`` next to a
    rank-4 kernel; any other shape unchanged."""
    if len(small_shape) == 2 and len(big_shape) == 4:
        return (1, 1, *small_shape)
    return tuple(small_shape)


def cut(big: Any, small_shape: tuple[int, ...], kernel_offset: KernelOffset) -> np.ndarray:
    """One small leaf (of ``small_shape``) cut out of a big leaf (see :func:`extract`)."""
    big = np.asarray(big)
    return big[leaf_slices(tuple(small_shape), big.shape, kernel_offset)].reshape(small_shape)


def embed(small: Any, big_template: Any, kernel_offset: KernelOffset, *, axis0: bool = False):
    """The small tree's values inside copies of the big template's leaves (NumPy arrays).

    Args:
      small: a tree of arrays (one model's, or stacked over models when ``axis0``).
      big_template: a tree with the same structure and larger (or equal) leaves; its values fill
        the entries outside the embedding (zeros for parameters, e.g. ones for a running
        variance).
      kernel_offset: the model family's ``ModelSpec.kernel_offset``.
      axis0: both trees carry a leading model axis of equal size, left as is.
    """

    def one(s, b):
        s, out = np.asarray(s), np.array(b, copy=True)
        lead = (slice(None),) if axis0 else ()
        core = slice(1, None) if axis0 else slice(None)
        small_shape = _in_rank_of(s.shape[core], out.shape[core])
        s = s.reshape(s.shape[:1] + small_shape if axis0 else small_shape)
        out[lead + leaf_slices(small_shape, out.shape[core], kernel_offset)] = s
        return out

    return jax.tree.map(one, small, big_template)


def extract(big: Any, small_shapes: Any, kernel_offset: KernelOffset) -> Any:
    """The inverse of :func:`embed`: the small model's leaves cut out of the big tree.

    ``small_shapes`` is a tree of the small leaves (arrays or ``jax.ShapeDtypeStruct``).
    """
    return jax.tree.map(lambda b, s: cut(b, tuple(s.shape), kernel_offset), big, small_shapes)


def embedding_mask(small_shapes: Any, big_shapes: Any, kernel_offset: KernelOffset) -> Any:
    """float32 trees of the big shapes: 1 where :func:`embed` puts the small model, 0 elsewhere."""
    ones = jax.tree.map(lambda s: np.ones(s.shape, np.float32), small_shapes)
    zeros = jax.tree.map(lambda b: np.zeros(b.shape, np.float32), big_shapes)
    return embed(ones, zeros, kernel_offset)


def _path_names(path: Sequence[Any]) -> list[str]:
    """The names along a key path (``mu``, ``Conv_0``, ``kernel``): how two trees of one
    model's variables (its parameters and Adam's moments of them) are matched."""
    return jax.tree_util.keystr(tuple(path), simple=True, separator="/").split("/")


def init_padded(
    setup: TrainSetup,
    model_name: str,
    run_shapes: Sequence[Mapping[str, int]],
    runs: RunSpec,
    init: Callable[[TrainSetup, RunSpec], TrainState],
) -> tuple[TrainState, RunSpec, list[int]]:
    """Models of several shapes initialised each at its own shape, embedded in ``setup``'s model.

    Initialising at the model's own shape gives exactly the parameters it gets alone (the same key
    draws a differently shaped kernel otherwise).

    Args:
      setup: the bucket's setup; its model is the superset of every run's model.
      model_name: the models' registry name (:data:`coordjax.models.MODELS`).
      run_shapes: each model's shape keyword arguments, one per model of ``runs``.
      runs: the stacked runs (leading model axis M).
      init: ``init(setup, runs) -> states``, the stacked initial states of ``runs``' models.

    Returns:
      ``(state, runs, param_counts)``: the stacked superset state (NumPy), ``runs`` with their
      parameter masks, and each model's own parameter count.
    """
    big = jax.device_get(init(setup, runs))
    offset = models.MODELS[model_name].kernel_offset
    params = jax.tree.map(np.zeros_like, big.params)
    batch_stats = jax.tree.map(np.array, big.batch_stats)  # writable copies
    mask = jax.tree.map(np.zeros_like, big.params)
    param_counts = [0] * len(run_shapes)
    members: dict[tuple, list[int]] = {}
    for i, shape in enumerate(run_shapes):
        members.setdefault(tuple(sorted(shape.items())), []).append(i)
    for shape, rows in members.items():
        own_model = models.build(model_name, lowering=setup.model.lowering, **dict(shape))
        index = np.asarray(rows)
        own_runs = jax.tree.map(lambda x, index=index: x[index], runs)
        own = jax.device_get(init(dataclasses.replace(setup, model=own_model), own_runs))
        ones = jax.tree.map(np.ones_like, own.params)
        for tree, part in ((params, own.params), (batch_stats, own.batch_stats), (mask, ones)):
            _embed_rows(tree, part, index, offset)
        count = models.count_params(jax.tree.map(lambda x: x[0], own.params))
        for i in rows:
            param_counts[i] = count
    state = big._replace(
        params=params,
        batch_stats=batch_stats,
        opt_state=jax.vmap(setup.optimizer.init)(params),
    )
    return state, runs._replace(param_mask=mask), param_counts


def _embed_rows(big_tree: Any, small_tree: Any, rows: np.ndarray, offset: KernelOffset) -> None:
    """Writes ``small_tree`` (stacked over ``rows``) into rows of ``big_tree``, in place."""
    for big, small in zip(jax.tree.leaves(big_tree), jax.tree.leaves(small_tree), strict=True):
        big[rows] = embed(small, big[rows], offset, axis0=True)


def unpad_state(state: Any, model_name: str, shape_kwargs: Mapping[str, int]) -> Any:
    """One model's parameters, statistics and Adam moments cut out of a superset state.

    Args:
      state: one model's state (a dict of NumPy trees, no model axis) trained inside a larger
        model of the family ``model_name``.
      shape_kwargs: the model's own shape keyword arguments.
    """
    spec = models.MODELS[model_name]
    dummy = jax.ShapeDtypeStruct((1, *spec.input_shape), np.float32)
    own = jax.eval_shape(
        lambda x: models.build(model_name, **shape_kwargs).init(jax.random.key(0), x, train=False),
        dummy,
    )
    # Adam's moments have the parameters' tree; match leaves by their path below the collection.
    shapes = {}
    for collection in ("params", "batch_stats"):
        for path, leaf in jax.tree_util.tree_flatten_with_path(own.get(collection, {}))[0]:
            shapes[(collection, *_path_names(path))] = leaf.shape

    def cut_leaf(path, leaf):
        names = _path_names(path)
        collection = "batch_stats" if names[0] == "batch_stats" else "params"
        for start in range(len(names)):
            own_shape = shapes.get((collection, *names[start + 1 :]))
            if own_shape is not None:
                return cut(leaf, own_shape, spec.kernel_offset)
        return leaf

    return jax.tree_util.tree_map_with_path(cut_leaf, state)

"""The dataset on the device once, and each model's split as padded index arrays.

Every model of a sweep reads the same examples (the paper's: 3136 Not-so-Clevr examples); what
differs between models is which of them are its train and test examples. A split is therefore a
pair of index arrays, padded to a common length and paired with the true counts, so models on
different splits (with different numbers of examples) share one compiled program and batches are
gathered by index.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from coordjax.train.task import Task


class DeviceData(NamedTuple):
    """All examples in generation order, in the form the task feeds the model.

    inputs: (N, ...) float32 model inputs; targets: (N, ...) float32 targets.
    """

    inputs: jax.Array
    targets: jax.Array


class SplitIndices(NamedTuple):
    """One model's split: indices into :class:`DeviceData`, padded with zeros.

    train_idx: (P_train,) int32, valid for the first ``n_train`` entries; likewise for test.
    """

    train_idx: jax.Array
    n_train: jax.Array
    test_idx: jax.Array
    n_test: jax.Array


def device_split_data(task: Task, data) -> DeviceData:
    """Puts the task's view of a data object's own arrays on the default device, by position.

    ``data`` has ``.train`` and ``.test`` sides, each with ``indices`` (the examples' positions
    among all examples) and the task's input and target fields (a Not-so-Clevr split, or any
    object of that shape). Each example goes to its position, so :func:`sides_indices` address
    it and the epoch order is the one its positions give (for an unchanged Not-so-Clevr split,
    the sweep's). Positions in neither side are zeros and are never read.
    """
    sides = (data.train, data.test)
    positions = np.concatenate([np.asarray(side.indices) for side in sides])
    if positions.size and (positions.min() < 0 or len(np.unique(positions)) != positions.size):
        raise ValueError(
            "data: the train and test examples' indices must be distinct non-negative positions "
            "in generation order"
        )
    size = int(positions.max(initial=-1)) + 1
    arrays = []
    for field in (task.input_field, task.target_field):
        values = [np.asarray(getattr(side, field), dtype=np.float32) for side in sides]
        if any(len(v) != len(side) for v, side in zip(values, sides, strict=True)):
            raise ValueError(
                f"data: field {field!r} must hold one entry per example (as many as indices)"
            )
        full = np.zeros((size, *values[0].shape[1:]), np.float32)
        for v, side in zip(values, sides, strict=True):
            full[np.asarray(side.indices)] = v
        arrays.append(jnp.asarray(full))
    return DeviceData(*arrays)


def sides_indices(data) -> SplitIndices:
    """The index arrays of a data object's own sides (``data.train.indices``,
    ``data.test.indices``), unpadded."""
    train, test = np.asarray(data.train.indices), np.asarray(data.test.indices)
    return SplitIndices(
        train_idx=jnp.asarray(train, jnp.int32),
        n_train=jnp.asarray(len(train), jnp.int32),
        test_idx=jnp.asarray(test, jnp.int32),
        n_test=jnp.asarray(len(test), jnp.int32),
    )


def stack_splits(splits: Sequence[SplitIndices]) -> SplitIndices:
    """Pads splits to common lengths and stacks them along a leading model axis (M,).

    Returns NumPy arrays (nothing is on a device yet: the caller places the whole tree in one
    transfer): ``(M, P_train)`` / ``(M, P_test)`` int32 indices, zero-padded, and ``(M,)`` int32
    counts.
    """
    p_train = max(int(np.shape(s.train_idx)[0]) for s in splits)
    p_test = max(int(np.shape(s.test_idx)[0]) for s in splits)
    return SplitIndices(
        train_idx=np.stack([pad_indices(s.train_idx, p_train) for s in splits]),
        n_train=np.asarray([s.n_train for s in splits], np.int32),
        test_idx=np.stack([pad_indices(s.test_idx, p_test) for s in splits]),
        n_test=np.asarray([s.n_test for s in splits], np.int32),
    )


def pad_indices(idx: np.ndarray, size: int | None, name: str = "size") -> np.ndarray:
    """``idx`` as int32, zero-padded to ``size`` (unchanged when None; ValueError naming
    ``name`` when shorter than ``idx``)."""
    idx = np.asarray(idx, dtype=np.int32)
    if size is None:
        return idx
    if size < len(idx):
        raise ValueError(f"{name} must be >= the split size {len(idx)}; got {size}")
    return np.pad(idx, (0, size - len(idx)))

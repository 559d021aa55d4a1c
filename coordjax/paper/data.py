"""Not-so-Clevr on the device as the engine's data: all 3136 examples once, in the task's view,
and each named split as index arrays into them."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from coordjax import datasets
from coordjax.train.data import DeviceData, SplitIndices, pad_indices
from coordjax.train.task import Task


def device_data(task: Task) -> DeviceData:
    """Puts the task's view of all Not-so-Clevr examples on the default device."""
    examples = datasets.all_examples()
    inputs = np.asarray(getattr(examples, task.input_field), dtype=np.float32)
    targets = np.asarray(getattr(examples, task.target_field), dtype=np.float32)
    return DeviceData(jnp.asarray(inputs), jnp.asarray(targets))


def split_indices(
    split: str | datasets.NotSoClevr,
    *,
    pad_train: int | None = None,
    pad_test: int | None = None,
    seed: int = 0,
) -> SplitIndices:
    """Index arrays of a named split (or of a ``NotSoClevr`` object), padded to the given sizes."""
    if isinstance(split, str):
        train, test = datasets.split_indices(split, seed=seed)
    else:
        train, test = split.train.indices, split.test.indices
    return SplitIndices(
        train_idx=jnp.asarray(pad_indices(train, pad_train, "pad_train")),
        n_train=jnp.asarray(len(train), jnp.int32),
        test_idx=jnp.asarray(pad_indices(test, pad_test, "pad_test")),
        n_test=jnp.asarray(len(test), jnp.int32),
    )

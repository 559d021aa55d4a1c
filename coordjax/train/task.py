"""A supervised task: what a model is fed, what its outputs are compared with, the per-example
loss and metrics."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax


class Task(NamedTuple):
    """A supervised task.

    Attributes:
      name: the task's name (the paper's: ``"classification"``, ``"rendering"``,
        ``"regression"``).
      input_field: field of the dataset examples fed to the model (the paper's: ``"centers"``,
        ``"onehots"``; arrays given to :func:`coordjax.sweep.supervised`: ``"inputs"``).
      target_field: field the outputs are compared with (the paper's: ``"onehots"``,
        ``"images"``, ``"normalized_centers"``; arrays: ``"targets"``).
      loss: ``loss(outputs, targets) -> (B,)`` per-example loss.
      metrics: ``metrics(outputs, targets) -> {name: (B,)}`` per-example metrics.
    """

    name: str
    input_field: str
    target_field: str
    loss: Callable[[jax.Array, jax.Array], jax.Array]
    metrics: Callable[[jax.Array, jax.Array], dict[str, jax.Array]]

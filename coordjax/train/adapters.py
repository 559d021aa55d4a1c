"""A user's model as the supervised recipe calls it, whatever it is written in.

The recipe (:mod:`coordjax.train.step`) calls ``model.init(key, x, train=False)`` and
``model.apply(variables, x, train=..., mask=..., mutable=...)`` with Flax's variables layout
(``{"params": ..., "batch_stats": ...}``). :func:`as_model` wraps what users write so it answers
those calls:

* a Flax Linen module (its ``__call__`` may or may not take ``train`` and ``mask``);
* a Flax NNX module class with its constructor arguments (:func:`nnx_model`), through
  ``flax.nnx.bridge``: parameters become ``params``, ``BatchStat`` variables ``batch_stats``;
* a plain pure pair ``(init(key, x) -> params, apply(params, x) -> outputs)``.

Every wrapper is a frozen dataclass (hashable, equal by value), so equal models share a compiled
program. The L2 penalty and decoupled weight decay of the recipe apply to the leaves named
``kernel`` (Flax's name for conv and dense weights); a pure pair names its own leaves.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable
from typing import Any

import flax.linen as nn
from flax.core import FrozenDict


def _accepts(function: Callable, name: str) -> bool:
    parameters = inspect.signature(function).parameters
    return name in parameters


@dataclasses.dataclass(frozen=True)
class LinenModel:
    """A Linen module called with ``train`` / ``mask`` only where its ``__call__`` takes them.

    Attributes:
      module: the Linen module.
      takes_train, takes_mask: whether its call takes ``train`` (e.g. for BatchNorm) and
        ``mask`` (a (B,) bool of the batch's real examples, for masked BatchNorm statistics).
      l2_exempt: names of submodules whose kernels carry no L2.
    """

    module: nn.Module
    takes_train: bool
    takes_mask: bool
    l2_exempt: tuple[str, ...] = ()

    def _kwargs(self, train: bool, mask: Any) -> dict[str, Any]:
        kwargs = {}
        if self.takes_train:
            kwargs["train"] = train
        if self.takes_mask and mask is not None:
            kwargs["mask"] = mask
        return kwargs

    def init(self, key, x, *, train: bool = False):
        return self.module.init(key, x, **self._kwargs(train, None))

    def apply(self, variables, x, *, train: bool, mask: Any = None, mutable: Any = False):
        return self.module.apply(variables, x, mutable=mutable, **self._kwargs(train, mask))


@dataclasses.dataclass(frozen=True)
class PureModel:
    """A pure pair: ``init(key, x) -> params`` and ``apply(params, x) -> outputs``."""

    init_fn: Callable
    apply_fn: Callable
    l2_exempt: tuple[str, ...] = ()

    def init(self, key, x, *, train: bool = False):
        return {"params": self.init_fn(key, x)}

    def apply(self, variables, x, *, train: bool, mask: Any = None, mutable: Any = False):
        outputs = self.apply_fn(variables["params"], x)
        return (outputs, {}) if mutable else outputs


def nnx_model(cls: type, *args: Any, **kwargs: Any) -> LinenModel:
    """An NNX module class (built as ``cls(*args, **kwargs, rngs=...)``) as the recipe's model.

    The class must take ``rngs`` (``flax.nnx.Rngs``); its ``__call__`` may take ``train``
    (for example to set its BatchNorm's ``use_running_average``). Hashable arguments only.
    """
    from flax.nnx import bridge

    module = bridge.ToLinen(cls, args=tuple(args), kwargs=FrozenDict(kwargs))
    return LinenModel(module, _accepts(cls.__call__, "train"), _accepts(cls.__call__, "mask"))


def as_model(model: Any) -> LinenModel | PureModel:
    """The recipe's model for ``model``: a Linen module, an adapter (returned as is), or a
    pure ``(init, apply)`` pair. Raises TypeError naming what is allowed otherwise."""
    if isinstance(model, (LinenModel, PureModel)):
        return model
    if isinstance(model, nn.Module):
        call = type(model).__call__
        exempt = tuple(getattr(model, "l2_exempt", ()))
        return LinenModel(model, _accepts(call, "train"), _accepts(call, "mask"), exempt)
    if isinstance(model, tuple) and len(model) == 2 and all(callable(f) for f in model):
        return PureModel(*model)
    raise TypeError(
        "model must build a flax.linen Module, coordjax.train.nnx_model(cls, ...) for an NNX "
        f"module, or a pure (init, apply) pair; got {type(model).__name__}"
    )

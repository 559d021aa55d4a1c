"""Training hyperparameters as data: a pytree of float32 arrays, so one compiled program serves
every value and a sweep can stack them along a leading model axis."""

from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from coordjax._checks import check_choice

SCHEDULES = ("constant", "step", "cosine")
# The run-config keys only some schedules read: :func:`hparams_from` zeroes ``lr_max_decays``
# for the others, which leaves ``lr_decay`` and ``lr_decay_every`` without effect. (The cosine
# schedule's length is the run's ``epochs``, which every schedule reads.)
SCHEDULE_KEYS = {"step": ("lr_decay", "lr_decay_every", "lr_max_decays")}


@dataclasses.dataclass(frozen=True)
class AtLeast:
    """A real number, finite and above ``bound`` (``strict``: ``>``, else ``>=``)."""

    bound: float
    strict: bool = False
    unit: str = ""

    def __call__(self, name: str, value: Any) -> None:
        # Bools and strings are refused (lr=True would train at 1.0); NumPy scalars are numbers.
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
            raise ValueError(f"{name} must be a real number; got {value!r}")
        above = value > self.bound if self.strict else value >= self.bound
        if not (above and np.isfinite(value)):
            allowed = f"{'>' if self.strict else '>='} {self.bound:g}{self.unit}"
            raise ValueError(f"{name} must be finite and {allowed}; got {value!r}")


def _decay_factor(name: str, value: Any) -> None:
    """A factor in (0, 1]: each decay shrinks the lr (1: it stays); a growing lr is refused."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a real number; got {value!r}")
    if not 0 < value <= 1:  # NaN too
        raise ValueError(
            f"{name} must be in (0, 1] (each decay multiplies the lr by it; a growing lr is "
            f"refused); got {value!r}"
        )


def _count(name: str, value: Any) -> None:
    """A whole number of times, >= 0 (2.0 is 2; 2.5 is refused)."""
    AtLeast(0)(name, value)
    if float(value) != int(value):
        raise ValueError(f"{name} must be a whole number >= 0; got {value!r}")


RANGES: dict[str, Callable[[str, Any], None]] = {
    "lr": AtLeast(0, strict=True),
    "l2": AtLeast(0),
    "weight_decay": AtLeast(0),
    "lr_decay": _decay_factor,
    "lr_decay_every": AtLeast(1, unit=" (epochs)"),
    "lr_max_decays": _count,
}
"""``{hyperparameter: check(name, value)}``: each :class:`Hparams` field but ``cosine_epochs``
(set from the run's epochs) and its allowed values, declared here once; the check raises
ValueError naming the hyperparameter. :class:`coordjax.train.RunConfig` checks its fields with
these."""


class Hparams(NamedTuple):
    """Per-model hyperparameters; every field is a float32 array of shape () (or (M,) stacked).

    The defaults are the paper's recipe (the reference code's): L2 penalty ``l2·Σw²`` on
    kernels added to the loss; no decoupled weight decay. (Adam's β1 0.9, β2 0.99, ε 1e-8 are
    recipe constants in :class:`coordjax.train.TrainSetup`, not swept.)
    The learning rate at epoch e is ``lr · lr_decay ** min(floor(e / lr_decay_every),
    lr_max_decays) · c(e)``: the deconv schedule is (0.1, 200, 4), a constant lr has
    lr_max_decays 0; ``c(e) = ½(1 + cos(π · min(e, E) / E))`` with ``E = cosine_epochs`` when
    ``cosine_epochs > 0`` (the ``"cosine"`` schedule, not in the paper), else 1.
    """

    lr: jax.Array
    l2: jax.Array
    weight_decay: jax.Array  # decoupled (AdamW-style, scaled by lr); 0 in the paper's recipe
    lr_decay: jax.Array
    lr_decay_every: jax.Array  # in epochs
    lr_max_decays: jax.Array
    cosine_epochs: jax.Array  # 0: no cosine factor


def make_hparams(
    lr: float,
    l2: float = 0.0,
    *,
    schedule: str = "constant",
    lr_decay: float = 0.1,
    lr_decay_every: float = 200,
    lr_max_decays: float = 4,
    weight_decay: float = 0.0,
    cosine_epochs: float = 0,
) -> Hparams:
    """Builds validated :class:`Hparams` for one model.

    Args:
      lr: base learning rate, > 0.
      l2: coefficient of the L2 penalty ``l2·Σ w²`` on regularised kernels, >= 0.
      schedule: ``"constant"`` or ``"step"`` (×``lr_decay`` every ``lr_decay_every`` epochs, at
        most ``lr_max_decays`` times; defaults are the paper's deconv schedule) or ``"cosine"``
        (``lr · ½(1 + cos(π e / cosine_epochs))`` at epoch ``e``, 0 from ``cosine_epochs`` on: a
        decay for CoordConv, which the paper trains at a constant lr, so that a run that reaches
        the exact map can hold it; Adam moves every weight by about lr per step).
      cosine_epochs: the cosine schedule's length in epochs, >= 1 (required by ``"cosine"``,
        ignored otherwise; the sweep engine uses the run's ``epochs``).
      weight_decay: decoupled weight decay (AdamW), >= 0; 0 is the paper's recipe.
    """
    check_hparams(lr=lr, l2=l2, schedule=schedule, lr_decay=lr_decay,
                  lr_decay_every=lr_decay_every, lr_max_decays=lr_max_decays,
                  weight_decay=weight_decay, cosine_epochs=cosine_epochs)  # fmt: skip
    hparams = hparams_from(
        schedule=schedule, cosine_epochs=cosine_epochs, lr=lr, l2=l2, weight_decay=weight_decay,
        lr_decay=lr_decay, lr_decay_every=lr_decay_every, lr_max_decays=lr_max_decays,
    )  # fmt: skip
    return jax.tree.map(jnp.asarray, hparams)


def hparams_from(*, schedule: str, cosine_epochs: float, **values: float) -> Hparams:
    """Checked values as :class:`Hparams` of NumPy float32 scalars, the schedule encoded.

    ``values`` are the :class:`Hparams` fields but ``cosine_epochs``; ``"step"`` keeps
    ``lr_max_decays``, other schedules zero it, and only ``"cosine"`` keeps ``cosine_epochs``.
    """
    values["cosine_epochs"] = cosine_epochs if schedule == "cosine" else 0
    if schedule != "step":
        values["lr_max_decays"] = 0
    return Hparams(**{k: np.asarray(v, np.float32) for k, v in values.items()})


def check_hparams(*, schedule, cosine_epochs=0, **values) -> None:
    """Raises ValueError naming the hyperparameter that is not a number in its range.

    ``values``: the :class:`Hparams` fields but ``cosine_epochs``, each checked by its
    :data:`RANGES` entry. Bools and strings are refused
    (``lr=True`` would train at 1.0, ``"0.01"`` would not be a number); NumPy scalars are
    numbers. ``cosine_epochs`` is checked only for ``"cosine"`` (the sweep engine sets it from
    the run's ``epochs``).
    """
    check_choice("schedule", schedule, SCHEDULES)
    for name, value in values.items():
        if name not in RANGES:
            raise TypeError(f"unknown hyperparameter {name!r}")
        RANGES[name](name, value)
    if isinstance(cosine_epochs, (bool, np.bool_)) or not isinstance(cosine_epochs, numbers.Real):
        raise ValueError(f"cosine_epochs must be a real number; got {cosine_epochs!r}")
    if schedule == "cosine" and not (np.isfinite(cosine_epochs) and cosine_epochs >= 1):
        raise ValueError(
            f"cosine_epochs must be >= 1 with schedule='cosine'; got {cosine_epochs!r}"
        )


def check_concrete_hparams(hparams: Any) -> None:
    """Raises ValueError naming the field when ``hparams`` is not :class:`Hparams` of scalars in
    their ranges (as :func:`make_hparams` makes them; a ``_replace`` may have changed one)."""
    if not isinstance(hparams, Hparams):
        raise ValueError(
            "hparams must be coordjax.train.Hparams (from coordjax.train.make_hparams); got "
            f"{type(hparams).__name__}"
        )
    values = {}
    for name, leaf in zip(Hparams._fields, hparams, strict=True):
        array = np.asarray(leaf)
        if array.shape != () or array.dtype.kind not in "fiu":
            raise ValueError(f"hparams.{name} must be a real scalar; got {leaf!r}")
        values[name] = float(array)
    cosine = values.pop("cosine_epochs")
    schedule = "cosine" if cosine > 0 else ("step" if values["lr_max_decays"] > 0 else "constant")
    check_hparams(schedule=schedule, cosine_epochs=cosine, **values)


def stack_hparams(hparams: list[Hparams]) -> Hparams:
    """Stacks per-model hparams into one pytree with a leading model axis (M,)."""
    return jax.tree.map(lambda *xs: jnp.stack(xs), *hparams)


def learning_rate(hp: Hparams, epoch: jax.Array) -> jax.Array:
    """The learning rate in force during ``epoch`` (0-based), a traced float32 scalar."""
    e = epoch.astype(jnp.float32)
    steps = jnp.minimum(jnp.floor(e / hp.lr_decay_every), hp.lr_max_decays)
    length = jnp.maximum(hp.cosine_epochs, 1.0)
    cosine = 0.5 * (1.0 + jnp.cos(jnp.pi * jnp.minimum(e, length) / length))
    return hp.lr * hp.lr_decay**steps * jnp.where(hp.cosine_epochs > 0, cosine, 1.0)

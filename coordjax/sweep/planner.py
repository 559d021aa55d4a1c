"""Splits a sweep's runs into buckets: one compiled program per distinct shape.

Axes that change array shapes (task, loss, model, filter size, channel multiplier, batch size) and
axes that change the program's length (epochs, evaluation interval) are *static*: each distinct
combination is a bucket. Everything else (lr, l2, weight decay, schedule, seed, split) is
*vmapped*: an array leaf with a leading model axis inside the bucket's program. Splits with
different numbers of examples share a program through padded index arrays (coordjax.train.data).

With ``pad``, the named shape axes (the paper's filter size and channel multiplier) stop
splitting buckets for the runs the experiment can pad on them (:class:`~coordjax.sweep.Padding`):
the bucket's program is the largest model of the group, and each smaller model trains exactly
inside it. Padding trades compiles and launches for FLOPs (a ``c=1`` model costs what the
bucket's ``c=3`` costs). Batch size cannot be padded: it changes the number of steps per epoch.

Which keys are static and which vmapped is declared once, by the experiment's keys
(:class:`~coordjax.sweep.Experiment`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Sequence
from typing import Any

from coordjax.sweep.experiment import STATIC, Experiment, default_experiment
from coordjax.train.step import chunk_lengths


@dataclasses.dataclass(frozen=True)
class Bucket:
    """Runs sharing one compiled program.

    Attributes:
      bucket_id: stable id from the static config (``<model>-<8 hex digits>``).
      static: the static config values (the experiment's static keys).
      runs: the run configs, in sweep order.
      steps_per_epoch: the steps of one epoch of the bucket's runs (the experiment's rule;
        supervised: max over runs of ``ceil(n_train / batch_size)``).
      padded: the static keys on which the runs may differ (then ``static`` holds their maxima:
        the superset model the program trains; each run's own values are in its config).
      experiment: the experiment the runs belong to.
      extension: which growth of the sweep added the bucket's runs (0: the original sweep;
        :mod:`coordjax.sweep.growth`); rungs are decided per extension.
    """

    bucket_id: str
    static: dict[str, Any]
    runs: tuple[dict[str, Any], ...]
    steps_per_epoch: int
    padded: tuple[str, ...] = ()
    extension: int = 0
    experiment: Experiment | None = dataclasses.field(default=None, compare=False, repr=False)

    @property
    def num_models(self) -> int:
        return len(self.runs)

    @property
    def model_kwargs(self) -> dict[str, Any]:
        """The bucket model's shape values (the experiment's :attr:`Padding.shape`; ``{}``
        when it pads nothing)."""
        return self._shape(self.static)

    def run_model_kwargs(self, config: dict[str, Any]) -> dict[str, Any]:
        """One run's own shape values (differ from ``model_kwargs`` when padded)."""
        return self._shape(config)

    def _shape(self, values: dict[str, Any]) -> dict[str, Any]:
        padding = self.experiment.padding
        return {} if padding is None else padding.shape(values)

    def setup(self, lowering: str = "auto"):
        """The static setup shared by the bucket's models (convolutions lowered as given); in a
        padded bucket its model is the largest of the group."""
        return self.experiment.setup(self.static, self.steps_per_epoch, lowering)

    @property
    def total_steps(self) -> int:
        return self.static["epochs"] * self.steps_per_epoch

    @property
    def chunks(self) -> list[int]:
        """Epochs per compiled chunk: ``eval_every`` each, the last one possibly shorter."""
        return chunk_lengths(self.static["epochs"], self.static["eval_every"])


def validate_run(config: dict[str, Any], experiment: Experiment | None = None) -> None:
    """Raises ValueError naming the grid and the key when a run config is not runnable.

    Everything that would otherwise fail (or silently train something else) after the workdir
    is written is checked here, by the experiment's keys and its check (the paper's: names,
    types, ranges, the model against the task, the batch size against the split).
    """
    experiment = experiment or default_experiment()
    try:
        experiment.validate(config)
    except ValueError as err:
        raise ValueError(f"grid {config.get('grid', '?')!r}: {err}") from None


def validate_pad(pad: Sequence[str], experiment: Experiment | None = None) -> tuple[str, ...]:
    """Checks the ``pad`` option (a sequence of static key names; with ``experiment``, keys it
    can pad); returns it as a sorted tuple."""
    if isinstance(pad, str) or not all(isinstance(k, str) for k in pad):
        raise ValueError(f"pad must be a sequence of axis names; got {pad!r}")
    if experiment is not None:
        paddable = paddable_keys(experiment)
        for key in pad:
            if key not in paddable:
                why = (" (it changes the number of steps per epoch)"
                       if key == "batch_size" else "")  # fmt: skip
                raise ValueError(f"pad may name {list(paddable)}; got {key!r}{why}")
    return tuple(sorted(set(pad)))


def paddable_keys(experiment: Experiment) -> tuple[str, ...]:
    """The static keys some run of ``experiment`` may be padded on (sorted)."""
    return () if experiment.padding is None else tuple(sorted(experiment.padding.names))


def plan(
    runs: Sequence[dict[str, Any]],
    *,
    experiment: Experiment | None = None,
    max_models: int | None = None,
    pad: Sequence[str] = (),
) -> list[Bucket]:
    """Groups runs by their static config, in order of first appearance.

    Args:
      runs: run configs (from ``Sweep.expand``).
      experiment: the runs' experiment (default: the paper's).
      max_models: split a group into programs of at most this many models (bounds memory); the
        parts share one compiled program when they have the same size.
      pad: static keys that do not split buckets for runs the experiment can pad on them; a
        bucket then trains its largest shape (see the module docstring).
    """
    experiment = experiment or default_experiment()
    if max_models is not None and (not isinstance(max_models, int) or max_models < 1):
        raise ValueError(f"max_models must be a positive int or None; got {max_models!r}")
    pad = validate_pad(pad, experiment)
    static_keys = experiment.keys_of(STATIC)
    neutral = experiment.neutral()
    groups: dict[str, list[dict[str, Any]]] = {}
    statics: dict[str, dict[str, Any]] = {}
    padded_keys: dict[str, tuple[str, ...]] = {}
    for config in runs:
        validate_run(config, experiment)
        paddable = experiment.padding.keys(config) if experiment.padding and pad else ()
        padded = tuple(k for k in pad if k in paddable)
        static = {k: config[k] for k in static_keys if k not in padded}
        key = bucket_id(
            {**static, "padded": list(padded)} if padded else static,
            neutral=neutral, prefix=_prefix(experiment, config),
        )  # fmt: skip
        groups.setdefault(key, []).append(config)
        statics[key] = static
        padded_keys[key] = padded
    buckets = []
    for key, group in groups.items():
        padded = padded_keys[key]
        static = {k: statics[key].get(k) for k in static_keys}
        for k in padded:  # the superset model: the largest value of each padded axis
            static[k] = max(c[k] for c in group)
        if experiment.check_bucket is not None:
            try:
                experiment.check_bucket(static)
            except ValueError as err:
                raise ValueError(f"grid {group[0].get('grid', '?')!r}: {err}") from None
        steps = experiment.steps_per_epoch(static, group)
        size = max_models or len(group)
        parts = [group[i : i + size] for i in range(0, len(group), size)]
        for i, part in enumerate(parts):
            buckets.append(
                Bucket(
                    bucket_id=key if len(parts) == 1 else f"{key}-p{i}",
                    static=static,
                    runs=tuple(part),
                    steps_per_epoch=steps,
                    padded=padded,
                    experiment=experiment,
                )
            )
    return buckets


def _prefix(experiment: Experiment, config: dict[str, Any]) -> str:
    return str(config[experiment.id_key]) if experiment.id_key else experiment.name


def bucket_id(
    static: dict[str, Any], *, neutral: dict[str, Any] | None = None, prefix: str | None = None
) -> str:
    """``<prefix>-<8 hex digits>`` of the static values (neutral keys at their default left
    out); the prefix defaults to the ``model`` value."""
    neutral = {} if neutral is None else neutral
    static = {k: v for k, v in static.items() if not (k in neutral and v == neutral[k])}
    digest = hashlib.sha1(json.dumps(static, sort_keys=True).encode()).hexdigest()[:8]
    return f"{static['model'] if prefix is None else prefix}-{digest}"

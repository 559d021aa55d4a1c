"""Splits a sweep's runs into buckets: one compiled program per distinct shape.

Axes that change array shapes (task, loss, model, filter size, channel multiplier, batch size) and
axes that change the program's length (epochs, evaluation interval) are *static*: each distinct
combination is a bucket. Everything else (lr, l2, weight decay, schedule, seed, split) is
*vmapped*: an array leaf with a leading model axis inside the bucket's program. Splits with
different numbers of examples share a program through padded index arrays (coordjax.train.data).

With ``pad``, the named shape axes (filter size, channel multiplier) stop splitting buckets for
the models that support it (``ModelSpec.paddable``): the bucket's program is the largest model
of the group, and each smaller model trains exactly inside it (coordjax.train.padding). Padding
trades compiles and launches for FLOPs (a ``c=1`` model costs what the bucket's ``c=3`` costs).
Batch size cannot be padded: it changes the number of steps per epoch.

Which keys are static and which vmapped is declared once, on the fields of
:class:`coordjax.train.run_config.RunConfig`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Sequence
from typing import Any

from coordjax import datasets, models
from coordjax.sweep.grid import NEUTRAL
from coordjax.train import TrainSetup, chunk_lengths, steps_per_epoch
from coordjax.train.run_config import STATIC, VMAPPED, RunConfig, make_setup, model_kwargs

# The run config's static keys split buckets; its vmapped keys are array leaves inside one.
STATIC_KEYS = RunConfig.keys(STATIC)
VMAPPED_KEYS = RunConfig.keys(VMAPPED)


@dataclasses.dataclass(frozen=True)
class Bucket:
    """Runs sharing one compiled program.

    Attributes:
      bucket_id: stable id from the static config (``<model>-<8 hex digits>``).
      static: the static config values (STATIC_KEYS).
      runs: the run configs, in sweep order.
      steps_per_epoch: max over runs of ``ceil(n_train / batch_size)``.
      padded: the shape args on which the runs may differ (then ``static`` holds their maxima:
        the superset model the program trains; each run's own values are in its config).
    """

    bucket_id: str
    static: dict[str, Any]
    runs: tuple[dict[str, Any], ...]
    steps_per_epoch: int
    padded: tuple[str, ...] = ()

    @property
    def num_models(self) -> int:
        return len(self.runs)

    @property
    def model_kwargs(self) -> dict[str, Any]:
        """Shape kwargs the model's builder accepts (those the config sets)."""
        return model_kwargs(self.static)

    def run_model_kwargs(self, config: dict[str, Any]) -> dict[str, Any]:
        """Shape kwargs of one run's own model (differs from ``model_kwargs`` when padded)."""
        return {k: config[k] for k in self.model_kwargs}

    def setup(self, lowering: str = "auto") -> TrainSetup:
        """The static training setup shared by the bucket's models (convolutions lowered as
        given); in a padded bucket its model is the largest of the group."""
        return make_setup(self.static, steps_per_epoch=self.steps_per_epoch, lowering=lowering)

    @property
    def total_steps(self) -> int:
        return self.static["epochs"] * self.steps_per_epoch

    @property
    def chunks(self) -> list[int]:
        """Epochs per compiled chunk: ``eval_every`` each, the last one possibly shorter."""
        return chunk_lengths(self.static["epochs"], self.static["eval_every"])


def validate_run(config: dict[str, Any]) -> None:
    """Raises ValueError naming the grid and the key when a run config is not runnable.

    Everything that would otherwise fail (or silently train something else) after the workdir
    is written is checked here (:class:`~coordjax.train.run_config.RunConfig`): names, types
    (bools and strings are not numbers), ranges, the model against the task, and the batch size
    against the split's training examples.
    """
    try:
        RunConfig.of(config)
    except ValueError as err:
        raise ValueError(f"grid {config.get('grid', '?')!r}: {err}") from None


PADDABLE_KEYS = tuple(sorted({k for spec in models.MODELS.values() for k in spec.paddable}))


def validate_pad(pad: Sequence[str]) -> tuple[str, ...]:
    """Checks the ``pad`` option; returns it as a sorted tuple."""
    if isinstance(pad, str) or not all(isinstance(k, str) for k in pad):
        raise ValueError(f"pad must be a sequence of axis names; got {pad!r}")
    for key in pad:
        if key not in PADDABLE_KEYS:
            why = " (it changes the number of steps per epoch)" if key == "batch_size" else ""
            raise ValueError(f"pad may name {list(PADDABLE_KEYS)}; got {key!r}{why}")
    return tuple(sorted(set(pad)))


def plan(
    runs: Sequence[dict[str, Any]],
    *,
    max_models: int | None = None,
    pad: Sequence[str] = (),
) -> list[Bucket]:
    """Groups runs by their static config, in order of first appearance.

    Args:
      runs: run configs (from ``Sweep.expand``).
      max_models: split a group into programs of at most this many models (bounds memory); the
        parts share one compiled program when they have the same size.
      pad: shape axes (of ``PADDABLE_KEYS``) that do not split buckets for models that can be
        padded on them; a bucket then trains its largest shape (see the module docstring).
    """
    if max_models is not None and (not isinstance(max_models, int) or max_models < 1):
        raise ValueError(f"max_models must be a positive int or None; got {max_models!r}")
    pad = validate_pad(pad)
    groups: dict[str, list[dict[str, Any]]] = {}
    statics: dict[str, dict[str, Any]] = {}
    padded_keys: dict[str, tuple[str, ...]] = {}
    for config in runs:
        validate_run(config)
        padded = tuple(k for k in pad if k in models.MODELS[config["model"]].paddable)
        static = {k: config[k] for k in STATIC_KEYS if k not in padded}
        key = bucket_id({**static, "padded": list(padded)} if padded else static)
        groups.setdefault(key, []).append(config)
        statics[key] = static
        padded_keys[key] = padded
    buckets = []
    for key, group in groups.items():
        padded = padded_keys[key]
        static = {k: statics[key].get(k) for k in STATIC_KEYS}
        for k in padded:  # the superset model: the largest value of each padded axis
            static[k] = max(c[k] for c in group)
        n_train = max(len(datasets.split_indices(c["split"])[0]) for c in group)
        size = max_models or len(group)
        parts = [group[i : i + size] for i in range(0, len(group), size)]
        for i, part in enumerate(parts):
            buckets.append(
                Bucket(
                    bucket_id=key if len(parts) == 1 else f"{key}-p{i}",
                    static=static,
                    runs=tuple(part),
                    steps_per_epoch=steps_per_epoch(n_train, static["batch_size"]),
                    padded=padded,
                )
            )
    return buckets


def bucket_id(static: dict[str, Any]) -> str:
    static = {k: v for k, v in static.items() if not (k in NEUTRAL and v == NEUTRAL[k])}
    digest = hashlib.sha1(json.dumps(static, sort_keys=True).encode()).hexdigest()[:8]
    return f"{static['model']}-{digest}"

"""The paper's experiment as an instance of the sweep engine's seam.

Not-so-Clevr (every split's examples on the device once, each run's split as index arrays), the
paper's models by registry name, its three tasks, the faithful recipe
(:mod:`coordjax.train.step`) and its run config (:class:`coordjax.train.RunConfig`), with the
paper's bars as scores. The engine sees only :data:`EXPERIMENT`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from coordjax import datasets, models, paper
from coordjax.paper import padding
from coordjax.paper.data import device_data
from coordjax.paper.run_config import RunConfig, make_setup, model_kwargs, stack_runs
from coordjax.sweep.experiment import Experiment, Key, Padding, Score
from coordjax.sweep.programs import SUPERVISED
from coordjax.train import step
from coordjax.train.hparams import SCHEDULE_KEYS, SCHEDULES

METRIC_LARGER_IS_BETTER = {
    "loss": False,
    "accuracy": True,
    "eucl_dist": False,
    "manh_dist": False,
    "iou": True,
    "output_iou": True,
    "pixel_accuracy": True,
    "pixel_error": False,
    "mse": False,
}
"""Every metric the paper's tasks report (without the ``train_`` / ``test_`` prefix)."""


def _keys() -> dict[str, Key]:
    keys = {}
    for field in dataclasses.fields(RunConfig):
        role = field.metadata["role"]
        keys[field.name] = Key(role.kind, field.default, role.check, role.neutral)
    return keys


def _check(config: Mapping[str, Any]) -> None:
    RunConfig.of(config)


def _setup(static: Mapping[str, Any], steps_per_epoch: int, lowering: str) -> step.TrainSetup:
    return make_setup(static, steps_per_epoch=steps_per_epoch, lowering=lowering)


def _steps_per_epoch(static: Mapping[str, Any], configs: Sequence[Mapping[str, Any]]) -> int:
    n_train = max(len(datasets.split_indices(c["split"])[0]) for c in configs)
    return step.steps_per_epoch(n_train, static["batch_size"])


def _data(setup: step.TrainSetup):
    return device_data(setup.task)


_NO_BAR = Score("test_loss", larger_is_better=False)


def _score(config: Mapping[str, Any]) -> Score:
    bar = paper.BARS.get(config["task"])
    return _NO_BAR if bar is None else Score(bar.metric, bar.larger_is_better)


def ignored_keys(config: Mapping[str, Any]) -> dict[str, str]:
    """``{key: who ignores it}`` for the run config's keys that the run does not read: a model
    shape key its model does not take, the step schedule's keys under another schedule.

    Unknown models and schedules are left to the run config's own checks (nothing ignored).
    """
    ignored = {}
    spec = models.MODELS.get(config.get("model"))
    if spec is not None:
        shape_keys = {k for s in models.MODELS.values() for k in s.shape_args}
        for key in sorted(shape_keys - set(spec.shape_args)):
            ignored[key] = f"model {spec.name!r} (shape args {list(spec.shape_args)})"
    schedule = config.get("schedule")
    if schedule in SCHEDULES:
        for owner, keys in SCHEDULE_KEYS.items():
            if schedule != owner:
                for key in keys:
                    ignored.setdefault(key, f"schedule {schedule!r} (only {owner!r} reads it)")
    return ignored


def _pad_keys(config: Mapping[str, Any]) -> tuple[str, ...]:
    spec = models.MODELS.get(config.get("model"))
    return () if spec is None else spec.paddable


def _init_padded(setup, static, shapes, runs, init):
    return padding.init_padded(setup, static["model"], shapes, runs, init)


def _unpad(state, static, shape):
    return padding.unpad_state(state, static["model"], shape)


def _count_params(state) -> int:
    return models.count_params(state.params)


def _model_steps(bucket):
    """The bucket's model as the measured-rates table knows it: ``(name, shape kwargs, module,
    per-example input shape, examples one evaluation reads)``."""
    name = bucket.static["model"]
    kwargs = model_kwargs(bucket.static)
    examples = max(
        sum(len(part) for part in datasets.split_indices(c["split"])) for c in bucket.runs
    )
    return name, kwargs, models.build(name, **kwargs), models.MODELS[name].input_shape, examples


EXPERIMENT = Experiment(
    name="paper",
    keys=_keys(),
    check=_check,
    setup=_setup,
    steps_per_epoch=_steps_per_epoch,
    data=_data,
    stack=stack_runs,
    recipe=SUPERVISED,
    score=_score,
    metrics=METRIC_LARGER_IS_BETTER,
    count_params=_count_params,
    id_key="model",
    group_by=("task", "family", "split"),
    family=paper.family_of,
    ignored_keys=ignored_keys,
    padding=Padding(
        names=tuple(sorted({k for spec in models.MODELS.values() for k in spec.paddable})),
        keys=_pad_keys, shape=model_kwargs, init=_init_padded, unpad=_unpad,
    ),
    model_steps=_model_steps,
)
"""The paper's experiment: the engine's first tenant (sweeps ``classification``,
``rendering``, ``regression``)."""

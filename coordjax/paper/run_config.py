"""One run's configuration: every key a sweep may set, with its default, its check and its role.

A key is *static* when it fixes array shapes or the program's length (runs that differ in it need
separate compiled programs: the sweep planner's bucket keys) or *vmapped* when it becomes an array
leaf with a leading model axis inside one program. Everything that needs the set of run keys
derives it from :class:`RunConfig`: the sweep's defaults and run ids (``coordjax.sweep.grid``),
the planner's bucket keys and checks, a bucket's :class:`~coordjax.train.TrainSetup`
(:func:`make_setup`) and its stacked per-model arrays (:func:`stack_runs`).

Adding a hyperparameter is adding a field here; one that the training step reads is also a leaf
of :class:`~coordjax.train.hparams.Hparams` (``hparam=True``), where the step finds it, and
takes its allowed values from :data:`~coordjax.train.hparams.RANGES`.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from coordjax import datasets, models, tasks
from coordjax._checks import check_choice, check_order_seed, check_seed
from coordjax.datasets.not_so_clevr import check_input_scale, input_transform
from coordjax.train.data import SplitIndices, stack_splits
from coordjax.train.hparams import RANGES, SCHEDULES, Hparams, hparams_from
from coordjax.train.step import RunSpec, TrainSetup, check_precision, order_seeds

STATIC = "static"
VMAPPED = "vmapped"

Check = Callable[[str, Any], None]


@dataclasses.dataclass(frozen=True)
class KeyRole:
    """How a :class:`RunConfig` field is used.

    Attributes:
      kind: :data:`STATIC` (a bucket key) or :data:`VMAPPED` (an array leaf per model).
      check: ``check(name, value)`` raises ValueError naming the key and what is allowed; None
        for keys checked against others (:meth:`RunConfig._check_together`).
      neutral: left out of run and bucket ids while at its default (keys added after results
        were first written, so existing workdirs keep their ids).
      hparam: a leaf of :class:`~coordjax.train.hparams.Hparams` (float32 per model).
    """

    kind: str
    check: Check | None
    neutral: bool = False
    hparam: bool = False


def _key(default: Any, kind: str, check: Check | None, **role: bool) -> Any:
    return dataclasses.field(default=default, metadata={"role": KeyRole(kind, check, **role)})


def _positive_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int; got {value!r}")


def _one_of(allowed: Callable[[], Sequence[str]]) -> Check:
    """A check against a registry read when checking (registries may grow after import)."""
    return lambda name, value: check_choice(name, value, allowed())


# The dataset field a task feeds its models, and what a model must produce, by ModelSpec kinds.
_INPUT_KIND = {"centers": "coords", "onehots": "onehot"}
_OUTPUT_KIND = {"onehots": "map", "images": "map", "normalized_centers": "vector"}


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """One model's training run; checked on construction (ValueError naming the key).

    The field order is the column order of a sweep's results. Hyperparameters follow the paper's
    recipe by default; see :func:`coordjax.train.make_hparams` for the schedule's meaning.
    """

    task: str = _key("classification", STATIC, _one_of(lambda: sorted(tasks.TASKS)))
    loss: str = _key("default", STATIC, None)  # rendering: "sigmoid" | "mse"; else "default"
    model: str = _key("coordconv_classifier", STATIC, _one_of(lambda: sorted(models.MODELS)))
    filter_size: int = _key(1, STATIC, _positive_int)
    channel_mult: int = _key(1, STATIC, _positive_int)
    batch_size: int = _key(16, STATIC, _positive_int)
    epochs: int = _key(10, STATIC, _positive_int)
    eval_every: int = _key(5, STATIC, _positive_int)
    split: str = _key("uniform", VMAPPED, _one_of(lambda: list(datasets.SPLITS)))
    lr: float = _key(1e-3, VMAPPED, RANGES["lr"], hparam=True)
    l2: float = _key(0.0, VMAPPED, RANGES["l2"], hparam=True)
    weight_decay: float = _key(0.0, VMAPPED, RANGES["weight_decay"], hparam=True)
    schedule: str = _key("constant", VMAPPED, _one_of(lambda: list(SCHEDULES)))
    lr_decay: float = _key(0.1, VMAPPED, RANGES["lr_decay"], hparam=True)
    lr_decay_every: float = _key(200, VMAPPED, RANGES["lr_decay_every"], hparam=True)
    lr_max_decays: float = _key(4, VMAPPED, RANGES["lr_max_decays"], hparam=True)
    seed: int = _key(0, VMAPPED, check_seed)
    # the epochs' example order from another seed than the initial weights; -1: from ``seed``
    order_seed: int = _key(-1, VMAPPED, check_order_seed, neutral=True)
    # "raw" (the paper) | "unit": coordinate inputs as 2x/63 - 1
    input_scale: str = _key("raw", STATIC, None, neutral=True)
    precision: str = _key("highest", STATIC, None, neutral=True)

    def __post_init__(self):
        for field in dataclasses.fields(self):
            check = _role(field).check
            if check is not None:
                check(field.name, getattr(self, field.name))
        self._check_together()

    def _check_together(self) -> None:
        """The keys whose allowed values depend on others (the task, the split)."""
        losses = ["default", *(tasks.RENDERING_LOSSES if self.task == "rendering" else ())]
        if self.loss not in losses:
            raise ValueError(
                f"loss for task {self.task!r} must be one of {losses}; got {self.loss!r}"
            )
        task = tasks.get(self.task)
        wanted = (_INPUT_KIND[task.input_field], _OUTPUT_KIND[task.target_field])
        spec = models.MODELS[self.model]
        if (spec.input_kind, spec.output_kind) != wanted:
            fitting = sorted(
                name for name, s in models.MODELS.items() if (s.input_kind, s.output_kind) == wanted
            )
            raise ValueError(
                f"model {self.model!r} does not fit task {self.task!r} (it maps "
                f"{spec.input_kind} to a {spec.output_kind}); models for this task: {fitting}"
            )
        check_input_scale(self.input_scale, task.input_field)
        check_precision(self.precision)
        n_train = _n_train(self.split)
        if self.batch_size > n_train:
            raise ValueError(
                f"batch_size {self.batch_size} is larger than the {n_train} training examples "
                f"of split {self.split!r}; use at most {n_train}"
            )

    @classmethod
    def keys(cls, kind: str | None = None, *, hparam: bool | None = None) -> tuple[str, ...]:
        """The field names, in order: all, or those of one ``kind`` / that are hparams."""
        return tuple(
            f.name
            for f in dataclasses.fields(cls)
            if (kind is None or _role(f).kind == kind)
            and (hparam is None or _role(f).hparam == hparam)
        )

    @classmethod
    def check_key(cls, name: str, value: Any) -> None:
        """Checks one key's value on its own (ValueError naming it); keys checked against
        others are checked by the constructor only."""
        check = _role(next(f for f in dataclasses.fields(cls) if f.name == name)).check
        if check is not None:
            check(name, value)

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        """``{key: default}`` for every field, in order."""
        return {f.name: f.default for f in dataclasses.fields(cls)}

    @classmethod
    def neutral(cls) -> dict[str, Any]:
        """``{key: default}`` of the keys left out of ids while at their default."""
        return {f.name: f.default for f in dataclasses.fields(cls) if _role(f).neutral}

    @classmethod
    def of(cls, config: Mapping[str, Any]) -> RunConfig:
        """The run config of a sweep row (other columns, e.g. ``grid``, ``run_id``, ignored)."""
        return cls(**{k: config[k] for k in cls.keys() if k in config})

    def static(self) -> dict[str, Any]:
        """The static keys' values (a bucket's key), in field order."""
        return {k: getattr(self, k) for k in self.keys(STATIC)}

    def hparams(self) -> Hparams:
        """This run's :class:`Hparams` as NumPy float32 scalars (cosine spans the run)."""
        values = {k: getattr(self, k) for k in self.keys(hparam=True)}
        return hparams_from(schedule=self.schedule, cosine_epochs=self.epochs, **values)


def _role(field: dataclasses.Field) -> KeyRole:
    return field.metadata["role"]


@functools.cache
def _n_train(split: str) -> int:
    return len(datasets.split_indices(split)[0])


def model_kwargs(static: Mapping[str, Any]) -> dict[str, Any]:
    """The shape keyword arguments of the model's builder that ``static`` sets."""
    spec = models.MODELS[static["model"]]
    return {k: static[k] for k in spec.shape_args if k in static}


def make_setup(
    static: Mapping[str, Any], *, steps_per_epoch: int, lowering: str = "auto"
) -> TrainSetup:
    """The :class:`TrainSetup` of runs sharing the static values ``static`` (convolutions
    lowered as given); the model is built at ``static``'s shape."""
    task_options = {} if static["loss"] == "default" else {"loss": static["loss"]}
    return TrainSetup(
        model=models.build(static["model"], lowering=lowering, **model_kwargs(static)),
        task=tasks.get(static["task"], **task_options),
        batch_size=static["batch_size"],
        steps_per_epoch=steps_per_epoch,
        prepare=input_transform(static["input_scale"]),
        precision=static["precision"],
    )


def stack_runs(configs: Sequence[Mapping[str, Any] | RunConfig]) -> RunSpec:
    """The runs' vmapped values stacked along a leading model axis (M,), as NumPy arrays.

    Each config is checked (:class:`RunConfig`). Hyperparameters are float32 (M,) leaves, seeds
    and order seeds (``-1`` resolved to the seed) int32 (M,), and the splits' index arrays are
    padded to common lengths, ``(M, P_train)`` / ``(M, P_test)`` int32. Nothing is on a device
    yet: the caller places the whole tree in one transfer.
    """
    runs = [c if isinstance(c, RunConfig) else RunConfig.of(c) for c in configs]
    per_model = [r.hparams() for r in runs]
    hparams = Hparams(*(np.stack(leaves) for leaves in zip(*per_model, strict=True)))
    seeds = np.asarray([r.seed for r in runs], dtype=np.int32)
    pairs = [datasets.split_indices(r.split) for r in runs]
    splits = [SplitIndices(train, len(train), test, len(test)) for train, test in pairs]
    return RunSpec(hparams=hparams, seed=seeds, split=stack_splits(splits),
                   order_seed=order_seeds(seeds, [r.order_seed for r in runs]))  # fmt: skip

"""A supervised experiment from a user's model, arrays and per-example loss.

:func:`supervised` returns an :class:`~coordjax.sweep.Experiment` that the engine trains like
the paper's: buckets by the model's static keys, the recipe's hyperparameters vmapped, resume,
pruning on the declared score, fan-out, dry run and report. The recipe is the paper's
(:mod:`coordjax.train.step`: Adam, L2 on kernels in the loss, optional decoupled weight decay,
constant / step / cosine learning rate, a fresh permutation per epoch from the run's seed, a
diverging model frozen), so a user writes a model, a loss, metrics and arrays, and nothing else::

    experiment = cj.sweep.supervised(
        "mine",
        model=lambda width: MyNet(width=width),        # a Linen module (or NNX, or a pure pair)
        model_keys={"width": 16},                       # static keys and their defaults
        data={"all": {"train": (x_train, y_train), "test": (x_test, y_test)}},
        loss=lambda outputs, targets: ((outputs - targets) ** 2).mean(-1),   # (B,)
        metrics={"error": (error_fn, "min")},
        score=("test_error", "min"),
    )
    sweep = cj.sweep.union("mine", [cj.sweep.Grid("g", axes={"lr": [1e-3, 3e-3]})],
                           experiment=experiment)

Data: named *variants* (the paper's uniform / quadrant splits are such variants), each with a
``"train"`` and a ``"test"`` pair of arrays with a leading example axis; the variant is a
vmapped key (``data`` by default), so runs on different variants share one program.
"""

from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from coordjax._checks import check_choice, check_order_seed, check_seed, positive_int
from coordjax.sweep.experiment import STATIC, VMAPPED, Experiment, Key, Score
from coordjax.sweep.programs import SUPERVISED
from coordjax.train import step
from coordjax.train.adapters import as_model
from coordjax.train.data import DeviceData, SplitIndices, stack_splits
from coordjax.train.hparams import RANGES, SCHEDULES, Hparams, hparams_from
from coordjax.train.task import Task

DIRECTIONS = {"max": True, "min": False}
SIDES = ("train", "test")


def _one_of(allowed: Sequence[str]) -> Callable[[str, Any], None]:
    return lambda name, value: check_choice(name, value, list(allowed))


def _plain_value(name: str, value: Any) -> None:
    if not isinstance(value, (str, numbers.Real)) or isinstance(value, np.generic):
        raise ValueError(f"{name} must be a str, int, float or bool; got {value!r}")


def recipe_keys(**defaults: Any) -> dict[str, Key]:
    """The supervised recipe's keys (defaults overridable): batch size, length, optimizer."""
    values = {"batch_size": 32, "epochs": 10, "eval_every": 1, "lr": 1e-3, "l2": 0.0,
              "weight_decay": 0.0, "schedule": "constant", "lr_decay": 0.1,
              "lr_decay_every": 200, "lr_max_decays": 4, "seed": 0,
              "order_seed": -1, "precision": "highest"}  # fmt: skip
    unknown = sorted(set(defaults) - set(values))
    if unknown:
        raise ValueError(f"defaults may set {sorted(values)}; got {unknown}")
    values.update(defaults)
    return {
        "batch_size": Key(STATIC, values["batch_size"], positive_int),
        "epochs": Key(STATIC, values["epochs"], positive_int),
        "eval_every": Key(STATIC, values["eval_every"], positive_int),
        "precision": Key(STATIC, values["precision"], _one_of(step.PRECISIONS)),
        **{k: Key(VMAPPED, values[k], RANGES[k]) for k in
           ("lr", "l2", "weight_decay", "lr_decay", "lr_decay_every", "lr_max_decays")},
        "schedule": Key(VMAPPED, values["schedule"], _one_of(SCHEDULES)),
        "seed": Key(VMAPPED, values["seed"], check_seed),
        # the epochs' example order from another seed than the initial weights; -1: ``seed``
        "order_seed": Key(VMAPPED, values["order_seed"], check_order_seed, neutral=True),
    }  # fmt: skip


@dataclasses.dataclass(frozen=True)
class PerExample:
    """Named per-example metric functions as one ``metrics(outputs, targets) -> {name: (B,)}``
    (a value, so equal experiments give equal setups)."""

    functions: tuple[tuple[str, Callable], ...]

    def __call__(self, outputs, targets) -> dict[str, jax.Array]:
        return {name: fn(outputs, targets) for name, fn in self.functions}


@dataclasses.dataclass(frozen=True)
class ArrayData:
    """All examples once (one device copy), and each variant's index arrays into them.

    ``inputs`` / ``targets``: (N, ...) NumPy arrays; ``splits``: ``{variant: (train_idx,
    test_idx)}`` int32 index arrays into them. Each epoch's order is a permutation drawn over
    the N positions (:func:`coordjax.train.step.epoch_order`), so it depends on where the
    examples sit.
    """

    inputs: np.ndarray
    targets: np.ndarray
    splits: Mapping[str, tuple[np.ndarray, np.ndarray]]

    def n_train(self, variant: str) -> int:
        return len(self.splits[variant][0])


def _as_device_dtype(name: str, array: Any) -> np.ndarray:
    array = np.asarray(array)
    if array.dtype.kind == "f":
        return array.astype(np.float32)
    if array.dtype.kind in "iu":
        return array.astype(np.int32)
    if array.dtype.kind == "b":
        return array
    raise ValueError(f"{name} must hold numbers or bools; got dtype {array.dtype}")


def array_data(data: Mapping[str, Mapping[str, Sequence[Any]]]) -> ArrayData:
    """Checks ``{variant: {"train": (x, y), "test": (x, y)}}`` and concatenates it.

    Raises ValueError (one line) for a variant without both splits, an ``x`` and ``y`` of
    different leading lengths, an empty train split, or per-example shapes that differ between
    variants or splits.
    """
    if not isinstance(data, Mapping) or not data:
        raise ValueError('data must be {variant: {"train": (x, y), "test": (x, y)}}, non-empty')
    inputs, targets, splits, offset = [], [], {}, 0
    shapes = None
    for variant, sides in data.items():
        if not isinstance(variant, str) or not isinstance(sides, Mapping):
            raise ValueError(f'data[{variant!r}] must be {{"train": (x, y), "test": (x, y)}}')
        if set(sides) != set(SIDES):
            raise ValueError(
                f"data[{variant!r}] must have exactly the splits {list(SIDES)}; got {sorted(sides)}"
            )
        indices = []
        for side in SIDES:
            pair = sides[side]
            if not isinstance(pair, Sequence) or len(pair) != 2:
                raise ValueError(f"data[{variant!r}][{side!r}] must be an (x, y) pair of arrays")
            x = _as_device_dtype(f"data[{variant!r}][{side!r}] x", pair[0])
            y = _as_device_dtype(f"data[{variant!r}][{side!r}] y", pair[1])
            if x.ndim == 0 or y.ndim == 0 or len(x) != len(y):
                raise ValueError(
                    f"data[{variant!r}][{side!r}]: x and y must have the same leading (example) "
                    f"length; got shapes {x.shape} and {y.shape}"
                )
            if side == "train" and len(x) == 0:
                raise ValueError(f"data[{variant!r}]['train'] has no examples")
            here = ((x.shape[1:], x.dtype), (y.shape[1:], y.dtype))
            if shapes is None:
                shapes = here
            elif here != shapes:
                raise ValueError(
                    f"data[{variant!r}][{side!r}]: per-example shapes and dtypes {here} differ "
                    f"from the first split's {shapes}"
                )
            inputs.append(x)
            targets.append(y)
            indices.append(np.arange(offset, offset + len(x), dtype=np.int32))
            offset += len(x)
        splits[variant] = tuple(indices)
    return ArrayData(np.concatenate(inputs), np.concatenate(targets), splits)


class _Arrays:
    """The experiment's arrays, loaded and checked on first use (a sweep file that builds them
    with an optional library stays importable, e.g. for ``coordjax list``)."""

    def __init__(self, data):
        self._data = data
        self._arrays: ArrayData | None = None

    def get(self) -> ArrayData:
        if self._arrays is None:
            data = self._data() if callable(self._data) else self._data
            self._arrays = data if isinstance(data, ArrayData) else array_data(data)
        return self._arrays


def _parse_metrics(metrics: Mapping[str, Any]) -> tuple[PerExample, dict[str, bool]]:
    functions, directions = [], {"loss": False}
    for name, entry in metrics.items():
        if not isinstance(name, str) or not name or name == "loss":
            raise ValueError(f"metric names must be non-empty strs other than 'loss'; got {name!r}")
        if not (isinstance(entry, tuple) and len(entry) == 2 and callable(entry[0])):
            raise ValueError(
                f"metrics[{name!r}] must be (fn(outputs, targets) -> (B,), 'max' | 'min'); "
                f"got {entry!r}"
            )
        check_choice(f"metrics[{name!r}] direction", entry[1], list(DIRECTIONS))
        functions.append((name, entry[0]))
        directions[name] = DIRECTIONS[entry[1]]
    return PerExample(tuple(functions)), directions


def supervised(
    name: str,
    *,
    model: Callable[..., Any],
    data: Mapping[str, Mapping[str, Sequence[Any]]] | Callable[[], Mapping],
    loss: Callable[[jax.Array, jax.Array], jax.Array],
    metrics: Mapping[str, tuple[Callable, str]] | None = None,
    score: tuple[str, str] = ("test_loss", "min"),
    model_keys: Mapping[str, Any] | None = None,
    defaults: Mapping[str, Any] | None = None,
    data_key: str = "data",
    variants: Sequence[str] | None = None,
) -> Experiment:
    """A supervised experiment (see the module docstring).

    Args:
      name: the experiment's name (the prefix of its run ids).
      model: ``model(**model_keys) -> `` a Flax Linen module, :func:`coordjax.train.nnx_model`
        of an NNX class, or a pure ``(init, apply)`` pair; called with every model key.
      data: ``{variant: {"train": (x, y), "test": (x, y)}}`` arrays with a leading example axis,
        an :class:`ArrayData` (all examples once, each variant's index arrays into them: the
        epoch order follows the examples' positions), or a function returning either (called
        once, when a sweep first needs the arrays; then ``variants`` names them).
      loss: ``loss(outputs, targets) -> (B,)``, per example (the recipe takes masked means).
      metrics: ``{name: (fn(outputs, targets) -> (B,), "max" | "min")}``, per example; the
        results get ``train_<name>`` and ``test_<name>`` columns (``loss`` is always there).
      score: ``(column, "max" | "min")``: the metric that ranks runs (pruning ranks on its
        train twin).
      model_keys: ``{key: default}``: static keys passed to ``model``; each distinct value
        compiles its own program.
      defaults: overrides of the recipe keys' defaults (:func:`recipe_keys`).
      data_key: the vmapped key that picks a variant (default ``"data"``).
      variants: the variant names, in order (required when ``data`` is a function; else the
        keys of ``data``).

    Raises:
      ValueError: one line naming the argument and what is allowed.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"name must be a non-empty str; got {name!r}")
    if not callable(model):
        raise ValueError(f"model must be callable (model(**model_keys) -> a model); got {model!r}")
    if not callable(loss):
        raise ValueError(f"loss must be callable (loss(outputs, targets) -> (B,)); got {loss!r}")
    if isinstance(data, ArrayData):
        variants = list(data.splits)
    elif callable(data):
        if variants is None or isinstance(variants, str) or not list(variants):
            raise ValueError("variants must name the data's variants when data is a function")
        variants = list(variants)
    else:
        variants = list(array_data(data).splits) if variants is None else list(variants)
        if variants != list(data):
            raise ValueError(f"variants {variants} must be the keys of data {list(data)}")
    per_example, directions = _parse_metrics(metrics or {})
    if not (isinstance(score, tuple) and len(score) == 2):
        raise ValueError(f"score must be (column, 'max' | 'min'); got {score!r}")
    allowed = [f"{side}_{m}" for side in SIDES for m in directions]
    check_choice("score column", score[0], allowed)
    check_choice("score direction", score[1], list(DIRECTIONS))
    if DIRECTIONS[score[1]] != directions[score[0].split("_", 1)[1]]:
        raise ValueError(
            f"score {score!r} ranks {score[0]!r} the other way from its metric's direction"
        )
    model_keys = dict(model_keys or {})
    keys: dict[str, Key] = {k: Key(STATIC, v, _plain_value) for k, v in model_keys.items()}
    keys[data_key] = Key(VMAPPED, variants[0], _one_of(variants))
    recipe = recipe_keys(**(defaults or {}))
    clash = sorted(set(keys) & set(recipe))
    if clash:
        raise ValueError(f"model_keys / data_key {clash} clash with the recipe's keys")
    keys.update(recipe)
    task = Task(name, "inputs", "targets", loss, per_example)
    spec = _Spec(model, tuple(model_keys), data_key, task, tuple(variants), _Arrays(data))
    return Experiment(
        name=name,
        keys=keys,
        check=spec.check,
        setup=spec.setup,
        steps_per_epoch=spec.steps_per_epoch,
        data=spec.device_data,
        stack=spec.stack,
        recipe=SUPERVISED,
        score=lambda config: Score(score[0], DIRECTIONS[score[1]]),
        metrics=directions,
        count_params=spec.count_params,
        group_by=("family", data_key),
        check_bucket=spec.check_bucket,
    )


@dataclasses.dataclass(frozen=True)
class _Spec:
    """The pieces :func:`supervised` closes over (one object, so its methods are the seam's)."""

    build: Callable[..., Any]
    model_keys: tuple[str, ...]
    data_key: str
    task: Task
    variants: tuple[str, ...]
    source: _Arrays = dataclasses.field(compare=False, hash=False)

    @property
    def arrays(self) -> ArrayData:
        arrays = self.source.get()
        if tuple(arrays.splits) != self.variants:
            raise ValueError(
                f"data gave variants {list(arrays.splits)}; the experiment declares "
                f"{list(self.variants)}"
            )
        return arrays

    def check(self, config: Mapping[str, Any]) -> None:
        n_train = self.arrays.n_train(config[self.data_key])
        if config["batch_size"] > n_train:
            raise ValueError(
                f"batch_size {config['batch_size']} is larger than the {n_train} training "
                f"examples of {self.data_key} {config[self.data_key]!r}; use at most {n_train}"
            )

    def model(self, static: Mapping[str, Any]):
        return as_model(self.build(**{k: static[k] for k in self.model_keys}))

    def setup(self, static: Mapping[str, Any], steps_per_epoch: int, lowering: str = "auto"):
        return step.TrainSetup(
            model=self.model(static),
            task=self.task,
            batch_size=static["batch_size"],
            steps_per_epoch=steps_per_epoch,
            precision=static["precision"],
        )

    def steps_per_epoch(self, static, configs) -> int:
        n_train = max(self.arrays.n_train(c[self.data_key]) for c in configs)
        return step.steps_per_epoch(n_train, static["batch_size"])

    def device_data(self, setup) -> DeviceData:
        return DeviceData(jnp.asarray(self.arrays.inputs), jnp.asarray(self.arrays.targets))

    def stack(self, configs: Sequence[Mapping[str, Any]]) -> step.RunSpec:
        per_model = [
            hparams_from(
                schedule=c["schedule"], cosine_epochs=c["epochs"],
                **{k: c[k] for k in Hparams._fields if k != "cosine_epochs"},
            )
            for c in configs
        ]  # fmt: skip
        hparams = Hparams(*(np.stack(leaves) for leaves in zip(*per_model, strict=True)))
        splits = []
        for c in configs:
            train, test = self.arrays.splits[c[self.data_key]]
            splits.append(SplitIndices(train, len(train), test, len(test)))
        seeds = np.asarray([c["seed"] for c in configs], np.int32)
        order_seeds = step.order_seeds(seeds, [c["order_seed"] for c in configs])
        return step.RunSpec(hparams=hparams, seed=seeds, split=stack_splits(splits),
                            order_seed=order_seeds)  # fmt: skip

    def count_params(self, state) -> int:
        return int(sum(np.size(x) for x in jax.tree.leaves(state.params)))

    def check_bucket(self, static: Mapping[str, Any]) -> None:
        """The model builds, its outputs fit the loss and metrics, and both are per example
        (shapes only: ``jax.eval_shape`` on two examples)."""
        try:
            model = self.model(static)
        except TypeError as err:
            raise ValueError(f"model: {err}") from None
        x = jax.ShapeDtypeStruct((2, *self.arrays.inputs.shape[1:]), self.arrays.inputs.dtype)
        y = jax.ShapeDtypeStruct((2, *self.arrays.targets.shape[1:]), self.arrays.targets.dtype)

        def outputs_and_values(x, y):
            variables = model.init(jax.random.key(0), x, train=False)
            outputs = model.apply(variables, x, train=False)
            return {"loss": self.task.loss(outputs, y), **self.task.metrics(outputs, y)}

        where = ", ".join(f"{k}={static[k]!r}" for k in self.model_keys)
        try:
            values = jax.eval_shape(outputs_and_values, x, y)
        except Exception as err:  # the user's code: any failure is reported in one line
            message = str(err).strip().splitlines()[0] if str(err).strip() else ""
            raise ValueError(
                f"model ({where or 'defaults'}) with the loss and metrics failed on a batch of "
                f"2 examples: {type(err).__name__}: {message}"
            ) from None
        for metric, value in values.items():
            if value.shape != (2,):
                raise ValueError(
                    f"{metric} must be per example, shape (B,); on a batch of 2 it gave shape "
                    f"{value.shape}"
                )


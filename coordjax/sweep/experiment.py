"""The experiment seam: what the sweep engine needs from an experiment, and nothing more.

An :class:`Experiment` is a named tuple of data and pure functions, in the style of optax's
``GradientTransformation``: the engine (planner, programs, pruning, workdir, report core) calls
them and never imports an experiment's own modules. The paper's experiment
(:mod:`coordjax.paper.experiment`) is one instance; :func:`coordjax.sweep.supervised` builds one
from a user's model, arrays and per-example loss; a sweep file may declare its own.

The pieces:

* **keys** (:class:`Key`): each run-config key with its role, default and check. A *static* key
  is part of a bucket (it fixes shapes or the program's length: runs that differ in it compile
  separately); a *vmapped* key becomes an array leaf of the ``[M]`` model axis. Every
  experiment has the static keys ``epochs`` and ``eval_every`` (the engine's chunking);
* **setup** ``(static, steps_per_epoch, lowering) -> setup``: the hashable, static part of a
  bucket's programs (its models, built from the static keys);
* **data** ``(setup) -> tree``: the arrays every model of a bucket reads (leading example axis);
* **stack** ``(configs) -> tree``: the runs' vmapped values with a leading model axis ``[M]``;
* **recipe** (:class:`Recipe`): ``init``, ``train_chunk``, ``train_step``, ``evaluate``, pure
  functions of ``(setup, data, run, state)`` for one model; the engine lifts them;
* **score** ``(config) -> Score``: the metric and direction that pruning, "best run", checkpoint
  retention and the summary use.

Shapes: ``run`` and ``state`` are one model's trees inside the recipe and carry a leading
``[M]`` axis outside it; ``train_chunk`` returns scalar metrics per model plus
``epoch_train_loss`` ``(num_epochs,)``, ``diverged`` and ``diverged_step``. The state is any
tree with ``epoch`` and ``step`` attributes (int32 scalars per model: epochs completed and
updates applied), which the engine records in every results row; what else it holds (one
network or several, one optimizer state or several) is the recipe's business
(:mod:`coordjax.gan.experiment` holds two networks and two optimizers).
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

STATIC = "static"
VMAPPED = "vmapped"
ROLES = (STATIC, VMAPPED)

Check = Callable[[str, Any], None]

ENGINE_KEYS = ("epochs", "eval_every")
"""Static keys every experiment declares: the run's length and its evaluation interval."""

DEFAULT_EXPERIMENT = "coordjax.paper.experiment:EXPERIMENT"
"""Where a sweep that names no experiment finds one: the paper's, imported by name when such a
sweep is built (grids written before the seam keep their meaning; the engine itself never
imports the paper)."""


@dataclasses.dataclass(frozen=True)
class Key:
    """One run-config key of an experiment.

    Attributes:
      role: :data:`STATIC` (a bucket key) or :data:`VMAPPED` (a float32 or int32 leaf of the
        model axis).
      default: the value a run takes when no grid sets it (a str, int, float or bool).
      check: ``check(name, value)`` raises ValueError naming the key and what is allowed; None
        for keys checked only together with others (:attr:`Experiment.check`).
      neutral: left out of run and bucket ids while at its default (keys added after results
        were first written keep existing workdirs' ids).
    """

    role: str
    default: Any
    check: Check | None = None
    neutral: bool = False

    def __post_init__(self):
        if self.role not in ROLES:
            raise ValueError(f"Key.role must be one of {list(ROLES)}; got {self.role!r}")


class Score(NamedTuple):
    """The metric that ranks runs: a results column and its direction.

    ``metric`` names a test column (``"test_accuracy"``); pruning ranks on its train twin
    (:meth:`on`), so the test split never chooses which runs train on.
    """

    metric: str
    larger_is_better: bool = True

    def on(self, side: str) -> str:
        """The metric's column on ``side`` (``"train"`` or ``"test"``)."""
        name = self.metric.split("_", 1)[1] if "_" in self.metric else self.metric
        return f"{side}_{name}"


class Recipe(NamedTuple):
    """One model's training as pure functions (the engine vmaps and shards them).

    Attributes:
      init: ``init(setup, data, run) -> state``.
      train_chunk: ``train_chunk(setup, data, run, state, *, num_epochs) -> (state, metrics)``:
        ``num_epochs`` epochs, then an evaluation; ``metrics`` maps each results column to a
        scalar, plus ``epoch_train_loss`` (num_epochs,), ``diverged`` and ``diverged_step``.
      train_step: ``train_step(setup, data, run, state, idx, mask) -> (state, loss)``, one update
        on the examples ``idx`` (B,) where ``mask`` (B,): what cost analysis and the strategy
        probe time.
      evaluate: ``evaluate(setup, data, run, state) -> {column: scalar}``.
    """

    init: Callable
    train_chunk: Callable
    train_step: Callable
    evaluate: Callable


class Padding(NamedTuple):
    """How models that differ in some static keys train exactly inside one larger model.

    Attributes:
      names: every static key some run may be padded on.
      keys: ``keys(config) -> tuple[str, ...]``: the static keys this run's model may be padded
        on (``()``: none).
      shape: ``shape(config) -> {key: value}``: the values that fix a run's model's shape (what
        ``init`` and ``unpad`` receive as a shape).
      init: ``init(setup, static, shapes, runs, init_fn) -> (state, runs, param_counts)``: the
        stacked superset state of models of several shapes (``static``: the bucket's static
        values, the superset's; ``shapes``: each run's values of the padded keys), each
        initialised at its own shape; ``init_fn(setup, runs)`` initialises a stack.
      unpad: ``unpad(state, static, shape) -> state``: one model's state (no model axis) cut
        back to its own shape (``static``: the bucket's values).
    """

    names: tuple[str, ...]
    keys: Callable[[Mapping[str, Any]], tuple[str, ...]]
    shape: Callable[[Mapping[str, Any]], dict[str, Any]]
    init: Callable
    unpad: Callable


class Experiment(NamedTuple):
    """Everything the sweep engine needs from an experiment (see the module docstring).

    Attributes:
      name: the experiment's name (recorded in the workdir; the prefix of run ids when
        ``id_key`` is None).
      keys: ``{name: Key}`` in results-column order; includes :data:`ENGINE_KEYS`.
      check: ``check(config)`` raises ValueError for a run config whose keys do not fit
        together (each key's own check has passed).
      setup: ``setup(static, steps_per_epoch, lowering) -> setup`` (hashable).
      steps_per_epoch: ``steps_per_epoch(static, configs) -> int``, the steps of an epoch of the
        bucket's runs.
      data: ``data(setup) -> tree`` of host or device arrays.
      stack: ``stack(configs) -> run tree`` with a leading model axis.
      recipe: the :class:`Recipe`.
      score: ``score(config) -> Score``.
      metrics: ``{metric: larger_is_better}`` for the metrics ``train_chunk`` reports (without
        the ``train_`` / ``test_`` prefix), ``loss`` included.
      count_params: ``count_params(state) -> int``: the parameters of one model's state.
      id_key: the config key whose value prefixes run and bucket ids (None: ``name``).
      group_by: the results columns pruning ranks within by default.
      family: ``family(table) -> Series``: each run's family for reports and pruning groups
        (default: its grid).
      ignored_keys: ``ignored_keys(config) -> {key: who ignores it}``: keys a run does not read
        (an axis varying one would train duplicates).
      padding: a :class:`Padding`, or None (one bucket per shape).
      model_steps: ``model_steps(bucket) -> (name, shape, module, input_shape, eval_examples)
        | None``: a model the dry run's measured-rates table knows (None: cost analysis and an
        assumed rate).
      check_bucket: ``check_bucket(static)`` raises ValueError (one line) when a bucket's
        setup cannot train (a model that does not build, outputs that do not fit the loss, a
        loss that is not per example); the planner calls it before anything is written.
      data_shapes: ``data_shapes(setup) -> tree`` of ``jax.ShapeDtypeStruct``: the shapes
        ``data(setup)`` returns, without making the data (the dry run and ``coordjax list``
        read only shapes; None: ``data`` is called under ``jax.eval_shape``, which makes host
        data that is generated in NumPy).
    """

    name: str
    keys: Mapping[str, Key]
    check: Callable[[Mapping[str, Any]], None]
    setup: Callable
    steps_per_epoch: Callable
    data: Callable
    stack: Callable
    recipe: Recipe
    score: Callable[[Mapping[str, Any]], Score]
    metrics: Mapping[str, bool]
    count_params: Callable
    id_key: str | None = None
    group_by: tuple[str, ...] = ("family",)
    family: Callable | None = None
    ignored_keys: Callable[[Mapping[str, Any]], dict[str, str]] | None = None
    padding: Padding | None = None
    model_steps: Callable | None = None
    check_bucket: Callable[[Mapping[str, Any]], None] | None = None
    data_shapes: Callable | None = None

    def defaults(self) -> dict[str, Any]:
        """``{key: default}`` for every key, in order."""
        return {k: key.default for k, key in self.keys.items()}

    def neutral(self) -> dict[str, Any]:
        """``{key: default}`` of the keys left out of ids while at their default."""
        return {k: key.default for k, key in self.keys.items() if key.neutral}

    def keys_of(self, role: str) -> tuple[str, ...]:
        """The key names of one role, in order."""
        return tuple(k for k, key in self.keys.items() if key.role == role)

    def check_key(self, name: str, value: Any) -> None:
        """Raises ValueError naming ``name`` when it is not a key or ``value`` is not allowed."""
        if name not in self.keys:
            raise ValueError(
                f"unknown config key {name!r} for experiment {self.name!r}; allowed: "
                f"{sorted(self.keys)}"
            )
        check = self.keys[name].check
        if check is not None:
            check(name, value)

    def validate(self, config: Mapping[str, Any]) -> None:
        """Checks a whole run config (each key, then the keys together); ValueError."""
        for name in self.keys:
            self.check_key(name, config[name])
        self.check(config)

    def families(self, table):
        """Each row's family (:attr:`family`, default: its grid) as a str Series."""
        if self.family is not None:
            return self.family(table)
        return table["grid"].astype(str)


def check_experiment(experiment: Any) -> Experiment:
    """Returns ``experiment`` when it is an :class:`Experiment` whose keys are well formed;
    raises ValueError (one line) naming what is wrong."""
    if not isinstance(experiment, Experiment):
        raise ValueError(
            "experiment must be a coordjax.sweep.Experiment (e.g. from coordjax.sweep.supervised); "
            f"got {type(experiment).__name__}"
        )
    for name in ENGINE_KEYS:
        key = experiment.keys.get(name)
        if key is None or key.role != STATIC:
            raise ValueError(
                f"experiment {experiment.name!r} must declare {name!r} as a static key"
            )
    for name, key in experiment.keys.items():
        if not isinstance(key, Key):
            raise ValueError(f"experiment {experiment.name!r}: key {name!r} must be a Key")
    return experiment


def default_experiment() -> Experiment:
    """The experiment of a sweep that names none: the paper's (:data:`DEFAULT_EXPERIMENT`)."""
    module, _, attribute = DEFAULT_EXPERIMENT.partition(":")
    return getattr(importlib.import_module(module), attribute)

"""Sweeps declared as data: a base config plus named axes, and unions of such grids.

A run config is a flat dict of plain values (str, int, float, bool), keyed by the keys of the
sweep's experiment (:class:`~coordjax.sweep.Experiment`; the paper's by default). Expanding a
sweep gives one row per model with every key and a stable ``run_id`` derived from the config's
content, so the same config always has the same id, whatever grid or order it came from.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from coordjax.sweep.checks import check_sweep
from coordjax.sweep.experiment import Experiment, check_experiment, default_experiment
from coordjax.sweep.pruning import Prune
from coordjax.sweep.space import is_distribution


@dataclasses.dataclass(frozen=True)
class Grid:
    """A base config and named axes; the grid is the product of the axes' values.

    Attributes:
      name: a label for reports (e.g. "deconv" or "coordconv").
      base: fixed values, overriding the experiment's defaults.
      axes: ``{key: [values...]}``; expanded in the given key order, last key fastest. An axis
        may instead be a distribution (:mod:`coordjax.sweep.space`: ``LogUniform``,
        ``Uniform``, ``Choice``): the distribution axes are drawn ``samples`` times together,
        and the grid is the product of those samples (outermost) with the listed axes.
      samples: how many points the distribution axes draw (required with one, else None).
      sample_seed: seeds the draws (deterministic; each axis has its own stream).
      prune: a successive-halving rule for this grid's runs (:class:`~coordjax.sweep.Prune`);
        a rule on the sweep (``union(..., prune=...)``) overrides it.
      experiment: whose keys the grid sets; None: the sweep's (``union(..., experiment=)``), or
        the paper's for a grid expanded on its own. Keys are checked against it when the grid
        joins a sweep or expands.
    """

    name: str
    base: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    axes: Mapping[str, Sequence[Any]] = dataclasses.field(default_factory=dict)
    samples: int | None = None
    sample_seed: int = 0
    prune: Prune | None = None
    experiment: Experiment | None = dataclasses.field(default=None, compare=False, repr=False)

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"a grid's name must be a non-empty str; got {self.name!r}")
        if not isinstance(self.base, Mapping) or not isinstance(self.axes, Mapping):
            raise TypeError(f"base and axes of grid {self.name!r} must be dicts")
        if self.experiment is not None:
            check_experiment(self.experiment)
            self.check_keys(self.experiment)
        for key, values in self.axes.items():
            if is_distribution(values):
                continue
            if isinstance(values, (str, bytes)) or not isinstance(values, (Sequence, np.ndarray)):
                raise TypeError(
                    f"axis {key!r} of grid {self.name!r} must be a list of values or a "
                    f"distribution (coordjax.sweep.LogUniform, Uniform, Choice); got {values!r}"
                )
            if not len(values):
                raise ValueError(f"axis {key!r} of grid {self.name!r} has no values")
        self._check_sampling()
        if self.prune is not None and not isinstance(self.prune, Prune):
            raise TypeError(
                f"prune of grid {self.name!r} must be a coordjax.sweep.Prune; got {self.prune!r}"
            )
        # NumPy scalars become plain Python values: ids, JSON and checks see one kind of number.
        base = {k: _plain(k, v, self.name) for k, v in self.base.items()}
        axes = {
            k: vs if is_distribution(vs) else [_plain(k, v, self.name) for v in vs]
            for k, vs in self.axes.items()
        }
        object.__setattr__(self, "base", base)
        object.__setattr__(self, "axes", axes)

    def _check_sampling(self) -> None:
        sampled = [k for k, v in self.axes.items() if is_distribution(v)]
        n = self.samples
        if sampled and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
            raise ValueError(
                f"grid {self.name!r} samples axes {sampled}: samples must be a positive int; "
                f"got {n!r}"
            )
        if not sampled and n is not None:
            raise ValueError(
                f"grid {self.name!r} sets samples={n!r} but no axis is a distribution "
                "(coordjax.sweep.LogUniform, Uniform, Choice)"
            )
        seed = self.sample_seed
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"sample_seed of grid {self.name!r} must be an int >= 0; got {seed!r}")

    def check_keys(self, experiment: Experiment) -> None:
        """Raises ValueError naming a key of ``base`` or ``axes`` that ``experiment`` lacks."""
        for key in (*self.base, *self.axes):
            if key not in experiment.keys:
                raise ValueError(f"unknown config key {key!r} in grid {self.name!r}; "
                                 f"allowed: {sorted(experiment.keys)}")  # fmt: skip

    def __len__(self) -> int:
        n = self.samples or 1
        for values in self.axes.values():
            n *= 1 if is_distribution(values) else len(values)
        return n

    def expand(self, experiment: Experiment | None = None) -> list[dict[str, Any]]:
        """One config dict per grid point (with ``grid`` and ``run_id`` keys added), every key
        of the experiment (``experiment``, else the grid's own, else the paper's) filled in."""
        experiment = experiment or self.experiment or default_experiment()
        self.check_keys(experiment)
        defaults = experiment.defaults()
        rows = []
        for sample in self._samples():
            keys = [k for k in self.axes if k not in sample]
            for values in itertools.product(*(self.axes[k] for k in keys)):
                point = {**sample, **dict(zip(keys, values, strict=True))}
                config = {**defaults, **self.base, **{k: point[k] for k in self.axes}}
                rows.append({"grid": self.name, "run_id": run_id(config, experiment), **config})
        return rows

    def _samples(self) -> list[dict[str, Any]]:
        """The drawn values of the distribution axes, one dict per sample ([{}] if none)."""
        sampled = {k: v for k, v in self.axes.items() if is_distribution(v)}
        if not sampled:
            return [{}]
        draws = {
            k: [_plain(k, v, self.name) for v in d.draw(self.samples, seed=self.sample_seed,
                                                        axis=k)]
            for k, d in sampled.items()
        }  # fmt: skip
        return [{k: draws[k][i] for k in sampled} for i in range(self.samples)]

    def to_json(self, experiment: Experiment | None = None) -> dict:
        out = {"name": self.name, "base": dict(self.base),
               "axes": {k: v.to_json() if is_distribution(v) else list(v)
                        for k, v in self.axes.items()}}  # fmt: skip
        # Written only when set, so the workdirs of grids without them keep their identity.
        if self.samples is not None:
            out.update(samples=self.samples, sample_seed=self.sample_seed)
        if self.prune is not None:
            out["prune"] = self.prune.to_json(_group_by(experiment))
        return out


def _group_by(experiment: Experiment | None) -> tuple[str, ...]:
    return (experiment or default_experiment()).group_by


@dataclasses.dataclass(frozen=True)
class Sweep:
    """A named union of grids (e.g. the deconv grid ∪ the CoordConv grid) of one experiment.

    ``prune``: a successive-halving rule for every run (:class:`~coordjax.sweep.Prune`),
    overriding the grids' own rules. ``experiment``: whose runs these are (None: the paper's);
    every grid's keys are checked against it here.
    """

    name: str
    grids: tuple[Grid, ...]
    description: str = ""
    prune: Prune | None = None
    experiment: Experiment | None = dataclasses.field(default=None, compare=False, repr=False)

    def __post_init__(self):
        if self.prune is not None and not isinstance(self.prune, Prune):
            raise TypeError(
                f"prune of sweep {self.name!r} must be a coordjax.sweep.Prune; got {self.prune!r}"
            )
        experiment = check_experiment(self.experiment or default_experiment())
        object.__setattr__(self, "experiment", experiment)
        for grid in self.grids:
            if not isinstance(grid, Grid):
                raise TypeError(
                    f"sweep {self.name!r} takes coordjax.sweep.Grid objects; got "
                    f"{type(grid).__name__}"
                )
            if grid.experiment is not None and grid.experiment is not experiment:
                raise ValueError(
                    f"grid {grid.name!r} belongs to experiment {grid.experiment.name!r}, not to "
                    f"sweep {self.name!r}'s {experiment.name!r}"
                )
            grid.check_keys(experiment)

    def rules(self) -> dict[str, Prune]:
        """run_id -> the pruning rule that governs it (runs without one are absent)."""
        rules = {}
        for grid in self.grids:
            rule = self.prune or grid.prune
            for row in grid.expand(self.experiment):
                if rule is not None:
                    rules.setdefault(row["run_id"], rule)
        return rules

    def expand(self) -> list[dict[str, Any]]:
        """All runs, duplicates (same config from two grids) removed, in declaration order.

        Refuses (ValueError) a sweep without grids and axes that would duplicate runs
        (:mod:`coordjax.sweep.checks`)."""
        check_sweep(self)
        seen, rows = set(), []
        for grid in self.grids:
            for row in grid.expand(self.experiment):
                if row["run_id"] not in seen:
                    seen.add(row["run_id"])
                    rows.append(row)
        return rows

    def to_json(self) -> dict:
        out = {"name": self.name, "description": self.description,
               "grids": [g.to_json(self.experiment) for g in self.grids]}  # fmt: skip
        if self.prune is not None:
            out["prune"] = self.prune.to_json(self.experiment.group_by)
        if self.experiment.name != "paper":  # the paper's workdirs keep their identity
            out["experiment"] = self.experiment.name
        return out


def _plain(key: str, value: Any, grid: str) -> Any:
    """``value`` as a plain str/int/float/bool (NumPy scalars converted), else TypeError."""
    if isinstance(value, np.generic):
        value = value.item()
    if not isinstance(value, (str, int, float, bool)):
        raise TypeError(
            f"{key} in grid {grid!r} must be a str or a number; got {type(value).__name__} "
            f"{value!r}"
        )
    return value


def run_id(config: Mapping[str, Any], experiment: Experiment | None = None) -> str:
    """A stable id from a run's config content: ``<prefix>-<10 hex digits>``, the prefix the
    value of the experiment's ``id_key`` (the paper: the model) or its name."""
    experiment = experiment or default_experiment()
    neutral = experiment.neutral()
    content = {
        k: config[k]
        for k in sorted(experiment.keys)
        if not (k in neutral and config[k] == neutral[k])
    }
    digest = hashlib.sha1(json.dumps(content, sort_keys=True).encode()).hexdigest()[:10]
    prefix = config[experiment.id_key] if experiment.id_key else experiment.name
    return f"{prefix}-{digest}"


def union(
    name: str,
    grids: Iterable[Grid],
    description: str = "",
    *,
    prune: Prune | None = None,
    experiment: Experiment | None = None,
) -> Sweep:
    """The sweep ``name``: the union of ``grids``, runs of ``experiment`` (None: the paper's)."""
    if isinstance(grids, Grid) or not hasattr(grids, "__iter__"):
        raise TypeError(f"grids of sweep {name!r} must be a list of Grid; got {grids!r}")
    return Sweep(name=name, grids=tuple(grids), description=description, prune=prune,
                 experiment=experiment)  # fmt: skip


_KEEP = object()


def customize(
    sweep: Sweep, *, seeds: int | None = None, only: str | None = None, prune: Any = _KEEP
) -> Sweep:
    """A variant of ``sweep``: the grids named ``only`` (else those whose name contains it), with
    seeds 0..seeds-1; ``prune`` (a rule, or None for no pruning at all) replaces every rule."""
    grids = list(sweep.grids)
    if only:
        # An exact grid name selects that grid alone ("conv" is not also "deconv"/"coordconv").
        exact = [g for g in grids if g.name == only]
        grids = exact or [g for g in grids if only in g.name]
        if not grids:
            raise ValueError(
                f"only={only!r} matches no grid; grids: {[g.name for g in sweep.grids]}"
            )
    if seeds is not None:
        if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
            raise ValueError(f"seeds must be a positive int; got {seeds!r}")
        grids = [
            dataclasses.replace(
                g,
                base={k: v for k, v in g.base.items() if k != "seed"},
                axes={**g.axes, "seed": list(range(seeds))},
            )
            for g in grids
        ]
    rule = sweep.prune
    if prune is not _KEEP:
        grids = [dataclasses.replace(g, prune=None) for g in grids]
        rule = prune
    return Sweep(name=sweep.name, grids=tuple(grids), description=sweep.description, prune=rule,
                 experiment=sweep.experiment)  # fmt: skip

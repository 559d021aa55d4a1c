"""Sampled axes: a grid axis may be a distribution drawn ``samples`` times with a seed.

Each distribution axis is drawn from its own generator, seeded by the grid's ``sample_seed`` and
the axis name, so the draws are deterministic, do not move when another axis is added, and a
run's id (its config's content) is the same on every rerun. Floats are rounded to 6 significant
digits, so ids and tables show the value that was trained.

>>> LogUniform(1e-4, 1e-2).draw(3, seed=0, axis="lr")
[0.000136802, 0.000376195, 0.000134076]
"""

from __future__ import annotations

import dataclasses
import math
import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np


def _rng(seed: int, axis: str) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(axis.encode())])


def _round(value: float) -> float:
    return float(f"{float(value):.6g}")


@dataclasses.dataclass(frozen=True)
class _Interval:
    """A continuous distribution on ``[low, high)``; subclasses say how values are spread."""

    low: float
    high: float

    name = ""  # the JSON key and the name in errors
    positive = False  # low must be > 0

    def __post_init__(self):
        kind = type(self).__name__
        for side in ("low", "high"):
            v = getattr(self, side)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ValueError(f"{kind}.{side} must be a finite number; got {v!r}")
        if self.positive and self.low <= 0:
            raise ValueError(f"{kind}.low must be > 0; got {self.low!r}")
        if not self.low < self.high:
            raise ValueError(f"{kind} needs low < high; got low={self.low!r}, high={self.high!r}")

    def draw(self, n: int, *, seed: int, axis: str) -> list[float]:
        return [_round(v) for v in self._draw(_rng(seed, axis), n)]

    def to_json(self) -> dict[str, Any]:
        return {self.name: [self.low, self.high]}


@dataclasses.dataclass(frozen=True)
class LogUniform(_Interval):
    """Log-uniform on ``[low, high)`` (both > 0): learning rates, weight decays."""

    name = "log_uniform"
    positive = True

    def _draw(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return np.exp(rng.uniform(math.log(self.low), math.log(self.high), size=n))


@dataclasses.dataclass(frozen=True)
class Uniform(_Interval):
    """Uniform on ``[low, high)``."""

    name = "uniform"

    def _draw(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return rng.uniform(self.low, self.high, size=n)


@dataclasses.dataclass(frozen=True)
class Choice:
    """One of ``values`` with equal probability (any key, shape axes included)."""

    values: Sequence[Any]

    def __post_init__(self):
        if isinstance(self.values, (str, bytes)) or not len(self.values):
            raise ValueError(f"Choice needs a non-empty list of values; got {self.values!r}")
        object.__setattr__(self, "values", tuple(self.values))

    def draw(self, n: int, *, seed: int, axis: str) -> list[Any]:
        return [self.values[i] for i in _rng(seed, axis).integers(len(self.values), size=n)]

    def to_json(self) -> dict[str, Any]:
        return {"choice": list(self.values)}


DISTRIBUTIONS = (LogUniform, Uniform, Choice)


def is_distribution(value: Any) -> bool:
    return isinstance(value, DISTRIBUTIONS)

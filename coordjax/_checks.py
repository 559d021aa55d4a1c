"""Argument checks shared by the library: one message per kind of mistake, naming the argument
and what it allows (``"{name} must be ...; got {value!r}"``)."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np


def check_choice(name: str, value, allowed: Iterable) -> None:
    """Raises ValueError naming ``name``, the allowed values and the value given."""
    allowed = list(allowed)
    if value not in allowed:
        raise ValueError(f"{name} must be one of {allowed}; got {value!r}")


def is_int(value) -> bool:
    """A Python or NumPy integer, not a bool (``True`` is not a size)."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def positive_int(name: str, value) -> int:
    """``value`` as a Python int; ValueError naming ``name`` unless it is an int >= 1."""
    if not is_int(value) or value < 1:
        raise ValueError(f"{name} must be a positive int; got {value!r}")
    return int(value)


def check_seed(name: str, value) -> None:
    """ValueError naming ``name`` unless ``value`` is an int in [0, 2**31) (an int32 key)."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**31:
        raise ValueError(f"{name} must be an int in [0, 2**31); got {value!r}")


def check_order_seed(name: str, value) -> None:
    """As :func:`check_seed`, or -1: a run config's "the run's own seed"."""
    if isinstance(value, bool) or not isinstance(value, int) or not -1 <= value < 2**31:
        raise ValueError(
            f"{name} must be -1 (the run's seed) or an int in [0, 2**31); got {value!r}"
        )


def per_dim(name: str, value, ndim: int, *, where: str = "spatial dim") -> tuple[int, ...]:
    """``ndim`` positive ints from ``None`` (all 1), one positive int, or one per dim.

    Args:
      name: the argument's name, for the message.
      value: ``None``, an int >= 1, or a sequence of ``ndim`` ints >= 1.
      ndim: the number of spatial dims.
      where: what one entry is for, in the message (``"one per {where}"``).

    Returns:
      A tuple of ``ndim`` Python ints.

    Raises:
      ValueError: naming ``name``, ``ndim`` and the value given.
    """
    if value is None:
        value = 1
    values = (value,) * ndim if is_int(value) else value
    try:
        values = tuple(values)
    except TypeError:
        values = ()
    if len(values) != ndim or not all(is_int(v) and v >= 1 for v in values):
        raise ValueError(
            f"{name} must be a positive int or {ndim} positive ints (one per {where}); "
            f"got {value!r}"
        )
    return tuple(int(v) for v in values)


def kernel_size(value) -> tuple[int, ...]:
    """A convolution's window: one positive int (one spatial dim) or one per spatial dim.

    Raises:
      TypeError: ``value`` is neither an int nor a sequence.
      ValueError: an entry is not a positive int, or the sequence is empty.
    """
    values = (value,) if is_int(value) else value
    try:
        values = tuple(values)
    except TypeError as err:
        raise TypeError(f"kernel_size must be an int or a sequence of ints; got {value!r}") from err
    if not values or not all(is_int(k) and k >= 1 for k in values):
        raise ValueError(
            "kernel_size must be a positive int or a non-empty sequence of positive ints (one per "
            f"spatial dim); got {value!r}"
        )
    return tuple(int(k) for k in values)

"""Argument checks shared by the library: one wording for every "must be one of" error."""

from __future__ import annotations

from collections.abc import Iterable


def check_choice(name: str, value, allowed: Iterable) -> None:
    """Raises ValueError naming ``name``, the allowed values and the value given."""
    allowed = list(allowed)
    if value not in allowed:
        raise ValueError(f"{name} must be one of {allowed}; got {value!r}")

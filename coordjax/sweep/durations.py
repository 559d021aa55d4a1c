"""Durations as people read them, one wording for every estimate, ETA and age the sweep shows
(a light module: ``coordjax status`` reads a workdir without JAX)."""

from __future__ import annotations


def format_duration(seconds: float) -> str:
    """``"42 s"``, ``"3.5 min"``, ``"2.1 h"``, ``"4.0 days"``, ``"3.2 months"``.

    >>> format_duration(90), format_duration(3 * 86400)
    ('1.5 min', '3.0 days')
    """
    for unit, size in (("months", 30 * 86400), ("days", 86400), ("h", 3600), ("min", 60)):
        if seconds >= 2 * size if unit != "min" else seconds >= 60:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.0f} s"

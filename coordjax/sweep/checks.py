"""Sweep definitions refused before anything runs: one that trains nothing, and grid axes that
would train the same run twice.

An experiment may say which keys a run does not read (:attr:`Experiment.ignored_keys`; the paper:
``filter_size`` on ``coordconv_classifier``, the step schedule's keys under another schedule). A
grid *axis* that varies such a key gives runs that differ only in a number nothing reads: the
same training under several run ids. A single (base) value is harmless and stays allowed.
"""

from __future__ import annotations

from coordjax.sweep.space import is_distribution


def check_sweep(sweep) -> None:
    """Raises ValueError (one line) for a sweep without grids, an axis that repeats a value, or
    an axis that varies a key some of its runs ignore."""
    if not sweep.grids:
        raise ValueError(
            f"sweep {sweep.name!r} has no grids, hence no runs: give union() at least one Grid"
        )
    for grid in sweep.grids:
        check_grid(grid, sweep.experiment)


def check_grid(grid, experiment) -> None:
    """Raises ValueError (one line) for an axis of ``grid`` that repeats a value or varies a key
    that some of the grid's runs ignore."""
    for key, values in grid.axes.items():
        if is_distribution(values):  # drawn values; duplicate runs are dropped by run id
            continue
        seen = []
        for value in values:
            if value in seen:
                raise ValueError(
                    f"axis {key!r} of grid {grid.name!r} repeats {value!r} (values "
                    f"{list(values)}): each value must appear once"
                )
            seen.append(value)
    varied = [k for k, v in grid.axes.items() if is_distribution(v) or len(v) > 1]
    if not varied:
        return
    if experiment.ignored_keys is None:
        return
    rows = grid.expand(experiment)
    for key in varied:
        groups: dict[tuple, set] = {}
        for row in rows:
            reason = experiment.ignored_keys(row).get(key)
            if reason is None:
                continue
            rest = tuple((k, repr(v)) for k, v in row.items() if k not in (key, "run_id"))
            groups.setdefault((reason, rest), set()).add(repr(row[key]))
            if len(groups[(reason, rest)]) > 1:
                raise ValueError(
                    f"axis {key!r} of grid {grid.name!r} varies a key that {reason} ignores: "
                    f"its runs would be duplicates; vary {key!r} only for runs that read it "
                    "(e.g. in a separate grid)"
                )

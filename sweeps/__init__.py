"""Launchable sweep definitions (installed as ``coordjax.catalog``).

Each module declares its sweeps as data, a ``PRESETS`` dict from preset name to a function
returning a :class:`coordjax.sweep.Sweep`, and runs itself through the CLI when executed::

    coordjax sweep classification --preset smoke --workdir runs/cls
    python sweeps/classification.py --preset smoke --workdir runs/cls   # the same
"""

SWEEPS = ("classification", "rendering", "regression", "digits", "gan")

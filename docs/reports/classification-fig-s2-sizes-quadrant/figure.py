"""Fig S2 from both halves of the fig-s2-sizes preset: parameters vs final test accuracy.

    python docs/reports/classification-fig-s2-sizes-quadrant/figure.py \\
        docs/reports/classification-fig-s2-sizes-uniform \\
        docs/reports/classification-fig-s2-sizes-quadrant \\
        docs/reports/classification-fig-s2-sizes-quadrant/fig_s2_both_splits.png

Each argument but the last is a workdir (or a committed report folder: its results.csv and
config.json); the figure is the report's own Fig S2, a panel per split.
"""

import pathlib
import sys

import pandas as pd

from coordjax.report import figures, source


def main(*args: str) -> None:
    *workdirs, path = args
    final = pd.concat([source.read(w).final for w in workdirs], ignore_index=True)
    figures.size_vs_metric(final, "classification", pathlib.Path(path))


if __name__ == "__main__":
    main(*sys.argv[1:])

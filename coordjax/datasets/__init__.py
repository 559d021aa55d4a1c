"""Datasets for the paper's toy experiments.

``not_so_clevr(split)`` gives the Not-so-Clevr dataset (9x9 squares on a 64x64 canvas, 3136
centres) split into ``.train`` / ``.test`` :class:`Examples`; see
:mod:`coordjax.datasets.not_so_clevr` for generation and the splits.

Note: the function ``not_so_clevr`` shadows the submodule of the same name as an attribute of
this package, so ``import coordjax.datasets.not_so_clevr as m`` binds the function; use
``from coordjax.datasets.not_so_clevr import ...`` (or ``sys.modules``) to reach the module.
"""

from coordjax.datasets.not_so_clevr import SPLITS as SPLITS
from coordjax.datasets.not_so_clevr import Examples as Examples
from coordjax.datasets.not_so_clevr import NotSoClevr as NotSoClevr
from coordjax.datasets.not_so_clevr import all_examples as all_examples
from coordjax.datasets.not_so_clevr import not_so_clevr as not_so_clevr
from coordjax.datasets.not_so_clevr import split_indices as split_indices
from coordjax.datasets.not_so_clevr import unit_inputs as unit_inputs

__all__ = [
    "SPLITS", "Examples", "NotSoClevr", "all_examples", "not_so_clevr", "split_indices",
    "unit_inputs",
]

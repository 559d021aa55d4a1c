"""coordjax: CoordConv (Liu et al., NeurIPS 2018) in JAX/Flax, built for sweeps.

Public surface::

    import coordjax as cj
    cj.add_coords(x)                 # pure: (..., *spatial, C) -> (..., *spatial, C + d)
    cj.coord_channels((64, 64))      # (64, 64, 2) grid
    cj.linen.CoordConv, cj.nnx.CoordConv, ...
    cj.datasets.not_so_clevr("uniform")
"""

from coordjax.coords import CoordinatePrecisionWarning as CoordinatePrecisionWarning
from coordjax.coords import add_coords as add_coords
from coordjax.coords import coord_channels as coord_channels
from coordjax.coords import num_coord_channels as num_coord_channels

__version__ = "0.1.0"

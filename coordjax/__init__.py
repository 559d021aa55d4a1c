"""coordjax: CoordConv (Liu et al., NeurIPS 2018) in JAX/Flax, built for sweeps.

Public surface::

    import coordjax as cj
    cj.add_coords(x)                 # pure: (..., *spatial, C) -> (..., *spatial, C + d)
    cj.coord_channels((64, 64))      # (64, 64, 2) grid
    cj.linen.CoordConv, cj.nnx.CoordConv, ...   # lowering="auto" | "lax" | "matmul"
    cj.conv.conv(x, kernel, strides=, padding=, lowering=)   # how convolutions are lowered
    cj.datasets.not_so_clevr("uniform")
    cj.models.build("coordconv_classifier"), cj.tasks.get("classification")
    cj.train.fit(...)                # the paper's recipe, one model
    coordjax.sweep.run_sweep(...)    # many models at once (import coordjax.sweep)
"""

from coordjax import conv as conv
from coordjax import datasets as datasets
from coordjax import handbuilt as handbuilt
from coordjax import linen as linen
from coordjax import models as models
from coordjax import nnx as nnx
from coordjax import tasks as tasks
from coordjax import train as train
from coordjax.coords import CoordinatePrecisionWarning as CoordinatePrecisionWarning
from coordjax.coords import add_coords as add_coords
from coordjax.coords import coord_channels as coord_channels
from coordjax.coords import num_coord_channels as num_coord_channels

__version__ = "0.1.0"

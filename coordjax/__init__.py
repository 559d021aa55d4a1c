"""coordjax: CoordConv (Liu et al., NeurIPS 2018) in JAX/Flax, built for sweeps.

Public surface::

    import coordjax as cj
    cj.add_coords(x)                 # pure: (..., *spatial, C) -> (..., *spatial, C + d)
    cj.coord_channels((64, 64))      # (64, 64, 2) grid
    cj.linen.CoordConv, cj.nnx.CoordConv, ...   # lowering="auto" | "lax" | "matmul" | ...
    cj.functional.coord_conv(spec, params, x)    # the layers' pure core
    cj.conv.conv(x, kernel, strides=, padding=, lowering=)   # how convolutions are lowered
    cj.datasets.not_so_clevr("uniform")
    cj.models.build("coordconv_classifier"), cj.tasks.get("classification")
    cj.train.fit(...)                # the paper's recipe, one model
    coordjax.sweep.run_sweep(...)    # many models at once (import coordjax.sweep)
"""

import importlib

# Submodules and names load on first use (PEP 562), so that importing a light module such as
# coordjax.paper or coordjax.report does not import JAX, the models or the training step.
_SUBMODULES = (
    "conv",
    "datasets",
    "functional",
    "handbuilt",
    "linen",
    "models",
    "nnx",
    "tasks",
    "train",
)
_NAMES = {
    "CoordinatePrecisionWarning": "coordjax.coords",
    "add_coords": "coordjax.coords",
    "coord_channels": "coordjax.coords",
    "num_coord_channels": "coordjax.coords",
}

__version__ = "0.1.0"
__all__ = [*_SUBMODULES, *_NAMES]


def __getattr__(name: str):
    if name in _SUBMODULES:
        return importlib.import_module(f"coordjax.{name}")
    if name in _NAMES:
        return getattr(importlib.import_module(_NAMES[name]), name)
    raise AttributeError(f"module 'coordjax' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})

"""How a sweep is executed (:class:`EngineOptions`): the options the engine, the dry run and the
wall-time estimate all read, in a module of their own that none of them has to import the others
for."""

from __future__ import annotations

import dataclasses

from coordjax import conv
from coordjax._checks import check_choice, positive_int
from coordjax.sweep.planner import validate_pad

STRATEGIES = ("auto", "vmap", "map", "tune")


@dataclasses.dataclass(frozen=True)
class EngineOptions:
    """How a sweep is executed; none of these change a model's numbers beyond float noise.

    Attributes:
      strategy: how the model axis is lowered inside a device: ``"vmap"`` (one batched program;
        vmapped convolutions become grouped convolutions), ``"map"`` (``lax.map`` over slices of
        ``map_batch_size`` vmapped models, which bounds memory and avoids large groups),
        ``"auto"`` (default): a fixed rule per platform and models per device
        (:func:`coordjax.sweep.programs.default_strategy`, from ``benchmarks/strategies.py``),
        so the same command always computes the same numbers; or ``"tune"``: per bucket, time a
        few training steps of ``"vmap"`` and of ``"map"`` with slices of 1 and keep the faster
        (machine load can change that choice, and the two lowerings differ at float level).
        Whatever is chosen is recorded per bucket in ``workdir/strategies.json`` and reused
        when the sweep resumes; the results' ``strategy`` column repeats it.
      map_batch_size: models per slice for ``"map"``.
      max_models: at most this many models per program (larger buckets are split).
      shard: shard the model axis over all local devices (``shard_map``; each device runs the
        single-device program on its slice of models).
      progress: show a progress bar (tqdm) on stderr.
      pad: shape axes (``"filter_size"``, ``"channel_mult"``, ...) served by padding instead of
        by separate buckets, for the models that support it: one program trains the largest
        shape and every smaller model exactly inside it (``coordjax.paper.padding``). Fewer
        compiles and launches, more FLOPs per small model.
      lowering: how every convolution is computed (:mod:`coordjax.conv`): ``"lax"``,
        ``"matmul"``, ``"zero_insertion"``, or ``"auto"`` (default): the fixed per-platform
        rule for convolutions whose weights carry the model axis,
        ``coordjax.conv.resolve_lowering("auto", vmapped=True)`` (never a timing; one value
        for plain and transposed convolutions on every platform). The resolved lowering is
        recorded in the workdir's ``config.json`` (``"lowering"``) and reused on resume.
      device_memory: bytes one device may hold, or None (default: no memory planning). Each
        bucket's program is then measured by XLA's memory analysis
        (:mod:`coordjax.sweep.memory`) and run with a smaller map batch or split into programs
        of fewer models until it fits; a bucket of which one model does not fit is refused
        before anything is written.
    """

    strategy: str = "auto"
    map_batch_size: int = 4
    max_models: int | None = None
    shard: bool = True
    progress: bool = True
    pad: tuple[str, ...] = ()
    lowering: str = "auto"
    device_memory: int | None = None

    def __post_init__(self):
        object.__setattr__(self, "pad", validate_pad(self.pad))
        check_choice("lowering", self.lowering, conv.LOWERINGS)
        check_choice("strategy", self.strategy, STRATEGIES)
        if not isinstance(self.map_batch_size, int) or self.map_batch_size < 1:
            raise ValueError(f"map_batch_size must be a positive int; got {self.map_batch_size!r}")
        if self.device_memory is not None:
            positive_int("device_memory", self.device_memory)

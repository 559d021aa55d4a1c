"""The programs a sweep would send to another platform, lowered on this host.

JAX lowers for a platform it does not run on: ``jit(f).trace(...).lower(lowering_platforms=
("cuda",))`` gives the StableHLO a GPU would compile. :func:`lowered_chunk` does that for a
bucket's real training chunk (the engine's ``jit(vmap(train_chunk))`` with the convolution
lowering the engine's ``auto`` resolves for *that* platform, at a model axis of several models),
from shapes alone; :func:`program_ops` lists its convolutions and dots with what makes them slow
or imprecise on accelerators: base dilation (``lhs_dilate``, a transposed convolution),
grouping (``feature_group_count`` / ``batch_group_count``, a vmapped convolution) and the
requested precision (``HIGHEST`` is full float32; anything else lets a GPU use TF32).

    coordjax lower classification --preset smoke --platform cuda
"""

from __future__ import annotations

import functools
import re
from collections import Counter
from typing import NamedTuple

import jax
import numpy as np

from coordjax import conv
from coordjax.sweep.planner import Bucket
from coordjax.sweep.programs import compiled_chunk

PLATFORMS = ("cpu", "cuda", "rocm", "tpu")
_RULE_PLATFORM = {"cpu": "cpu", "cuda": "gpu", "rocm": "gpu", "tpu": "tpu"}


class Op(NamedTuple):
    """One convolution or dot of a lowered program.

    Attributes:
      kind: ``"convolution"`` or ``"dot_general"``.
      lhs_dilate: the input's base dilation per spatial axis (``()`` for a dot): not all 1 is a
        transposed convolution lowered by dilation.
      feature_group_count, batch_group_count: > 1 is a grouped convolution (1 for a dot).
      precision: the requested precision of each operand, e.g. ``("HIGHEST", "HIGHEST")``.
    """

    kind: str
    lhs_dilate: tuple[int, ...]
    feature_group_count: int
    batch_group_count: int
    precision: tuple[str, ...]

    @property
    def transposed(self) -> bool:
        return any(d != 1 for d in self.lhs_dilate)

    @property
    def grouped(self) -> bool:
        return self.feature_group_count > 1 or self.batch_group_count > 1

    @property
    def full_precision(self) -> bool:
        return bool(self.precision) and all(p == "HIGHEST" for p in self.precision)


def _ints(pattern: str, line: str, default: tuple[int, ...]) -> tuple[int, ...]:
    found = re.search(pattern, line)
    return default if found is None else tuple(int(v) for v in found.group(1).split(","))


def program_ops(stablehlo: str) -> list[Op]:
    """The convolutions and dots of a StableHLO module's text, in program order."""
    ops = []
    for line in stablehlo.splitlines():
        if "stablehlo.convolution" in line:
            precision = re.findall(r"#stablehlo<precision (\w+)>", line)
            ops.append(Op(
                "convolution",
                _ints(r"lhs_dilate = \[([\d, ]+)\]", line, ()),
                _ints(r"feature_group_count = (\d+)", line, (1,))[0],
                _ints(r"batch_group_count = (\d+)", line, (1,))[0],
                tuple(precision),
            ))  # fmt: skip
        elif "stablehlo.dot_general" in line:
            found = re.search(r"precision = \[([\w, ]+)\]", line)
            precision = () if found is None else tuple(p.strip() for p in found.group(1).split(","))
            ops.append(Op("dot_general", (), 1, 1, precision))
    return ops


def target_lowering(platform: str) -> str:
    """The convolution lowering the engine's ``auto`` gives a model axis on ``platform``."""
    if platform not in PLATFORMS:
        raise ValueError(f"platform must be one of {list(PLATFORMS)}; got {platform!r}")
    return conv.resolve_lowering("auto", _RULE_PLATFORM[platform], vmapped=True)


def lowered_chunk(
    bucket: Bucket, platform: str, *, num_models: int = 2, num_epochs: int = 1
) -> jax.stages.Lowered:
    """The bucket's training chunk (``num_epochs`` epochs and an evaluation) for ``num_models``
    vmapped models, lowered for ``platform`` with the lowering the engine's ``auto`` resolves
    there. Shapes only: nothing is computed or placed on a device. (A padded bucket is lowered
    as its largest model, without the parameter masks.)"""
    setup = bucket.setup(target_lowering(platform))
    experiment = bucket.experiment
    data = jax.eval_shape(lambda: experiment.data(setup))
    configs = [bucket.runs[i % bucket.num_models] for i in range(num_models)]
    runs = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(np.shape(x), np.asarray(x).dtype), experiment.stack(configs)
    )
    init = jax.vmap(functools.partial(experiment.recipe.init, setup), in_axes=(None, 0))
    states = jax.eval_shape(init, data, runs)
    program = compiled_chunk(setup, num_epochs, "vmap", 1, None, experiment.recipe)
    return program.trace(data, runs, states).lower(lowering_platforms=(platform,))


def ops_summary(ops: list[Op]) -> str:
    """One line: how many convolutions and dots, and how many are transposed, grouped or not at
    full precision."""
    kinds = Counter(op.kind for op in ops)
    convs = [op for op in ops if op.kind == "convolution"]
    return (
        f"convs {kinds['convolution']} (lhs_dilate {sum(op.transposed for op in convs)}, "
        f"grouped {sum(op.grouped for op in convs)}), dots {kinds['dot_general']}, "
        f"below HIGHEST {sum(not op.full_precision for op in ops)}"
    )

"""The programs the engine would send to a GPU or a TPU, checked on this CPU: with the GPU rule
(matmul) no transposed or grouped convolution is left in a vmapped training chunk of any Fig S2
family, and every convolution and dot asks for full float32 precision on both platforms."""

import jax
import jax.numpy as jnp
import pytest

from coordjax import cli
from coordjax.sweep import Grid, plan, union
from coordjax.sweep.target import lowered_chunk, program_ops, target_lowering

FAMILIES = {
    "deconv painter fs 3": {"model": "deconv_painter", "filter_size": 3},
    "CoordConv classifier": {"model": "coordconv_classifier"},
    "conv regressor (quadrant)": {"model": "conv_regressor_quadrant", "task": "regression"},
}
SLOW_FAMILIES = {
    "deconv painter fs 2": {"model": "deconv_painter", "filter_size": 2},
    "deconv painter fs 4": {"model": "deconv_painter", "filter_size": 4},
    "deconv renderer": {"model": "deconv_painter", "task": "rendering", "loss": "sigmoid"},
    "CoordConv renderer": {"model": "coordconv_renderer", "task": "rendering", "loss": "sigmoid"},
    "conv regressor (uniform)": {"model": "conv_regressor_uniform", "task": "regression"},
    "CoordConv regressor": {"model": "coordconv_regressor", "task": "regression"},
}
CASES = [
    *(pytest.param(v, id=k) for k, v in FAMILIES.items()),
    *(pytest.param(v, id=k, marks=pytest.mark.slow) for k, v in SLOW_FAMILIES.items()),
]


def _bucket(family):
    base = {"task": "classification", "batch_size": 16, "epochs": 1, "eval_every": 1, **family}
    (bucket,) = plan(union("s", [Grid("g", base=base, axes={"lr": [0.01, 0.02]})]).expand())
    return bucket


@pytest.mark.parametrize("family", CASES)
def test_gpu_and_tpu_programs_of_each_family(family):
    bucket = _bucket(family)
    gpu = program_ops(lowered_chunk(bucket, "cuda").as_text())
    assert target_lowering("cuda") == "matmul" and gpu
    assert not [op for op in gpu if op.kind == "convolution" and (op.transposed or op.grouped)]
    assert all(op.full_precision for op in gpu), [op for op in gpu if not op.full_precision]
    tpu = program_ops(lowered_chunk(bucket, "tpu").as_text())
    assert tpu and all(op.full_precision for op in tpu)


def test_the_check_sees_a_vmapped_transposed_convolution():
    """A vmapped lax transposed convolution is what the check must catch: base dilation and
    grouping, at the precision asked for."""

    def deconv(x, w):
        return jax.lax.conv_transpose(x, w, (2, 2), "SAME",
                                      dimension_numbers=("NHWC", "HWIO", "NHWC"))  # fmt: skip

    x, w = jnp.ones((2, 1, 4, 4, 2)), jnp.ones((2, 3, 3, 2, 3))
    for precision, full in (("highest", True), ("default", False)):
        with jax.default_matmul_precision(precision):
            lowered = jax.jit(jax.vmap(deconv)).trace(x, w).lower(lowering_platforms=("cuda",))
        (op,) = program_ops(lowered.as_text())
        assert op.transposed and op.grouped and op.full_precision == full


def test_cli_lower_names_each_bucket(capsys):
    assert cli.main(["lower", "classification", "--preset", "smoke", "--platform", "cuda"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "on cuda (lowering matmul" in lines[0] and len(lines) == 3
    assert all("convs 0 (lhs_dilate 0, grouped 0)" in line for line in lines[1:])
    assert all("below HIGHEST 0" in line for line in lines[1:])

"""The paper's claims under the faithful recipe: long runs, marked ``slow``.

Run with ``python -m pytest -m slow tests/test_paper_recipe.py`` (hours on a 2-core CPU; minutes
on a GPU). Each test trains with the reference recipe exactly (raw pixel inputs, he-normal init,
Adam β2 0.99, L2 in the loss) through the sweep engine and checks the paper's number. They state
what the paper claims; they are not tuned to pass. The default suite keeps fast versions of the
same code paths (tests/test_train.py, tests/test_sweep.py).

Status (2026-11-22, 2-core CPU, the same configurations run as the `evidence` presets of
sweeps/classification.py and sweeps/regression.py): the classifier and regressor claims are NOT
reproduced, so those two tests fail. The CoordConv classifier reaches 100 % test accuracy at
some evaluation in 10 of 12 runs (every lr, both splits) but does not stay there under a
constant lr: at epoch 50 only 2 of 12 runs are at 100 %. The regressor reaches 0.00 px on
uniform (0.25 px at epoch 100) but stalls at ~13 px train / 18 px test on quadrant. The deconv
claim holds (0.65 % uniform vs 0 % quadrant after 3 epochs).
"""

import pytest

from coordjax.sweep import EngineOptions, Grid, run_sweep, union

pytestmark = pytest.mark.slow
SPLITS = ["uniform", "quadrant"]
OPTIONS = EngineOptions(progress=False)


def _final(results):
    return results[results["epoch"] == results["epoch"].max()]


def test_coordconv_classifier_is_perfect_on_both_splits(tmp_path):
    """Paper S2: CoordConv (7,553 params) at lr 1e-2, 5e-3, 1e-3 'all learned perfectly well'."""
    grid = Grid("coordconv", base={"task": "classification", "model": "coordconv_classifier",
                                   "batch_size": 16, "epochs": 50, "eval_every": 10,
                                   "l2": 0.001},
                axes={"lr": [0.01, 0.005, 0.001], "split": SPLITS, "seed": [0, 1]})  # fmt: skip
    final = _final(run_sweep(union("cls", [grid]), tmp_path, options=OPTIONS))
    assert (final["test_accuracy"] == 1.0).all(), final[["lr", "split", "seed", "test_accuracy"]]


def test_coordconv_regressor_is_sub_pixel_on_both_splits(tmp_path):
    """Table S1 CoordConv regressor (906 params), reference grid: lr 1e-2, l2 1e-5, batch 256."""
    grid = Grid("coordconv", base={"task": "regression", "model": "coordconv_regressor",
                                   "batch_size": 256, "epochs": 100, "eval_every": 10,
                                   "lr": 0.01, "l2": 1e-5},
                axes={"split": SPLITS})  # fmt: skip
    final = _final(run_sweep(union("reg", [grid]), tmp_path, options=OPTIONS))
    assert (final["test_pixel_error"] < 0.5).all(), final[["split", "test_pixel_error"]]


def test_deconv_generalises_on_uniform_but_not_quadrant(tmp_path):
    """Fig S2: deconv models reach well above chance (1/4096) on uniform, ~0 on quadrant."""
    grid = Grid("deconv", base={"task": "classification", "model": "deconv_painter",
                                "filter_size": 2, "channel_mult": 1, "batch_size": 32,
                                "epochs": 50, "eval_every": 10, "lr": 0.002, "l2": 0.001,
                                "schedule": "step"},
                axes={"split": SPLITS})  # fmt: skip
    final = _final(run_sweep(union("deconv", [grid]), tmp_path, options=OPTIONS)).set_index("split")
    assert final.loc["uniform", "test_accuracy"] > 0.05
    assert final.loc["quadrant", "test_accuracy"] < 0.01

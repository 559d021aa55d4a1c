"""Supervised Coordinate Regression: one-hot 64x64 image -> (x/64, y/64) (paper §4.1, S3, Table S1).

    coordjax sweep regression --preset smoke --workdir runs/regression-smoke
    coordjax sweep regression --preset paper --workdir runs/regression

Presets:
  paper      Table S1 models with the reference grid: conv regressors (72,850 params on uniform,
             12,914 on quadrant) lr {5e-4, 1e-3, 1e-2} × l2 {1e-5, 1e-4, 5e-4}; CoordConv
             regressor (906 params) lr 1e-2, l2 1e-5; batch 256, 100 epochs, constant lr.
  cpu        the paper's length for one idle 2-core CPU (the dry run says 49 min):
             both conv regressors over the reference grid (9 runs each), 100 epochs, a
             third kept at epoch 20 by train error. Measured (67 min of training): uniform
             0.37 px test, quadrant 6.08 px (1.44 px train); docs/reports/regression-cpu.
  cpu-coordconv  its CoordConv half, a preset of its own so that each fits a 2-hour run (the dry
             run says 68 min, but the ``evidence`` run of seed 0 took 76 min for 2 models): the
             CoordConv regressor, seeds {0, 1}, both splits, 100 epochs, evaluated every 5.
             Measured (80 min): uniform 0.00 px at seed 0 (epochs 30-60), 14.1 px at seed 1;
             quadrant stalls at both seeds (13.0 / 20.4 px train), a dead max;
             docs/reports/regression-cpu-coordconv.
  smoke      the same models, a few epochs.
  evidence   the CoordConv regressor alone, both splits, the paper's 100 epochs, evaluated every 5
             (76 min measured on a 2-core CPU, seed 0). Expected: uniform test error 0.00 px at
             epochs 30-60; quadrant stalls (18.1 px at epoch 100), a dead max diagnosed in
             docs/science/regressor-dead-max.md.
  robustness  the CoordConv regressor across seeds: seeds 0-4 x lr {1e-2, 1e-3} x both splits,
             batch 256, l2 1e-5, 20 epochs, evaluated every 2 (20 models; about two hours on an
             idle 2-core CPU; not run yet). Read it with
             ``python -m coordjax.paper.robustness WORKDIR --by-lr`` (bar: < 0.5 px mean test
             error).
  robustness-full  for a GPU: seeds 0-9 x lr {1e-2, 3e-3, 1e-3} x batch {256, 32} x both
             splits, the paper's 100 epochs (120 models).
  The quadrant stall itself is diagnosed by ``python sweeps/regressor_quadrant.py``
  (docs/science/regressor-dead-max.md).
Expected (paper): conv generalises on uniform, poorly on quadrant; CoordConv near-perfect on both.
"""

from coordjax.sweep import Grid, Prune, union

BASE = {
    "task": "regression",
    "batch_size": 256,
    "epochs": 100,
    "eval_every": 10,
    "schedule": "constant",
}
CONV_AXES = {"lr": [0.0005, 0.001, 0.01], "l2": [1e-5, 1e-4, 5e-4]}


def _grids(epochs: int, eval_every: int, conv_axes: dict) -> list[Grid]:
    base = {**BASE, "epochs": epochs, "eval_every": eval_every}
    return [
        Grid(
            "conv",
            base={**base, "model": "conv_regressor_uniform", "split": "uniform"},
            axes=conv_axes,
        ),
        Grid(
            "conv",
            base={**base, "model": "conv_regressor_quadrant", "split": "quadrant"},
            axes=conv_axes,
        ),
        Grid(
            "coordconv",
            base={**base, "model": "coordconv_regressor", "lr": 0.01, "l2": 1e-5},
            axes={"split": ["uniform", "quadrant"]},
        ),
    ]


def paper():
    return union("regression", _grids(100, 10, CONV_AXES), "Table S1 models, reference grid")


def smoke():
    return union(
        "regression",
        _grids(6, 3, {"lr": [0.001, 0.01], "l2": [1e-4]}),
        "conv vs CoordConv regressors, 6 epochs; minutes on a 2-core CPU",
    )


def evidence():
    base = {**BASE, "model": "coordconv_regressor", "lr": 0.01, "l2": 1e-5, "epochs": 100,
            "eval_every": 5}  # fmt: skip
    return union(
        "regression",
        [Grid("coordconv", base=base, axes={"split": ["uniform", "quadrant"]})],
        "CoordConv regressor, paper recipe, 100 epochs",
    )


# The paper's length on one idle 2-core CPU: the conv regressors over the reference
# grid, halved to a third at epoch 20 by train error within each split; the CoordConv regressor
# at two seeds, never pruned, in a preset of its own (the dry run says 116 min for both, but the
# CoordConv regressor's `evidence` run took 76 min for two of its four models).
CPU_RULE = Prune(at=(20,), keep=1 / 3)


def cpu():
    conv = [
        Grid("conv", base={**BASE, "model": model, "split": split}, axes={**CONV_AXES},
             prune=CPU_RULE)
        for model, split in (("conv_regressor_uniform", "uniform"),
                             ("conv_regressor_quadrant", "quadrant"))
    ]  # fmt: skip
    return union("regression", conv, "Table S1's conv regressors at 100 epochs, pruned")


def cpu_coordconv():
    coordconv = Grid("coordconv",
                     base={**BASE, "model": "coordconv_regressor", "lr": 0.01, "l2": 1e-5,
                           "eval_every": 5},
                     axes={"split": ["uniform", "quadrant"], "seed": [0, 1]})  # fmt: skip
    return union("regression", [coordconv], "Table S1's CoordConv regressor, 100 epochs, 2 seeds")


def _robustness_grid(seeds, lrs, batch_sizes, epochs: int, eval_every: int) -> Grid:
    base = {**BASE, "model": "coordconv_regressor", "l2": 1e-5, "epochs": epochs,
            "eval_every": eval_every}  # fmt: skip
    return Grid("coordconv", base=base,
                axes={"batch_size": list(batch_sizes), "lr": list(lrs),
                      "split": ["uniform", "quadrant"], "seed": list(seeds)})  # fmt: skip


def robustness():
    grid = _robustness_grid(range(5), [0.01, 0.001], [256], epochs=20, eval_every=2)
    return union("regression", [grid], "CoordConv regressor across seeds and lrs")


def robustness_full():
    grid = _robustness_grid(range(10), [0.01, 0.003, 0.001], [256, 32], epochs=100, eval_every=5)
    return union("regression", [grid], "CoordConv regressor across seeds, lrs, batch sizes")


PRESETS = {
    "paper": paper,
    "smoke": smoke,
    "evidence": evidence,
    "cpu": cpu,
    "cpu-coordconv": cpu_coordconv,
    "robustness": robustness,
    "robustness-full": robustness_full,
}

# What each preset is for (``coordjax list`` prints the presets under these headings).
PURPOSES = {
    "see it work in minutes": ["smoke"],
    "the paper's grids (days on a CPU: a GPU or successive halving)": ["paper"],
    "the paper's lengths on one CPU (hours)": ["cpu", "cpu-coordconv"],
    "evidence for one claim": ["evidence"],
    "robustness across seeds and recipe variants": ["robustness", "robustness-full"],
}

if __name__ == "__main__":
    import sys

    from coordjax.cli import main

    sys.exit(main(["sweep", "regression", *sys.argv[1:]]))

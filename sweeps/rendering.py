"""Supervised Rendering: (x, y) -> 64x64 image of a 9x9 square (paper §4.2, S4, Fig 6).

    coordjax sweep rendering --preset smoke --workdir runs/rendering-smoke
    coordjax sweep rendering --preset paper --workdir runs/rendering

Presets:
  paper      deconv as classification's Fig S2 grid, pixelwise sigmoid cross-entropy, both splits
             (432 models) ∪ CoordConv renderer (m = 2) lr {1e-3, 5e-3} × l2 {0, 1e-3} × fs {1, 2},
             batch 16, 50 epochs, both splits (16 models; fs 1 is the paper's 9,490-param model).
  reference  the reference code's grid: deconv l2 {0, 1e-3, 1e-2} × loss {sigmoid, mse}; CoordConv
             fs 1 × m {1, 2}.
  cpu        the paper's comparison for one idle 2-core CPU (the dry run says 73 min):
             deconv renderers fs 2 x c {1, 2} x loss {sigmoid, mse}, lr 2e-3, l2 1e-3, batch 32,
             150 epochs, both splits, halved at epoch 50 by train IoU within each split; the
             CoordConv renderer (9,490 params) under both losses, lr 5e-3, batch 16, 50 epochs,
             both splits. Expected: deconv sigmoid test IoU 0.78 uniform / 0.23 quadrant at
             epoch 150 (MSE runs pruned at 0.02); the CoordConv renderer paints nothing (IoU 0)
             under the sigmoid loss. Its report: docs/reports/rendering-cpu.
  cpu-unit   the intervention for ``cpu``'s CoordConv renderer: the same model and recipe with
             its inputs in the coordinate channels' range (``input_scale="unit"``, the fix for
             the classifier's raw-input slowness), sigmoid loss, 20 epochs, evaluated every 2,
             both splits (578 s measured). Expected: test IoU 1.000 on uniform from epoch 12,
             0.94 on quadrant (train 1.000). Its report: docs/reports/rendering-cpu-unit.
  renderer-interventions
             why the faithful CoordConv renderer paints nothing, and whether the unit-input fix
             holds across seeds: the ``cpu`` CoordConv renderer (sigmoid, batch 16), 20 epochs,
             evaluated every 2: raw inputs on uniform at lr {5e-3, 1e-3, 2e-4} (``raw-lr``), and
             unit inputs on quadrant at seeds {1, 2, 3} (``unit-seeds``; seed 0 is
             ``cpu-unit``'s). Its report: docs/reports/rendering-interventions.
  renderer-loss
             the faithful (raw-input) CoordConv renderer under the reference's other loss, MSE on
             the raw output: lr 5e-3, batch 16, 30 epochs, evaluated every 3, both splits, seeds
             {0, 1}. Reports ``output_iou`` (painted where the output is > 0.5) beside the
             faithful ``iou``, which under MSE paints the background by its noise. Its report:
             docs/reports/rendering-loss.
  smoke      a few epochs of CoordConv and a small deconv, both splits.
Runtime: ``coordjax list`` prints an estimate for this machine (smoke: minutes on a 2-core CPU);
the verdicts are on docs/science/reproductions.md.
Targets are binary 0/1 squares (the paper's recipe; the reference's 0.502 targets cap IoU at 0.5).
Expected (paper/blog): deconv test IoU ≤ 0.83 (uniform), ≤ 0.36 (quadrant); CoordConv IoU 1.0.
"""

from coordjax.catalog.classification import DECONV as CLASSIFICATION_DECONV
from coordjax.catalog.classification import SPLITS
from coordjax.catalog.classification import deconv_grid as classification_deconv_grid

from coordjax.sweep import Grid, Prune, union

# The deconv grid is classification's Fig S2 grid (paper S4: "similar to Section S2") with the
# pixelwise sigmoid loss.
DECONV = {**CLASSIFICATION_DECONV, "task": "rendering", "loss": "sigmoid"}
COORDCONV = {
    "task": "rendering",
    "loss": "sigmoid",
    "model": "coordconv_renderer",
    "channel_mult": 2,
    "filter_size": 1,
    "batch_size": 16,
    "epochs": 50,
    "eval_every": 5,
    "schedule": "constant",
}


def deconv_grid(l2s: list[float], losses: list[str]) -> Grid:
    """Classification's Fig S2 deconv grid with the rendering base and a loss axis."""
    return classification_deconv_grid(l2s, base=DECONV, losses=losses)


def paper():
    coordconv = Grid(
        "coordconv",
        base=COORDCONV,
        axes={"filter_size": [1, 2], "lr": [0.001, 0.005], "l2": [0.0, 0.001], "split": SPLITS},
    )
    return union(
        "rendering",
        [deconv_grid([0.001, 0.01], ["sigmoid"]), coordconv],
        "Fig 6 / S4 grid: deconv and CoordConv renderers, both splits",
    )


def reference():
    coordconv = Grid(
        "coordconv",
        base=COORDCONV,
        axes={"channel_mult": [1, 2], "lr": [0.001, 0.005], "l2": [0.0, 0.001], "split": SPLITS},
    )
    return union(
        "rendering",
        [deconv_grid([0.0, 0.001, 0.01], ["sigmoid", "mse"]), coordconv],
        "the reference code's grid (experiment_logs.sh)",
    )


def smoke():
    return union(
        "rendering",
        [
            Grid(
                "coordconv",
                base={**COORDCONV, "epochs": 4, "eval_every": 2, "batch_size": 32},
                axes={"lr": [0.005, 0.001], "split": SPLITS},
            ),
            Grid(
                "deconv",
                base={
                    **DECONV,
                    "epochs": 4,
                    "eval_every": 2,
                    "filter_size": 2,
                    "channel_mult": 1,
                    "batch_size": 32,
                    "l2": 0.001,
                },
                axes={"lr": [0.01], "split": SPLITS},
            ),
        ],
        "CoordConv vs deconv renderers, both splits; minutes on a 2-core CPU",
    )


# The paper's comparison on one idle 2-core CPU: small deconv renderers under both of
# the paper's losses, halved at epoch 50 by train IoU within each split, against the paper's
# 9,490-parameter CoordConv renderer at its 50 epochs.
CPU_RULE = Prune(at=(50,), keep=1 / 2)


# The CoordConv renderer of both cpu presets: lr 5e-3, no L2.
CPU_COORDCONV = {**COORDCONV, "l2": 0.0, "lr": 0.005}


def cpu():
    deconv = Grid("deconv",
                  base={**DECONV, "filter_size": 2, "batch_size": 32, "l2": 0.001, "lr": 0.002,
                        "epochs": 150, "eval_every": 10},
                  axes={"loss": ["sigmoid", "mse"], "channel_mult": [1, 2], "split": SPLITS},
                  prune=CPU_RULE)  # fmt: skip
    coordconv = Grid("coordconv", base=CPU_COORDCONV,
                     axes={"loss": ["sigmoid", "mse"], "split": SPLITS})  # fmt: skip
    return union("rendering", [deconv, coordconv],
                 "deconv vs CoordConv renderers, both losses, for one CPU")  # fmt: skip


def cpu_unit():
    coordconv = Grid("coordconv-unit",
                     base={**CPU_COORDCONV, "input_scale": "unit", "epochs": 20,
                           "eval_every": 2},
                     axes={"split": SPLITS})  # fmt: skip
    return union("rendering", [coordconv], "the CoordConv renderer with unit inputs, 20 epochs")


def renderer_interventions():
    short = {**CPU_COORDCONV, "epochs": 20, "eval_every": 2}
    raw = Grid("raw-lr", base={**short, "split": "uniform"}, axes={"lr": [0.005, 0.001, 0.0002]})
    unit = Grid("unit-seeds", base={**short, "input_scale": "unit", "split": "quadrant"},
                axes={"seed": [1, 2, 3]})  # fmt: skip
    about = "the CoordConv renderer: raw inputs across lr, unit inputs across seeds"
    return union("rendering", [raw, unit], about)


def renderer_loss():
    raw_mse = Grid("raw-mse", base={**CPU_COORDCONV, "loss": "mse", "epochs": 30, "eval_every": 3},
                   axes={"split": SPLITS, "seed": [0, 1]})  # fmt: skip
    return union("rendering", [raw_mse], "the raw-input CoordConv renderer under the MSE loss")


PRESETS = {"paper": paper, "reference": reference, "smoke": smoke, "cpu": cpu,
           "cpu-unit": cpu_unit, "renderer-interventions": renderer_interventions,
           "renderer-loss": renderer_loss}  # fmt: skip

# What each preset is for (``coordjax list`` prints the presets under these headings).
PURPOSES = {
    "see it work in minutes": ["smoke"],
    "the paper's grids (days on a CPU: a GPU or successive halving)": ["paper", "reference"],
    "the paper's lengths on one CPU (hours)": ["cpu", "cpu-unit"],
    "open questions, by intervention": ["renderer-interventions", "renderer-loss"],
}

if __name__ == "__main__":
    import sys

    from coordjax.cli import main

    sys.exit(main(["sweep", "rendering", *sys.argv[1:]]))

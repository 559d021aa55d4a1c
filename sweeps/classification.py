"""Supervised Coordinate Classification: (x, y) -> one-hot 64x64 map (paper §4.1, S2, Fig S2).

    coordjax sweep classification --preset smoke --workdir runs/classification-smoke
    coordjax sweep classification --preset paper --workdir runs/classification   # Fig S2

Presets:
  paper      Fig S2: deconv fs {2,3,4} × c {1,2,3} × lr {1e-3 … 5e-2} × l2 {1e-3, 1e-2} × batch
             {16, 32}, 1000 epochs, lr × 0.1 every 200 epochs (4 times), both splits (432 models)
             ∪ CoordConv (7,553 params) lr {1e-2, 5e-3, 1e-3} × l2 {0, 1e-3}, batch 16, 50
             epochs, constant lr, both splits (12 models).
  reference  the reference code's grid (experiment_logs.sh): as paper, deconv l2 {0, 1e-3, 1e-2}
             (648 models).
  coordconv  the CoordConv part of paper only.
  evidence   CoordConv at the paper's three learning rates, l2 1e-3, batch 16, both splits,
             seeds {0, 1}, 50 epochs, evaluated every 2 epochs.
  evidence-deconv  deconv fs 2, c 1, batch 32, lr 2e-3, 3 epochs, both splits.
  smoke      a small real sweep for a 2-core CPU: CoordConv (lr 1e-2, batch 16, 6 epochs) and a
             small deconv (fs 2, c 1, lr 2e-3, batch 32, 3 epochs), both splits. Measured: 3 min
             17 s on 2 cores. It exercises the whole pipeline; it is too short to show the paper's
             result: after 6 epochs the faithful CoordConv is still near 0 % test accuracy
             (train loss ~5, from ln 4096 = 8.3), and the deconv reaches 4.3 px mean error on
             uniform test vs 14 px on quadrant test.
Expected (paper): deconv test accuracy ≤ ~86 % on uniform and ~0 on quadrant; CoordConv 100 %
train and test on both splits.
"""

from coordjax.sweep import Grid, union

SPLITS = ["uniform", "quadrant"]
LRS = [0.001, 0.002, 0.005, 0.01, 0.02, 0.05]

DECONV = {
    "task": "classification",
    "model": "deconv_painter",
    "epochs": 1000,
    "eval_every": 50,
    "schedule": "step",
    "lr_decay": 0.1,
    "lr_decay_every": 200,
    "lr_max_decays": 4,
}
COORDCONV = {
    "task": "classification",
    "model": "coordconv_classifier",
    "channel_mult": 1,
    "batch_size": 16,
    "epochs": 50,
    "eval_every": 5,
    "schedule": "constant",
}


def deconv_grid(l2s: list[float]) -> Grid:
    return Grid(
        "deconv",
        base=DECONV,
        axes={
            "filter_size": [2, 3, 4],
            "channel_mult": [1, 2, 3],
            "batch_size": [16, 32],
            "lr": LRS,
            "l2": l2s,
            "split": SPLITS,
        },
    )


def coordconv_grid() -> Grid:
    return Grid(
        "coordconv",
        base=COORDCONV,
        axes={"lr": [0.01, 0.005, 0.001], "l2": [0.0, 0.001], "split": SPLITS},
    )


def paper():
    return union(
        "classification",
        [deconv_grid([0.001, 0.01]), coordconv_grid()],
        "Fig S2 grid: deconv and CoordConv, both splits",
    )


def reference():
    return union(
        "classification",
        [deconv_grid([0.0, 0.001, 0.01]), coordconv_grid()],
        "the reference code's grid (experiment_logs.sh)",
    )


def coordconv():
    return union("classification", [coordconv_grid()], "CoordConv models of Fig S2")


def smoke():
    return union(
        "classification",
        [
            Grid("coordconv", base={**COORDCONV, "lr": 0.01, "l2": 0.001, "epochs": 6,
                                    "eval_every": 2},
                 axes={"split": SPLITS}),
            Grid("deconv", base={**DECONV, "epochs": 3, "eval_every": 1, "filter_size": 2,
                                 "channel_mult": 1, "batch_size": 32, "lr": 0.002, "l2": 0.001},
                 axes={"split": SPLITS}),
        ],
        "a few minutes on a 2-core CPU",
    )  # fmt: skip


def evidence():
    grid = Grid("coordconv", base={**COORDCONV, "l2": 0.001, "eval_every": 2},
                axes={"lr": [0.01, 0.005, 0.001], "split": SPLITS, "seed": [0, 1]})  # fmt: skip
    return union("classification", [grid], "CoordConv, paper recipe, 3 lrs x 2 seeds")


def evidence_deconv():
    grid = Grid("deconv", base={**DECONV, "filter_size": 2, "channel_mult": 1, "batch_size": 32,
                                "lr": 0.002, "l2": 0.001, "epochs": 3, "eval_every": 1},
                axes={"split": SPLITS})  # fmt: skip
    return union("classification", [grid], "a small deconv painter, briefly trained")


PRESETS = {
    "paper": paper,
    "reference": reference,
    "coordconv": coordconv,
    "smoke": smoke,
    "evidence": evidence,
    "evidence-deconv": evidence_deconv,
}

if __name__ == "__main__":
    import sys

    from coordjax.cli import main

    sys.exit(main(["sweep", "classification", *sys.argv[1:]]))

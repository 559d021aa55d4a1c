"""Supervised Coordinate Classification: (x, y) -> one-hot 64x64 map (paper §4.1, S2, Fig S2).

    coordjax sweep classification --preset smoke --workdir runs/classification-smoke
    coordjax sweep classification --preset paper --workdir runs/classification   # Fig S2

Presets:
  paper      Fig S2: deconv fs {2,3,4} × c {1,2,3} × lr {1e-3 … 5e-2} × l2 {1e-3, 1e-2} × batch
             {16, 32}, 1000 epochs, lr × 0.1 every 200 epochs (4 times), both splits (432 models)
             ∪ CoordConv (7,553 params) lr {1e-2, 5e-3, 1e-3} × l2 {0, 1e-3}, batch 16, 50
             epochs, constant lr, both splits (12 models).
  paper-halving  the paper grid with successive halving (``PAPER_RULE``): each deconv run is
             ranked by train accuracy at epochs 100, 200 and 400 within its split (216 runs),
             a third kept each time (216 -> 72 -> 24 -> 8 per split train to epoch 1000);
             CoordConv (50 epochs) is never pruned. The dry run prints the model-steps and time
             with and without the rule; ``--preset paper --prune-at 100,200,400`` is the same.
  reference  the reference code's grid (experiment_logs.sh): as paper, deconv l2 {0, 1e-3, 1e-2}
             (648 models).
  evidence   CoordConv at the paper's three learning rates, l2 1e-3, batch 16, both splits,
             seeds {0, 1}, 50 epochs, evaluated every 2 epochs (12 models; 2.6 h measured on a
             2-core CPU). Expected: 10 of 12 runs reach 100 % test accuracy at some evaluation,
             only 2 are there at epoch 50 (docs/science/robustness.md).
  fig-s2-cpu Fig S2 at the paper's lengths for one idle 2-core CPU (the dry run says
             74 min): deconv fs 2 x c {2, 3} x lr {2e-3, 5e-3}, l2 1e-3, batch 32, 200 epochs with
             the paper's step schedule, both splits, halved at epochs 50 and 100 by train
             accuracy within each split (``FIG_S2_CPU_RULE``; 8 runs -> 4 -> 2); CoordConv at the
             paper grid's lrs with unit inputs (l2 1e-3, batch 16, 10 epochs), both splits (the
             faithful raw-input CoordConv at 50 epochs is ``evidence``). Its report:
             docs/reports/classification-fig-s2-cpu.
  fig-s2-sizes  Fig S2's size axis: the deconv painters at all nine sizes (fs {2, 3, 4} x
             c {1, 2, 3}), lr 2e-3, l2 1e-3, batch 32, 100 epochs, evaluated every 10, against
             fig-s2-cpu's CoordConv (unit inputs, lr {1e-2, 5e-3, 1e-3}, 10 epochs); per split
             (``--only uniform`` / ``--only quadrant``, each sized for one session on an idle
             2-core CPU; see the dry run).
  smoke      a small real sweep for a 2-core CPU (75 s idle, measured): CoordConv (lr 5e-3,
             l2 1e-3, batch 16, seed 0, 3 epochs) with its inputs in the coordinate channels'
             range (``input_scale="unit"``), and a small deconv (fs 2, c 1, lr 2e-3, batch 32,
             3 epochs), both splits. Expected (matmul lowering, CPU): CoordConv 100 % train and
             test on both splits from epoch 2; deconv 0.9 % uniform test, 0 % quadrant. Why not
             the faithful raw-input recipe: it is seed- and float-sensitive
             (docs/science/robustness.md).
  robustness  how robust the CoordConv claim is: seeds 0-4 x lr {1e-2, 5e-3, 1e-3} x both
             splits x three variants (grids): ``coordconv-faithful`` (the paper's recipe: raw
             inputs, constant lr, 12 epochs), ``coordconv-unit`` (``input_scale="unit"``,
             6 epochs) and ``coordconv-decay`` (the faithful recipe with a cosine lr decay over
             its 12 epochs); l2 1e-3, batch 16, evaluated every epoch. 90 models, ~133k
             model-steps: about two hours on an idle 2-core CPU. Read it with
             ``python -m coordjax.paper.robustness WORKDIR``. Expected: with unit inputs 15/15
             uniform and 5/15 quadrant runs at 100 % test accuracy at the end; the full table
             and its reading are in docs/science/robustness.md.
  robustness-full  the same for a GPU: seeds 0-9, the paper's 50 epochs for the faithful and
             decay variants, 20 for unit (180 models).
  robustness-quick  a reduced run for a shared 2-core CPU: seeds 0-2 x lr {1e-2, 5e-3} x both
             splits; unit 2 epochs, faithful and decay 4 epochs (36 models). Expected (the unit
             grid, ``--only unit``, 35 min on a shared CPU): 5 of 12 runs at 100 % test
             accuracy by epoch 2, seed 0 at every lr and split (docs/science/robustness.md).
  quadrant-robustness  which recipe option makes the quadrant CoordConv classifier robust
             across seeds: seeds 0-14 x five recipes (``QUADRANT_RECIPES``: the unit-input
             recipe at lr 5e-3, a cosine decay, lr 1e-3, no L2, batch 64), 6 epochs, evaluated
             every epoch (75 models). Reports: docs/reports/classification-quadrant-<recipe>;
             reading: docs/science/robustness.md.
  quadrant-init-vs-order  whether a quadrant run's outcome follows its initial weights or its
             example order (``order_seed``): the unit-input recipe (lr 5e-3, 6 epochs) with the
             weights of seeds 0-14 in one order (``init``), and the weights of seed 0 (which
             reached 100 %) or seed 1 (which did not) in 15 orders (``order-init0``,
             ``order-init1``); 43 models (two runs are in two grids). Its report:
             docs/reports/classification-quadrant-init-vs-order.
  painter-interventions  why the uniform deconv painter stays at 37 % test accuracy at 200
             epochs (the Keras tutorial reached 85.8 %): fs 2, c 3, lr 2e-3, batch 32, uniform,
             200 epochs, BatchNorm on (``deconv_painter``; l2 {0, 2e-3}: 1e-3 is fig-s2-cpu's
             run) / off (``deconv_painter_nobn``; l2 {0, 1e-3, 2e-3}), seed 0, and the two best
             no-BatchNorm settings at seed 1 (``painter-nobn-seed1``; 7 models). Its report:
             docs/reports/classification-painter-interventions.
Retired presets and what replaces each: ``RETIRED`` below (the CLI names the replacement).
Expected (paper): deconv test accuracy ≤ ~86 % on uniform and ~0 on quadrant; CoordConv 100 %
train and test on both splits.
"""

from coordjax.sweep import Grid, Prune, union

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


def deconv_grid(l2s: list[float], *, base: dict = DECONV, losses: list[str] = ()) -> Grid:
    """Fig S2's deconv grid at the given l2 values (rendering's too: its ``base`` and a loss
    axis, expanded slowest)."""
    return Grid(
        "deconv",
        base=base,
        axes={
            **({"loss": list(losses)} if losses else {}),
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


# Rungs at evaluation epochs before and after the first lr decay (epoch 200); train accuracy,
# never test, ranks the runs; deconv and CoordConv, and the two splits, are ranked separately.
PAPER_RULE = Prune(at=(100, 200, 400), keep=1 / 3)


def paper_halving():
    return union(
        "classification",
        [deconv_grid([0.001, 0.01]), coordconv_grid()],
        "Fig S2 grid with successive halving (rungs 100/200/400, keep 1/3)",
        prune=PAPER_RULE,
    )


def reference():
    return union(
        "classification",
        [deconv_grid([0.0, 0.001, 0.01]), coordconv_grid()],
        "the reference code's grid (experiment_logs.sh)",
    )


# CoordConv as the smoke preset trains it: inputs in the coordinate channels' range
# (input_scale "unit"), seed 0, 3 epochs. The faithful raw-input recipe is too seed- and
# float-sensitive for a demonstration (see the preset docstring and the `evidence` preset).
SMOKE_COORDCONV = {**COORDCONV, "lr": 0.005, "l2": 0.001, "epochs": 3, "eval_every": 1,
                   "seed": 0, "input_scale": "unit"}  # fmt: skip


def smoke():
    return union(
        "classification",
        [
            Grid("coordconv", base=SMOKE_COORDCONV, axes={"split": SPLITS}),
            Grid("deconv", base={**DECONV, "epochs": 3, "eval_every": 1, "filter_size": 2,
                                 "channel_mult": 1, "batch_size": 32, "lr": 0.002, "l2": 0.001},
                 axes={"split": SPLITS}),
        ],
        "CoordConv vs a small deconv, both splits; minutes on a 2-core CPU",
    )  # fmt: skip


# Fig S2 at the paper's lengths for one idle 2-core CPU: the deconv sizes and lrs the
# reproductions found best (fs 2, c 3, lr 2e-3, batch 32: 85.8 % test at 200 epochs), halved at
# epochs 50 and 100 by train accuracy within each split; CoordConv with unit inputs, unpruned (its
# faithful raw-input recipe at 50 epochs is the `evidence` preset's, measured: 2.6 h).
FIG_S2_CPU_DECONV = {**DECONV, "filter_size": 2, "batch_size": 32, "l2": 0.001, "epochs": 200,
                     "eval_every": 10}  # fmt: skip
FIG_S2_CPU_RULE = Prune(at=(50, 100), keep=1 / 2)


FIG_S2_CPU_COORDCONV = {**COORDCONV, "l2": 0.001, "input_scale": "unit", "epochs": 10,
                        "eval_every": 1}  # fmt: skip


def fig_s2_cpu():
    deconv = Grid("deconv", base=FIG_S2_CPU_DECONV,
                  axes={"channel_mult": [2, 3], "lr": [0.002, 0.005], "split": SPLITS},
                  prune=FIG_S2_CPU_RULE)  # fmt: skip
    coordconv_unit = Grid("coordconv-unit", base=FIG_S2_CPU_COORDCONV,
                          axes={"lr": [0.01, 0.005, 0.001], "split": SPLITS})  # fmt: skip
    about = "Fig S2 at the paper's lengths for one CPU: deconv 200 epochs, halved"
    return union("classification", [deconv, coordconv_unit], about)


def evidence():
    grid = Grid("coordconv", base={**COORDCONV, "l2": 0.001, "eval_every": 2},
                axes={"lr": [0.01, 0.005, 0.001], "split": SPLITS, "seed": [0, 1]})  # fmt: skip
    return union("classification", [grid], "CoordConv, paper recipe, 3 lrs x 2 seeds")


ROBUSTNESS_VARIANTS = {
    "unit": {"input_scale": "unit", "schedule": "constant"},
    "faithful": {"input_scale": "raw", "schedule": "constant"},
    "decay": {"input_scale": "raw", "schedule": "cosine"},
}
"""The recipe variants of the robustness presets (grid ``coordconv-<variant>``)."""


def robustness_grids(seeds, lrs, epochs: dict[str, int]) -> list[Grid]:
    """One grid per variant: ``epochs[variant]`` epochs, evaluated after every epoch."""
    return [
        Grid(f"coordconv-{name}",
             base={**COORDCONV, **variant, "l2": 0.001, "epochs": epochs[name], "eval_every": 1},
             axes={"lr": list(lrs), "split": SPLITS, "seed": list(seeds)})
        for name, variant in ROBUSTNESS_VARIANTS.items()
    ]  # fmt: skip


def robustness():
    grids = robustness_grids(range(5), [0.01, 0.005, 0.001],
                             {"unit": 6, "faithful": 12, "decay": 12})  # fmt: skip
    return union("classification", grids, "CoordConv robustness: seeds x lrs x recipe variants")


def robustness_full():
    grids = robustness_grids(range(10), [0.01, 0.005, 0.001],
                             {"unit": 20, "faithful": 50, "decay": 50})  # fmt: skip
    return union("classification", grids, "CoordConv robustness at the paper's 50 epochs")


QUADRANT_RECIPES = {
    "q-unit": {},
    "q-cosine": {"schedule": "cosine"},
    "q-lr1e-3": {"lr": 0.001},
    "q-nol2": {"l2": 0.0},
    "q-batch64": {"batch_size": 64},
}
"""The recipe options tried on the quadrant split (one grid each): each changes one thing of the
unit-input recipe (lr 5e-3, l2 1e-3, batch 16, constant lr)."""


QUADRANT_UNIT = {**COORDCONV, "input_scale": "unit", "lr": 0.005, "l2": 0.001, "epochs": 6,
                 "eval_every": 1, "split": "quadrant"}  # fmt: skip


def quadrant_robustness():
    grids = [Grid(name, base={**QUADRANT_UNIT, **change}, axes={"seed": list(range(15))})
             for name, change in QUADRANT_RECIPES.items()]  # fmt: skip
    return union("classification", grids, "the quadrant CoordConv classifier: 15 seeds x recipes")


def quadrant_init_vs_order():
    # Seed 0 reached 100 % test accuracy under the unit recipe (q-unit), seed 1 did not.
    seeds = list(range(15))
    grids = [
        Grid("init", base={**QUADRANT_UNIT, "order_seed": 0}, axes={"seed": seeds}),
        Grid("order-init0", base={**QUADRANT_UNIT, "seed": 0}, axes={"order_seed": seeds}),
        Grid("order-init1", base={**QUADRANT_UNIT, "seed": 1}, axes={"order_seed": seeds}),
    ]
    about = "the quadrant CoordConv classifier: initial weights vs example order"
    return union("classification", grids, about)


# The deconv painter's gap on uniform (37 % test at 200 epochs here, ~86 % in the Keras tutorial):
# the tutorial's painter has no BatchNorm and its classification scripts no effective weight
# decay (experiments_spec.md §9); its 'valid' padding equals 'SAME' at fs 2, stride 2 (no
# padding either way), so the two differences left are tested here, at one seed first.
PAINTER_INTERVENTION = {**FIG_S2_CPU_DECONV, "channel_mult": 3, "lr": 0.002, "split": "uniform"}


def painter_interventions():
    # With BatchNorm at l2 1e-3 is fig-s2-cpu's run (37.2 % at epoch 200), not repeated here.
    grids = [Grid(name, base={**PAINTER_INTERVENTION, "model": model}, axes={"l2": l2s})
             for name, model, l2s in (("painter-bn", "deconv_painter", [0.0, 0.002]),
                                      ("painter-nobn", "deconv_painter_nobn",
                                       [0.0, 0.001, 0.002]))]  # fmt: skip
    # The two best no-BatchNorm settings of the first pass (seed 0), at a second seed.
    grids.append(Grid("painter-nobn-seed1",
                      base={**PAINTER_INTERVENTION, "model": "deconv_painter_nobn", "seed": 1},
                      axes={"l2": [0.001, 0.002]}))  # fmt: skip
    return union("classification", grids, "the uniform deconv painter: BatchNorm on/off x l2")


# Fig S2's size axis: every deconv size of the paper's grid at fig-s2-cpu's recipe (lr 2e-3, the
# best lr it found; l2 1e-3, batch 32), 100 epochs, against fig-s2-cpu's CoordConv; each split's
# grids are named so that ``--only uniform`` / ``--only quadrant`` select them (a session each).
def fig_s2_sizes():
    deconv = {**FIG_S2_CPU_DECONV, "lr": 0.002, "epochs": 100}
    grids = [grid for split in SPLITS for grid in (
        Grid(f"sizes-{split}", base={**deconv, "split": split},
             axes={"filter_size": [2, 3, 4], "channel_mult": [1, 2, 3]}),
        Grid(f"sizes-{split}-coordconv", base={**FIG_S2_CPU_COORDCONV, "split": split},
             axes={"lr": [0.01, 0.005, 0.001]}),
    )]  # fmt: skip
    about = "Fig S2's nine deconv sizes (100 epochs) against CoordConv, both splits"
    return union("classification", grids, about)


def robustness_quick():
    grids = robustness_grids(range(3), [0.01, 0.005], {"unit": 2, "faithful": 4, "decay": 4})
    return union("classification", grids, "CoordConv robustness, reduced for a shared CPU")


PRESETS = {
    "paper": paper,
    "paper-halving": paper_halving,
    "reference": reference,
    "smoke": smoke,
    "fig-s2-cpu": fig_s2_cpu,
    "evidence": evidence,
    "robustness": robustness,
    "robustness-full": robustness_full,
    "robustness-quick": robustness_quick,
    "quadrant-robustness": quadrant_robustness,
    "quadrant-init-vs-order": quadrant_init_vs_order,
    "painter-interventions": painter_interventions,
    "fig-s2-sizes": fig_s2_sizes,
}

# What each preset is for (``coordjax list`` prints the presets under these headings).
PURPOSES = {
    "see it work in minutes": ["smoke"],
    "the paper's grids (days on a CPU: a GPU or successive halving)": [
        "paper", "paper-halving", "reference"],
    "the paper's lengths on one CPU (hours)": ["fig-s2-cpu", "fig-s2-sizes"],
    "evidence for one claim": ["evidence", "painter-interventions"],
    "robustness across seeds and recipe variants": [
        "robustness", "robustness-quick", "robustness-full", "quadrant-robustness",
        "quadrant-init-vs-order"],
}  # fmt: skip

# Presets the committed reproductions superseded -> what to run instead (the CLI says so).
RETIRED = {
    "fig-s2": "fig-s2-cpu (the paper's lengths; docs/reports/classification-fig-s2-cpu) or smoke",
    "evidence-deconv": "fig-s2-cpu --only deconv",
    "coordconv": "paper --only coordconv",
}

if __name__ == "__main__":
    import sys

    from coordjax.cli import main

    sys.exit(main(["sweep", "classification", *sys.argv[1:]]))

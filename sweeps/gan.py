"""The paper's S7.1 GAN: a CoordConv GAN against a conv GAN on two-object Sort-of-Clevr
(:mod:`coordjax.gan`), three families as grids:

  conv          the conv (DCGAN) generator and discriminator;
  coordconv_g   the CoordConv generator, the conv discriminator;
  coordconv_gd  the CoordConv generator and a CoordConv first layer in the discriminator.

    coordjax sweep gan --preset smoke --workdir runs/gan-smoke     # seconds: the test preset
    coordjax sweep gan --preset cpu --dry-run
    coordjax sweep gan --preset cpu --workdir runs/gan-cpu
    coordjax sweep gan --preset paper --dry-run                    # the GPU cost

Presets:
  smoke  16 x 16, width 1/16, z_dim 16, 64 images, 2 epochs, one seed per family (3 models).
  cpu    16 x 16, width 1/8, 2,000 images, batch 16, 12 epochs (1,500 iterations), 3 seeds per
         family (9 models): the paper's recipe and architecture families at a size a loaded
         2-core CPU trains in under an hour.
  paper  Table S4's networks at 64 x 64, 50,000 images, batch 16, 50 epochs, the paper's
         learning rates, 5 seeds per family (15 models; the paper trained 5 to 10 each).

docs/reports/gan-cpu/report.md has what the cpu preset gave.
"""

from coordjax.gan.experiment import EXPERIMENT
from coordjax.sweep import Grid, union

FAMILIES = {
    "conv": {"generator": "conv", "d_coords": False},
    "coordconv_g": {"generator": "coordconv", "d_coords": False},
    "coordconv_gd": {"generator": "coordconv", "d_coords": True},
}


def _grids(base: dict, seeds: list[int]) -> list[Grid]:
    return [Grid(name, base={**base, **family}, axes={"seed": seeds})
            for name, family in FAMILIES.items()]  # fmt: skip


def smoke():
    base = {"canvas": 16, "width": 1 / 16, "z_dim": 16, "images": 64, "batch_size": 8,
            "eval_samples": 50, "epochs": 2, "eval_every": 1}  # fmt: skip
    return union("gan", _grids(base, [0]), "three tiny GANs, two epochs; seconds",
                 experiment=EXPERIMENT)  # fmt: skip


def cpu():
    base = {"canvas": 16, "width": 1 / 8, "images": 2000, "batch_size": 16,
            "eval_samples": 1000, "epochs": 12, "eval_every": 4}  # fmt: skip
    return union("gan", _grids(base, [0, 1, 2]),
                 "conv vs CoordConv GANs at 16 x 16, width 1/8, 3 seeds each",
                 experiment=EXPERIMENT)  # fmt: skip


def paper():
    base = {"canvas": 64, "width": 1.0, "images": 50_000, "batch_size": 16,
            "eval_samples": 1000, "epochs": 50, "eval_every": 5}  # fmt: skip
    return union("gan", _grids(base, [0, 1, 2, 3, 4]),
                 "Table S4's GANs at 64 x 64, 50 epochs, 5 seeds per family",
                 experiment=EXPERIMENT)  # fmt: skip


PRESETS = {"smoke": smoke, "cpu": cpu, "paper": paper}
PURPOSES = {"see it work in seconds": ["smoke"], "a CPU-sized comparison": ["cpu"],
            "the paper's sizes (GPU)": ["paper"]}  # fmt: skip

if __name__ == "__main__":
    import sys

    from coordjax.cli import main

    sys.exit(main(["sweep", "gan", *sys.argv[1:]]))

"""This report's figure: test IoU per evaluation of the raw-input CoordConv renderer under MSE.

    python docs/reports/rendering-loss/figure.py runs/renderer-loss docs/reports/rendering-loss

Solid: ``output_iou`` (painted where the raw output is > 0.5, what the MSE regresses onto);
dotted: the faithful ``iou`` (painted where the output is > 0), which under this loss paints
background pixels by the sign of their residual noise.
"""

import pathlib
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402


def main(workdir: str, out: str) -> None:
    results = pd.read_csv(f"{workdir}/results.csv")
    fig, axes = plt.subplots(1, 2, figsize=(8.4, 3.2), sharey=True)
    for ax, split in zip(axes, ["uniform", "quadrant"], strict=True):
        for seed, run in results[results["split"] == split].groupby("seed"):
            line = ax.plot(run["epoch"], run["test_output_iou"], "-o", ms=3,
                           label=f"seed {seed}: output > 0.5")  # fmt: skip
            ax.plot(run["epoch"], run["test_iou"], ":", color=line[0].get_color(),
                    label=f"seed {seed}: output > 0 (faithful iou)")  # fmt: skip
        ax.set_title(f"{split} split, raw inputs, MSE loss")
        ax.set_xlabel("epoch")
        ax.set_ylim(-0.03, 1.03)
    axes[0].set_ylabel("test IoU")
    axes[1].legend(loc="lower right", fontsize=7)
    fig.tight_layout()
    fig.savefig(pathlib.Path(out) / "output_iou.png", dpi=120)


if __name__ == "__main__":
    main(*sys.argv[1:3])

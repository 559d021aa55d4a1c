"""Fig 7 from a GAN sweep's workdir: samples, object centres, relative positions and mean
images of the real data and of each family's best run, and the numbers across seeds.

    python -m coordjax.gan.figure WORKDIR OUT      # writes OUT/fig7.png and OUT/numbers.md

The best run of a family is the one with the smallest ``test_centre_sw`` at its last
evaluation (the experiment's score); its 1000 samples are drawn from the run's fixed ``test``
noise, the ones its recorded ``test_*`` metrics were measured on.
"""

from __future__ import annotations

import functools
import pathlib
import sys

import jax
import numpy as np
import pandas as pd

from coordjax.gan import data as shapes_data
from coordjax.gan import experiment as gx
from coordjax.gan import metrics, models

COLUMNS = ("coverage", "centre_sw", "relative_sw", "well_formed", "mean_image_rmse")


def last_rows(results: pd.DataFrame) -> pd.DataFrame:
    """Each run's last evaluation."""
    return results.sort_values("epoch").groupby("run_id").tail(1).sort_values(["grid", "seed"])


def static_of(row) -> dict:
    """A results row's static keys, typed as the experiment declares them."""
    return {k: type(key.default)(row[k]) for k, key in gx.KEYS.items() if key.role == "static"}


def run_samples(workdir, row) -> tuple[np.ndarray, gx.GanData]:
    """The run's samples (1000, H, W, 3) in [-1, 1] on its test noise, and its bucket's data."""
    from coordjax.sweep import load_run

    static = static_of(row)
    setup = gx.make_setup(static, 1)
    state = gx.GanState(**load_run(workdir, row["run_id"], experiment=gx.EXPERIMENT))

    @functools.partial(jax.jit)
    def draw(state, seed):
        raw = gx.generate(setup, state, gx.eval_noise(setup, seed, 1))
        return models.samples(setup.generator_kind, setup.g_tanh, raw)

    return np.asarray(draw(state, np.int32(row["seed"]))), gx.make_data(*setup.data_spec)


def numbers_table(final: pd.DataFrame) -> str:
    """Markdown: every run's last test metrics, then each family's mean and spread."""
    head = "| family | seed | params (G + D) | " + " | ".join(COLUMNS) + " |"
    lines = [head, "|" + "---|" * (3 + len(COLUMNS))]
    for _, row in final.iterrows():
        values = " | ".join(f"{row[f'test_{c}']:.3f}" for c in COLUMNS)
        lines.append(f"| {row['grid']} | {row['seed']} | {row['param_count']:,} | {values} |")
    lines += ["", "| family | runs | " + " | ".join(f"{c} (mean ± sd)" for c in COLUMNS) + " |",
              "|" + "---|" * (2 + len(COLUMNS))]  # fmt: skip
    for family, rows in final.groupby("grid"):
        cells = [f"{rows[f'test_{c}'].mean():.3f} ± {rows[f'test_{c}'].std(ddof=0):.3f}"
                 for c in COLUMNS]  # fmt: skip
        lines.append(f"| {family} | {len(rows)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _as_image(x: np.ndarray) -> np.ndarray:
    return np.clip((x + 1) / 2, 0, 1)


def fig7(workdir, out) -> pathlib.Path:
    """Writes ``out/fig7.png`` and ``out/numbers.md``; returns the figure's path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    workdir, out = pathlib.Path(workdir), pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    final = last_rows(pd.read_csv(workdir / "results.csv"))
    (out / "numbers.md").write_text(numbers_table(final))
    ranked = final.assign(rank=final["test_centre_sw"].fillna(np.inf))  # NaN: diverged
    best = ranked.sort_values(["rank", "seed"]).groupby("grid").head(1).sort_values("grid")
    rows = []
    for _, row in best.iterrows():
        images, arrays = run_samples(workdir, row)
        rows.append((f"{row['grid']} (seed {row['seed']})", images))
    real = shapes_data.to_model_range(arrays.held_out)
    rows.insert(0, ("real (held out)", real))
    canvas = real.shape[1]
    fig, axes = plt.subplots(len(rows), 5, figsize=(15, 3 * len(rows)))
    titles = ("16 samples", "blue centres", "red centres", "red - blue", "mean image")
    for (name, images), ax in zip(rows, axes, strict=True):
        found = jax.device_get(metrics.find_objects(images))
        tiles = _as_image(images[:16]).reshape(4, 4, canvas, canvas, 3)
        ax[0].imshow(tiles.transpose(0, 2, 1, 3, 4).reshape(4 * canvas, 4 * canvas, 3))
        for c, colour in ((0, "tab:blue"), (1, "tab:red")):
            centres = found.centres[found.present[:, c], c]
            ax[1 + c].scatter(centres[:, 1], centres[:, 0], s=2, c=colour, alpha=0.4)
            ax[1 + c].set_xlim(0, canvas)
            ax[1 + c].set_ylim(canvas, 0)
        both = found.present.all(axis=1)
        rel = found.centres[both, 1] - found.centres[both, 0]
        ax[3].scatter(rel[:, 1], rel[:, 0], s=2, c="k", alpha=0.4)
        ax[3].set_xlim(-canvas, canvas)
        ax[3].set_ylim(canvas, -canvas)
        ax[4].imshow(_as_image(images.mean(axis=0)))
        ax[0].set_ylabel(name)
        for a in ax:
            a.set_aspect("equal")
            a.set_xticks([])
            a.set_yticks([])
    for a, title in zip(axes[0], titles, strict=True):
        a.set_title(title)
    fig.tight_layout()
    path = out / "fig7.png"
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


if __name__ == "__main__":
    fig7(sys.argv[1], sys.argv[2])

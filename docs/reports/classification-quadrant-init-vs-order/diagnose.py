"""Where the failing initialisations miss, from a quadrant-init-vs-order workdir.

    python docs/reports/classification-quadrant-init-vs-order/diagnose.py \
        runs/quadrant-init-vs-order

For the ``init`` grid's runs (initial weights from seeds 0-14, every run in seed 0's example
order), from each run's last checkpoint, on all 729 held-out centres: the test accuracy by how
deep the centre lies in the held-out quadrant (``min(x, y) - 32``: its distance in pixels from
the nearest train centre's row or column, 1-27), the mean signed error of the wrong predictions along x and y, the largest error
along either axis, and the ReLU units of each layer that are dead (never positive) on every
train example, at initialisation and at the end.
"""

import sys

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from coordjax import datasets, models
from coordjax.sweep import load_run

DEPTH_BINS = (1, 4, 8, 12, 16, 20, 28)
LAYERS = ("coord_1x1", "conv1x1_1", "conv1x1_2", "conv1x1_3")


def predictions(model, params, inputs: np.ndarray) -> np.ndarray:
    """``(N,)`` argmax pixel of the logits, in chunks (the activations take 1 MB per centre)."""
    argmax = jax.jit(lambda v: model.apply({"params": params}, v, train=False)
                     .reshape(len(v), -1).argmax(-1))  # fmt: skip
    return np.concatenate(
        [np.asarray(argmax(jnp.asarray(inputs[i : i + 256]))) for i in range(0, len(inputs), 256)]
    )


def dead_units(model, params, inputs: np.ndarray) -> str:
    """Units per layer whose pre-activation is <= 0 at every pixel of every input."""
    _, state = model.apply({"params": params}, jnp.asarray(inputs), train=False,
                           capture_intermediates=True)  # fmt: skip
    counts = []
    for layer in LAYERS:
        pre = np.asarray(state["intermediates"][layer]["__call__"][0])
        counts.append(f"{int((pre <= 0).all(axis=(0, 1, 2)).sum())}/{pre.shape[-1]}")
    return " ".join(counts)


def main(workdir: str) -> None:
    results = pd.read_csv(f"{workdir}/results.csv")
    last = results[(results.grid == "init") & (results.epoch == results.epoch.max())]
    examples = datasets.all_examples()
    train, test = datasets.split_indices("quadrant")
    unit = 2 * examples.centers.astype(np.float32) / 63 - 1
    x, y = examples.centers[test, 0], examples.centers[test, 1]
    depth = np.minimum(x, y) - 32
    model = models.build("coordconv_classifier")
    rows = []
    for _, run in last.sort_values("seed").iterrows():
        seed = int(run["seed"])
        init_key = jax.random.split(jax.random.key(seed))[0]  # the engine's init key
        initial = model.init(init_key, jnp.asarray(unit[:1]), train=False)["params"]
        params = load_run(workdir, run["run_id"])["params"]
        pred = predictions(model, params, unit[test])
        dx, dy = pred % 64 - x, pred // 64 - y
        right = (dx == 0) & (dy == 0)
        row = {"seed": seed, "test acc": right.mean()}
        for lo, hi in zip(DEPTH_BINS[:-1], DEPTH_BINS[1:], strict=True):
            row[f"depth {lo}-{hi - 1}"] = right[(depth >= lo) & (depth < hi)].mean()
        row["mean dx"] = dx[~right].mean() if (~right).any() else 0.0
        row["mean dy"] = dy[~right].mean() if (~right).any() else 0.0
        row["max |err|"] = int(max(np.abs(dx).max(), np.abs(dy).max()))
        sample = unit[train[::12]]  # 196 of the 2,352 train centres
        row["dead at init"] = dead_units(model, initial, sample)
        row["dead at end"] = dead_units(model, params, sample)
        rows.append(row)
    print(pd.DataFrame(rows).round(2).to_string(index=False))  # noqa: T201 (a script)


if __name__ == "__main__":
    main(sys.argv[1])

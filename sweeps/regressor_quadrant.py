"""Why the CoordConv regressor stalls on the quadrant split: short runs plus a diagnosis.

    nice -n 10 python sweeps/regressor_quadrant.py --epochs 15 --seeds 0 1 --lrs 0.01 0.001 \
        --batch-sizes 256 32

For each (seed, lr, batch size) it trains the CoordConv regressor (906 parameters, paper recipe:
l2 1e-5, constant lr, Adam) on the quadrant split with :func:`coordjax.train.fit`, and prints the
train/test pixel error per evaluation and, at the end, where the network's global max pool picks
each output from: the fraction of examples whose max (per output channel) sits on the one-hot
pixel (or within its 5x5 receptive field), the mean distance from the one-hot pixel to the
argmax, and how many positions tie at the max (a tie splits the max's gradient in JAX and TF's
``reduce_max``).

Runtime: ~7-14 min per (seed, lr, batch size) on a shared 2-core CPU at 10 epochs. Expected
(quadrant, seed 0, lr 1e-2, batch 256, epoch 10): train / test error 19.9 / 28.5 px, the x
output's max at (row 2, col 61) for 91 % of train examples: a dead max on the border no one-hot
reaches. ``--pool-margin 2`` excludes that border: 7.6 / 18.1 px. Every measurement and its
reading: docs/science/regressor-dead-max.md.
"""

from __future__ import annotations

import argparse
import sys

import jax
import jax.numpy as jnp
import numpy as np

from coordjax import datasets, models, tasks
from coordjax.train import fit, make_hparams


def where_the_max_is(model, params, images: np.ndarray, centers: np.ndarray) -> dict[str, float]:
    """Statistics of the global max pool's argmax, per output channel, over ``images``.

    Args:
      model: the CoordConv regressor (its ``pool_margin`` is honoured); params: its parameters.
      images: ``(N, 64, 64, 1)`` one-hot inputs; centers: ``(N, 2)`` ``[x, y]``.
    """

    def pre_pool(x):
        # The regressor's output is the max over (H, W) of its last conv ("conv_4"): capture it.
        _, state = model.apply(
            {"params": params},
            x,
            train=False,
            capture_intermediates=True,
            mutable=["intermediates"],
        )
        return state["intermediates"]["conv_4"]["__call__"][0]

    maps = np.asarray(jax.jit(pre_pool)(jnp.asarray(images)))  # (N, H, W, 2)
    full_h, full_w, m = maps.shape[1], maps.shape[2], model.pool_margin
    maps = maps[:, m : full_h - m, m : full_w - m]  # what the max pool sees
    n, h, w, k = maps.shape
    flat = maps.reshape(n, h * w, k)
    arg = flat.argmax(axis=1)  # (N, 2)
    rows, cols = arg // w + m, arg % w + m
    d = np.hypot(rows - centers[:, 1:2], cols - centers[:, 0:1])  # (N, 2)
    ties = (flat == flat.max(axis=1, keepdims=True)).sum(axis=1)
    return {
        "on_onehot": float(np.mean(d == 0)),
        "within_2px_per_output": np.round(np.mean(np.maximum(
            np.abs(rows - centers[:, 1:2]), np.abs(cols - centers[:, 0:1])) <= 2, axis=0), 3
        ).tolist(),
        "abs_error_px_per_output": np.round(np.mean(np.abs(
            64 * maps.reshape(n, h * w, k).max(axis=1) - centers), axis=0), 2).tolist(),
        "mean_dist_px": float(d.mean()),
        "on_border": float(np.mean((rows == 0) | (cols == 0) | (rows == full_h - 1)
                                   | (cols == full_w - 1))),
        "pred_px_if_off": _off_peak(maps, rows, cols, d),
        "tied_positions_max": int(ties.max()),
    }  # fmt: skip


def _off_peak(maps, rows, cols, d) -> str:
    """Where the off-one-hot maxima sit: the most common (row, col) per output channel."""
    out = []
    for k in range(maps.shape[-1]):
        off = d[:, k] > 2
        if not off.any():
            out.append("-")
            continue
        pairs, counts = np.unique(np.stack([rows[off, k], cols[off, k]], 1), axis=0,
                                  return_counts=True)  # fmt: skip
        top = pairs[counts.argmax()]
        out.append(f"ch{k}: {off.mean():.0%} off, most at (r{top[0]}, c{top[1]}) x{counts.max()}")
    return "; ".join(out)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--split", default="quadrant")
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--eval-every", type=int, default=5)
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--lrs", type=float, nargs="+", default=[0.01])
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[256])
    p.add_argument("--l2", type=float, default=1e-5)
    p.add_argument(
        "--pool-margin",
        type=int,
        default=0,
        help="the max pool skips this many border pixels (the intervention; 0: none)",
    )
    args = p.parse_args(argv)
    data = datasets.not_so_clevr(args.split)
    task = tasks.get("regression")
    model = models.CoordConvRegressor(pool_margin=args.pool_margin)
    for seed in args.seeds:
        for lr in args.lrs:
            for batch in args.batch_sizes:
                result = fit(
                    model,
                    task,
                    data,
                    make_hparams(lr, args.l2),
                    seed=seed,
                    epochs=args.epochs,
                    batch_size=batch,
                    eval_every=args.eval_every,
                )
                errs = " ".join(
                    f"e{r['epoch']}:{r['train_pixel_error']:.2f}/{r['test_pixel_error']:.2f}"
                    for r in result.history
                )
                print(f"seed {seed} lr {lr} batch {batch}  train/test px  {errs}", flush=True)
                for side in ("train", "test"):
                    part = getattr(data, side)
                    stats = where_the_max_is(model, result.state.params, np.asarray(part.onehots),
                                             np.asarray(part.centers))  # fmt: skip
                    print(f"    {side}: {stats}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Where is the digit? A user's own model and data through the sweep engine (the worked example).

scikit-learn's bundled handwritten digits (1,797 images of 8x8, shipped inside its wheel: no
download) are pasted onto a 32x32 canvas at a random position each. A small conv net predicts
where the digit's top-left corner is; its ``coordconv`` switch turns every convolution into
``coordjax.linen.CoordConv``. As in the paper's quadrant split, one region of positions is never
seen in training: ``quadrant`` holds out every digit whose corner is in the bottom-right
quadrant of positions; ``uniform`` holds out a random 20 %.

    pip install -e ".[examples]"
    coordjax sweep digits --preset smoke --workdir runs/digits      # minutes on a CPU
    coordjax sweep digits --preset sweep --workdir runs/digits-sweep

Presets:
  smoke  conv vs CoordConv (grids ``conv`` and ``coordconv``), width 8, pooling head, lr 3e-3,
         both variants, 20 epochs (4 models).
  sweep  conv vs CoordConv (grids) x lr {1e-3, 3e-3, 1e-2} x weight decay {0, 1e-4} x width
         {8, 16} x both variants, 30 epochs, halved at epochs 10 and 20 by train pixel error
         within each grid and variant (48 models).

docs/guides/own-experiment.md walks through this file.
"""

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

import coordjax as cj
from coordjax.sweep import Grid, Prune, supervised, union

CANVAS = 32
DIGIT = 8
POSITIONS = CANVAS - DIGIT + 1  # corner rows / cols 0..24


def make_data(seed: int = 0) -> dict:
    """``{"uniform" | "quadrant": {"train": (x, y), "test": (x, y)}}``: x (N, 32, 32, 1) in
    [0, 1], y (N, 2) the digit's top-left corner (row, col) scaled to [0, 1]."""
    try:
        from sklearn.datasets import load_digits  # the examples extra
    except ImportError:
        raise ValueError(
            "the digits example needs scikit-learn: pip install -e \".[examples]\""
        ) from None

    digits = load_digits().images.astype(np.float32) / 16.0
    rng = np.random.default_rng(seed)
    corners = rng.integers(0, POSITIONS, size=(len(digits), 2))
    canvas = np.zeros((len(digits), CANVAS, CANVAS, 1), np.float32)
    for image, digit, (row, col) in zip(canvas, digits, corners, strict=True):
        image[row : row + DIGIT, col : col + DIGIT, 0] = digit
    targets = (corners / (POSITIONS - 1)).astype(np.float32)
    held_out = (corners >= POSITIONS // 2).all(axis=1)  # bottom-right quadrant of positions
    random = rng.random(len(digits)) < 0.2

    def split(test):
        return {"train": (canvas[~test], targets[~test]), "test": (canvas[test], targets[test])}

    return {"uniform": split(random), "quadrant": split(held_out)}


class Locator(nn.Module):
    """Three stride-2 3x3 convolutions (``width`` channels), then a head to (row, col):
    ``"pool"``, a global max over positions and a dense layer (the paper's regressors pool);
    ``"dense"``, a dense layer on the flattened feature map (a weight per position)."""

    width: int = 8
    coordconv: bool = False
    head: str = "pool"

    @nn.compact
    def __call__(self, x):
        conv = cj.linen.CoordConv if self.coordconv else nn.Conv
        for _ in range(3):
            x = nn.relu(conv(self.width, (3, 3), strides=(2, 2))(x))
        x = x.max(axis=(1, 2)) if self.head == "pool" else x.reshape(x.shape[0], -1)
        return nn.Dense(2)(x)


def squared_error(outputs, targets):
    return jnp.mean(jnp.square(outputs - targets), axis=-1)


def pixel_error(outputs, targets):
    """Distance between the predicted and true corner, in canvas pixels."""
    return jnp.linalg.norm((outputs - targets) * (POSITIONS - 1), axis=-1)


def within_one_pixel(outputs, targets):
    return (pixel_error(outputs, targets) <= 1.0).astype(jnp.float32)


EXPERIMENT = supervised(
    "digits",
    model=lambda width, coordconv, head: Locator(width=width, coordconv=coordconv, head=head),
    model_keys={"width": 8, "coordconv": False, "head": "pool"},
    data=make_data,
    variants=["uniform", "quadrant"],
    loss=squared_error,
    metrics={"pixel_error": (pixel_error, "min"), "within_1px": (within_one_pixel, "max")},
    score=("test_pixel_error", "min"),
    defaults={"batch_size": 32, "epochs": 12, "eval_every": 2, "lr": 3e-3},
    data_key="data",
)


def smoke():
    grids = [Grid(name, base={"coordconv": name == "coordconv", "epochs": 20, "eval_every": 4},
                  axes={"data": ["uniform", "quadrant"]})
             for name in ("conv", "coordconv")]  # fmt: skip
    return union("digits", grids, "conv vs CoordConv locators, both variants; minutes on a CPU",
                 experiment=EXPERIMENT)  # fmt: skip


SWEEP_RULE = Prune(at=(10, 20), keep=1 / 2)  # within each family (grid) and data variant


def sweep():
    grids = [Grid(name, base={"coordconv": name == "coordconv", "epochs": 30, "eval_every": 5},
                  axes={"width": [8, 16], "lr": [1e-3, 3e-3, 1e-2], "weight_decay": [0.0, 1e-4],
                        "data": ["uniform", "quadrant"]})
             for name in ("conv", "coordconv")]  # fmt: skip
    return union("digits", grids, "lr x weight decay x width, conv vs CoordConv, pruned",
                 prune=SWEEP_RULE, experiment=EXPERIMENT)  # fmt: skip


PRESETS = {"smoke": smoke, "sweep": sweep}
PURPOSES = {"see it work in minutes": ["smoke"], "a sweep with pruning": ["sweep"]}

if __name__ == "__main__":
    import sys

    from coordjax.cli import main

    sys.exit(main(["sweep", "digits", *sys.argv[1:]]))

"""A user's own experiments, written with coordjax's public names only (test_experiment.py checks
that): one model family in three forms (Linen, NNX, a pure ``(init, apply)`` pair), a synthetic
"where is the bright pixel?" data set, a per-example loss and metric.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from coordjax.sweep import Grid, Prune, supervised, union
from coordjax.train import nnx_model

SIZE = 6


def make_data(seed: int = 0) -> dict:
    """One variant: 96 train and 32 test images (6x6x1) with one bright pixel; targets its
    (row, col) / 5."""
    rng = np.random.default_rng(seed)
    positions = rng.integers(0, SIZE, size=(128, 2))
    images = np.zeros((128, SIZE, SIZE, 1), np.float32)
    images[np.arange(128), positions[:, 0], positions[:, 1], 0] = 1.0
    targets = (positions / (SIZE - 1)).astype(np.float32)
    return {"all": {"train": (images[:96], targets[:96]), "test": (images[96:], targets[96:])}}


def squared_error(outputs, targets):
    return jnp.mean(jnp.square(outputs - targets), axis=-1)


def pixel_error(outputs, targets):
    return jnp.linalg.norm((outputs - targets) * (SIZE - 1), axis=-1)


class LinenNet(nn.Module):
    width: int

    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(self.width, (3, 3))(x))
        return nn.Dense(2)(x.reshape(x.shape[0], -1))


class NNXNet(nnx.Module):
    def __init__(self, width: int, *, rngs: nnx.Rngs):
        self.conv = nnx.Conv(1, width, (3, 3), rngs=rngs)
        self.dense = nnx.Linear(SIZE * SIZE * width, 2, rngs=rngs)

    def __call__(self, x):
        x = nnx.relu(self.conv(x))
        return self.dense(x.reshape(x.shape[0], -1))


def pure_pair(width: int):
    """A one-hidden-layer perceptron as pure functions; leaves named ``kernel`` carry L2."""

    def init(key, x):
        k1, k2 = jax.random.split(key)
        n = int(np.prod(x.shape[1:]))
        return {"hidden": {"kernel": jax.random.normal(k1, (n, width)) / np.sqrt(n),
                           "bias": jnp.zeros((width,))},
                "out": {"kernel": jax.random.normal(k2, (width, 2)) / np.sqrt(width),
                        "bias": jnp.zeros((2,))}}  # fmt: skip

    def apply(params, x):
        h = jnp.tanh(x.reshape(x.shape[0], -1) @ params["hidden"]["kernel"]
                     + params["hidden"]["bias"][None])  # fmt: skip
        return h @ params["out"]["kernel"] + params["out"]["bias"][None]

    return init, apply


BUILDERS = {
    "linen": lambda width: LinenNet(width=width),
    "nnx": lambda width: nnx_model(NNXNet, width),
    "pure": pure_pair,
}


def experiment(kind: str):
    return supervised(
        f"bright-{kind}",
        model=BUILDERS[kind],
        model_keys={"width": 2},
        data=make_data(),
        loss=squared_error,
        metrics={"pixel_error": (pixel_error, "min")},
        score=("test_pixel_error", "min"),
        defaults={"batch_size": 32, "epochs": 4, "eval_every": 1, "lr": 0.01},
    )


def sweep(kind: str, experiment_=None):
    """width {2, 3} (a shape axis: two buckets) x lr {0.01, 0.03} x seed {0, 1} (vmapped),
    halved at epoch 2 within each width."""
    grid = Grid("net", axes={"width": [2, 3], "lr": [0.01, 0.03], "seed": [0, 1]})
    rule = Prune(at=(2,), keep=1 / 2, group_by=("width",))
    return union(f"bright-{kind}", [grid], "a user's own experiment", prune=rule,
                 experiment=experiment_ or experiment(kind))  # fmt: skip

"""Model outputs for the figures that need them (Fig 5, Fig 6 samples, regression scatter).

The one place the report imports JAX, the models and the dataset, lazily, when such a figure is
drawn: parameters come from the workdir's checkpoints (``coordjax.sweep.load_run``), restored
onto this machine's first device whatever wrote them.
"""

from __future__ import annotations

import dataclasses
import pathlib

import numpy as np
import pandas as pd

BATCH = 256


@dataclasses.dataclass(frozen=True)
class Outputs:
    """A run's outputs on its split, in generation order within each side.

    Attributes:
      train, test: model outputs, ``(N, 64, 64, 1)`` logits for map models or ``(N, 2)``
        ``[x/64, y/64]`` for regressors.
      split: the ``coordjax.datasets.NotSoClevr`` split the run trained on.
    """

    train: np.ndarray
    test: np.ndarray
    split: object


def run_outputs(workdir: pathlib.Path, run: pd.Series) -> Outputs:
    """Outputs of one run (a row of the results table) on its train and test sets.

    Raises:
      ValueError: the run has no checkpoint (``load_run``'s error).
    """
    import jax

    from coordjax import datasets, models
    from coordjax.datasets.not_so_clevr import scale_inputs
    from coordjax.sweep.workdir import load_run

    try:  # the checkpoint of the evaluation in the results table
        state = load_run(workdir, run["run_id"], epoch=int(run["epoch"]))
    except (ValueError, FileNotFoundError):  # a results row written just before a kill
        state = load_run(workdir, run["run_id"])
    spec = models.MODELS[run["model"]]
    model = models.build(run["model"], **{k: int(run[k]) for k in spec.shape_args})
    variables = {"params": state["params"]}
    if state.get("batch_stats"):
        variables["batch_stats"] = state["batch_stats"]
    # As trained (coordjax.train.TrainSetup); results written before these keys default to them.
    input_scale = _config_value(run, "input_scale", "raw")
    precision = _config_value(run, "precision", "highest")

    def forward(v, x):
        if precision == "default":
            return model.apply(v, x, train=False)
        with jax.default_matmul_precision(precision):
            return model.apply(v, x, train=False)

    apply = jax.jit(forward)
    split = datasets.not_so_clevr(run["split"])

    def outputs(examples) -> np.ndarray:
        if spec.input_kind == "coords":
            inputs = scale_inputs(np.asarray(examples.centers, np.float32), input_scale)
        else:
            inputs = examples.onehots
        inputs = np.asarray(inputs, np.float32)
        return np.concatenate(
            [
                np.asarray(apply(variables, inputs[i : i + BATCH]))
                for i in range(0, len(inputs), BATCH)
            ]
        )

    return Outputs(outputs(split.train), outputs(split.test), split)


def _config_value(run: pd.Series, key: str, default: str) -> str:
    value = run.get(key, default)
    return value if isinstance(value, str) else default


def softmax_maps(logits: np.ndarray) -> np.ndarray:
    """``(N, H, W, 1)`` logits -> ``(N, H, W)`` probabilities over the H*W pixels."""
    flat = logits.reshape(len(logits), -1).astype(np.float64)
    flat = np.exp(flat - flat.max(axis=1, keepdims=True))
    return (flat / flat.sum(axis=1, keepdims=True)).reshape(logits.shape[:3])


def sigmoid(logits: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(logits.astype(np.float64), -60, 60)))

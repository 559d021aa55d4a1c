"""Optuna on the digits example: TPE or random search over lr x weight decay, in vmapped batches.

An Optuna study asks for a batch of configurations, coordjax trains the batch as one vmapped
program (``coordjax.sweep.run_study``), and the study is told each model's final test pixel
error; then the next batch. The same budget for both samplers (default: 4 batches of 16):

    pip install -e ".[examples,optuna]"
    python sweeps/digits_optuna.py --sampler tpe --workdir runs/digits-tpe
    python sweeps/digits_optuna.py --sampler random --workdir runs/digits-random

Rerunning a command resumes its study (finished batches are not retrained); ``--batches 6``
goes on to six batches. The model: the CoordConv locator of ``sweeps/digits.py``, width 8,
pooling head, on the ``uniform`` variant (a random 20 % of the digits held out).
docs/guides/optuna.md shows the measured comparison.
"""

import argparse
import logging
import sys
import time

import optuna
from coordjax.catalog.digits import EXPERIMENT

from coordjax.sweep import EngineOptions, LogUniform, run_study

SPACE = {"lr": LogUniform(1e-4, 1e-1), "weight_decay": LogUniform(1e-5, 1.0)}
BASE = {"coordconv": True, "width": 8, "head": "pool", "data": "uniform"}
SAMPLERS = {
    # The batch's trials are asked before any is told: the constant liar counts the asked ones
    # as bad results, which spreads a batch out (the default from Optuna 5; explicit for 4.x).
    "tpe": lambda seed: optuna.samplers.TPESampler(seed=seed, multivariate=True,
                                                   constant_liar=True),
    "random": lambda seed: optuna.samplers.RandomSampler(seed=seed),
}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sampler", choices=list(SAMPLERS), required=True)
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--batches", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--seed", type=int, default=0, help="seeds the sampler")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # one line per batch, not per trial
    start = time.monotonic()
    study = run_study(
        EXPERIMENT, SPACE, args.workdir,
        batches=args.batches, batch_size=args.batch_size, seed=args.seed,
        base={**BASE, "epochs": args.epochs, "eval_every": args.epochs // 2 or 1},
        sampler=SAMPLERS[args.sampler], options=EngineOptions(progress=False),
    )  # fmt: skip
    done = study.trials_dataframe(attrs=("number", "value", "state", "params", "user_attrs"))
    done = done.loc[done["state"] == "COMPLETE"].sort_values("value")
    print(f"{args.sampler}: {len(done)} trials told, {time.monotonic() - start:.0f} s")
    print(f"best test pixel error {done['value'].iloc[0]:.3f} "
          f"(lr {done['params_lr'].iloc[0]:.3g}, weight decay "
          f"{done['params_weight_decay'].iloc[0]:.3g}); mean of the top 5 "
          f"{done['value'].head(5).mean():.3f}")  # fmt: skip
    for batch, group in done.groupby("user_attrs_batch"):
        print(f"  batch {batch}: best {group['value'].min():.3f}, "
              f"median {group['value'].median():.3f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())

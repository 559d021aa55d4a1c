"""The measurements of this report's reading, from a renderer-interventions workdir.

    python docs/reports/rendering-interventions/diagnose.py runs/renderer-interventions

For each run's last checkpoint, on 256 centres drawn in [4, 60): how spread the softmax map over
the canvas is (its largest value and its effective number of positions, exp(entropy)), how many
pixels are painted (logit > 0), the largest logit, and the first layer's mean |weight| on the
tiled input coordinates over its mean |weight| on the coordinate channels.
"""

import sys

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from coordjax import models
from coordjax.models.painters import CoordConvClassifier
from coordjax.sweep import load_run


def main(workdir: str) -> None:
    results = pd.read_csv(f"{workdir}/results.csv")
    model = models.build("coordconv_renderer", filter_size=1, channel_mult=2)
    centres = np.random.default_rng(0).integers(4, 60, size=(256, 2)).astype(np.float32)
    rows = []
    for run_id, group in results.groupby("run_id"):
        last = group.sort_values("epoch").iloc[-1]
        params = load_run(workdir, run_id)["params"]
        inputs = jnp.asarray(2 * centres / 63 - 1 if last["input_scale"] == "unit" else centres)
        centre_logits = CoordConvClassifier(channel_mult=1, name="coordconv").apply(
            {"params": params["coordconv"]}, inputs, train=False
        )
        p = jax.nn.softmax(centre_logits.reshape(len(centres), -1), axis=-1)
        entropy = -jnp.sum(jnp.where(p > 0, p * jnp.log(p), 0.0), axis=-1)
        logits = model.apply({"params": params}, inputs, train=False)
        kernel = np.abs(np.asarray(params["coordconv"]["coord_1x1"]["kernel"]))  # (x, y, xx, yy)
        rows.append({
            "run": f"{last['input_scale']} lr {last['lr']:g} seed {int(last['seed'])} "
                   f"{last['split']}",
            "epoch": int(last["epoch"]),
            "test IoU": round(float(last["test_iou"]), 3),
            "softmax max": round(float(jnp.median(p.max(-1))), 4),
            "effective positions": round(float(jnp.median(jnp.exp(entropy))), 1),
            "painted px": float(jnp.median(jnp.sum(logits > 0, axis=(1, 2, 3)))),
            "max logit": round(float(jnp.median(logits.max(axis=(1, 2, 3)))), 2),
            "|w| inputs / coords": round(float(kernel[:2].mean() / kernel[2:].mean()), 3),
        })  # fmt: skip
    print(pd.DataFrame(rows).to_string(index=False))  # noqa: T201 (a script)


if __name__ == "__main__":
    main(sys.argv[1])

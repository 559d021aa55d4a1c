"""The sweep's progress bar: which bucket and phase, one rate, and a cost-weighted ETA."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from typing import Any

import numpy as np

from coordjax.sweep.costs import bucket_costs
from coordjax.sweep.durations import format_duration
from coordjax.sweep.planner import Bucket


@dataclasses.dataclass
class Progress:
    """The progress bar: bucket and phase, one rate, and an ETA weighted by each bucket's cost.

    Work restored from checkpoints moves the bar but not the rate: the rate and the ETA count
    only what this process trained (compiles excluded), so a resume shows no bogus speed.
    """

    bar: Any = None
    costs: dict[str, float] = dataclasses.field(default_factory=dict)  # bucket_id -> cost
    epoch: int = 0  # the current bucket's last checkpointed epoch (where a resume starts)
    label: str = ""
    status: str = ""
    compiled: set = dataclasses.field(default_factory=set)
    trained_cost: float = 0.0
    trained_seconds: float = 0.0
    trained_model_steps: int = 0

    def start(self, index: int, count: int, bucket: Bucket) -> None:
        self.epoch = 0
        self.label = f"bucket {index + 1}/{count} {bucket.bucket_id}"
        self.phase("starting")

    def phase(self, name: str) -> None:
        if self.bar is not None:
            rate = f" | {self.status}" if self.status else ""
            self.bar.set_description_str(f"{self.label} {name}{rate}", refresh=True)

    def _cost(self, bucket: Bucket, epochs: int) -> float:
        return self.costs.get(bucket.bucket_id, 0.0) * epochs / bucket.static["epochs"]

    def restored(self, bucket: Bucket, epochs: int) -> None:
        if self.bar is not None and epochs:
            self.bar.update(self._cost(bucket, epochs))

    def pruned(self, bucket: Bucket, models: int, epoch: int) -> None:
        """``models`` of the bucket stopped at ``epoch`` (successive halving): their remaining
        epochs leave the bar's total."""
        if self.bar is not None and models:
            left = bucket.static["epochs"] - epoch
            self.bar.total -= self._cost(bucket, left) * models / bucket.num_models
            self.bar.refresh()

    def trained(self, bucket: Bucket, epochs: int, seconds: float, models: int) -> None:
        """``models`` of the bucket (fewer after pruning) trained ``epochs`` in ``seconds``."""
        cost = self._cost(bucket, epochs) * models / bucket.num_models
        self.trained_cost += cost
        self.trained_seconds += seconds
        self.trained_model_steps += models * epochs * bucket.steps_per_epoch
        if self.bar is None:
            return
        self.bar.update(cost)
        rate = self.trained_model_steps / max(self.trained_seconds, 1e-9)
        left = (self.bar.total - self.bar.n) * self.trained_seconds / max(self.trained_cost, 1e-30)
        self.status = f"{rate:,.0f} model-steps/s, ETA {format_duration(left)}"


def make_progress(buckets: list[Bucket], show: bool) -> Progress:
    """The progress bar (or a silent tracker). A bucket's cost is its FLOPs from XLA's cost
    analysis (train steps and evaluations), so the ETA weighs a deconv epoch above a
    CoordConv one; model-steps stand in where the analysis gives nothing."""
    if not show:
        return Progress()
    from tqdm.auto import tqdm  # only when the bar shows (tqdm picks a notebook or terminal bar)

    costs = {}
    for bucket in buckets:
        per_model = bucket_costs(bucket)
        flops = (
            bucket.total_steps * per_model["step_flops"]
            + len(bucket.chunks) * per_model["eval_flops"]
        )
        costs[bucket.bucket_id] = bucket.num_models * (
            flops if np.isfinite(flops) and flops > 0 else bucket.total_steps
        )
    bar = tqdm(total=sum(costs.values()), desc="sweep", bar_format=BAR_FORMAT)
    return Progress(bar=bar, costs=costs)


BAR_FORMAT = "{percentage:3.0f}%|{bar}| {desc}"


@contextlib.contextmanager
def logs_through(bar):
    """While the bar shows, log lines go through ``tqdm.write`` and do not break it."""
    if bar is None:
        yield
        return
    from tqdm.contrib.logging import logging_redirect_tqdm  # only when the bar shows

    # The root logger only: coordjax's records propagate to it (a handler on both printed each
    # line twice).
    with logging_redirect_tqdm(loggers=[logging.getLogger()]):
        yield

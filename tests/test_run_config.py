"""The run config: every run key declared once, with its role, default and check."""

import numpy as np
import pytest

from coordjax.paper.experiment import EXPERIMENT
from coordjax.paper.run_config import RunConfig, stack_runs
from coordjax.sweep import STATIC, VMAPPED
from coordjax.train import Hparams, make_hparams


def test_every_key_has_one_role_and_hparams_are_its_leaves():
    static, vmapped = EXPERIMENT.keys_of(STATIC), EXPERIMENT.keys_of(VMAPPED)
    assert set(static) | set(vmapped) == set(EXPERIMENT.defaults()) == set(RunConfig.keys())
    assert not set(static) & set(vmapped)
    assert static == RunConfig.keys(STATIC) and vmapped == RunConfig.keys(VMAPPED)
    # The schedule's length is the run's epochs, not a key of its own.
    assert (*RunConfig.keys(hparam=True), "cosine_epochs") == Hparams._fields


def test_config_is_frozen_and_checked_on_construction():
    config = RunConfig(lr=0.01)
    with pytest.raises(AttributeError):
        config.lr = 0.1  # type: ignore[misc]
    with pytest.raises(ValueError, match=r"lr_decay_every must be finite and >= 1 \(epochs\)"):
        RunConfig(lr_decay_every=0.5)
    with pytest.raises(ValueError, match="schedule must be one of"):
        RunConfig(schedule="linear")


@pytest.mark.parametrize("value", [1.5, 0.0, -0.1, float("nan"), float("inf")])
def test_lr_decay_is_a_factor_in_0_1(value):
    with pytest.raises(ValueError, match=r"^lr_decay must be in \(0, 1\] .*growing lr"):
        RunConfig(schedule="step", lr_decay=value)
    with pytest.raises(ValueError, match=r"^lr_decay must be in \(0, 1\]"):
        make_hparams(0.01, schedule="step", lr_decay=value)
    with pytest.raises(ValueError, match="^lr_decay must be a real number"):
        RunConfig(lr_decay=True)
    assert RunConfig(schedule="step", lr_decay=1.0).lr_decay == 1.0  # 1: no decay


def test_stacked_runs_are_numpy_and_equal_the_single_model_hparams():
    configs = [RunConfig(schedule="step", lr=0.01), RunConfig(split="quadrant", seed=3),
               RunConfig(seed=3, order_seed=8)]  # fmt: skip
    runs = stack_runs(configs)
    for leaf in (*runs.hparams, runs.seed, runs.order_seed, *runs.split):
        assert isinstance(leaf, np.ndarray) and leaf.shape[0] == 3
    one = make_hparams(0.01, schedule="step")
    for stacked, single in zip(runs.hparams, one, strict=True):
        assert stacked[0] == np.asarray(single)
    np.testing.assert_array_equal(runs.seed, [0, 3, 3])
    np.testing.assert_array_equal(runs.order_seed, [0, 3, 8])  # -1, the default: the run's seed


@pytest.mark.parametrize("value", [-2, 2**31, 1.0, True])
def test_order_seed_is_minus_one_or_a_seed(value):
    with pytest.raises(ValueError, match=r"^order_seed must be -1 \(the run's seed\) or an int"):
        RunConfig(order_seed=value)

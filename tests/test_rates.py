"""Time estimates from measured rates: FLOPs from layer shapes (against hand counts) and the
estimator's arithmetic against a small fake rates table."""

import dataclasses
import math

import pytest

from coordjax import datasets, models
from coordjax.sweep import EngineOptions, Grid, union
from coordjax.sweep import rates as R
from coordjax.sweep.dry_run import plan_text
from coordjax.sweep.durations import format_duration

CLASSIFIER = {"task": "classification", "model": "coordconv_classifier", "batch_size": 16,
              "epochs": 2, "eval_every": 1}  # fmt: skip
STEPS_PER_EPOCH = math.ceil(len(datasets.split_indices("uniform")[0]) / 16)  # 148
ONE_DEVICE = EngineOptions(shard=False, progress=False)


def fake_table(**overrides):
    """Two measured M for the classifier (c=1, batch 16): 10 steps/s alone, 20 per model at 4."""
    flops = R.train_step_flops(models.build("coordconv_classifier"), (2,), 16)
    entry = {"model": "coordconv_classifier", "shape": {"channel_mult": 1}, "batch_size": 16,
             "step_flops": flops, "compile_s": 3.0}  # fmt: skip
    table = {"devices": {"fakecpu": {"rates": [
        {**entry, "num_models": 1, "model_steps_per_s": 10.0},
        {**entry, "num_models": 4, "model_steps_per_s": 80.0},
    ]}}}  # fmt: skip
    table["devices"]["fakecpu"]["rates"][0].update(overrides)
    return R.parse_rates(table)


def estimate(sweep, table=None, **kwargs):
    kwargs = {"device_kind": "fakecpu", "platform": "cpu", "num_devices": 1, **kwargs}
    return R.estimate_seconds(sweep, ONE_DEVICE, rates=table or fake_table(), **kwargs)


def classifier_sweep(n_models: int, **base) -> object:
    lrs = [0.001 * (i + 1) for i in range(n_models)]
    return union("c", [Grid("c", base={**CLASSIFIER, **base}, axes={"lr": lrs})])


# -- FLOPs from layer shapes ----------------------------------------------------------------


def test_classifier_macs_match_a_hand_count():
    b, hw = 16, 64 * 64
    # CoordDense 4->32, then 1x1 32->32, 32->64, 64->64, 64->1, each at every pixel.
    want = [b * hw * ci * co for ci, co in ((4, 32), (32, 32), (32, 64), (64, 64), (64, 1))]
    assert R.forward_layer_macs(models.build("coordconv_classifier"), (b, 2)) == want
    assert R.train_step_flops(models.build("coordconv_classifier"), (2,), b) == 2 * (
        3 * sum(want) - want[0]
    )


@pytest.mark.parametrize("fs,c", [(2, 1), (3, 2)])
def test_transposed_conv_counts_the_input_grid_times_the_kernel(fs, c):
    b = 8
    widths = [2, 64 * c, 64 * c, 64 * c, 32 * c, 32 * c, 1]
    want = [b * (4**i) * fs * fs * widths[i] * widths[i + 1] for i in range(6)]
    model = models.build("deconv_painter", filter_size=fs, channel_mult=c)
    assert R.forward_layer_macs(model, (b, 2)) == want


def test_strided_conv_counts_the_output_grid():
    macs = R.forward_layer_macs(models.build("conv_regressor_quadrant"), (2, 64, 64, 1))
    assert macs[0] == 2 * 32 * 32 * 5 * 5 * 1 * 16  # 5x5 stride 2, 64 -> 32
    assert macs[1] == 2 * 32 * 32 * 16 * 16  # 1x1 at 32x32


# -- the estimator ----------------------------------------------------------------------------


def test_measured_shape_uses_the_nearest_measured_m():
    sweep = classifier_sweep(4)
    est = estimate(sweep)
    (bucket,) = est.buckets
    assert bucket.basis == "measured" and "M=4" in bucket.detail
    steps = 2 * STEPS_PER_EPOCH
    assert bucket.train_s == pytest.approx(steps / 20.0)
    assert bucket.compile_s == pytest.approx(2 * 3.0)  # init + one chunk length
    flops = R.train_step_flops(models.build("coordconv_classifier"), (2,), 16)
    eval_flops = R.forward_flops(models.build("coordconv_classifier"), (2,), 1) * 3136
    assert bucket.eval_s == pytest.approx(2 * eval_flops / (20.0 * flops))
    assert est.seconds == pytest.approx(bucket.train_s + bucket.eval_s + bucket.compile_s)
    # One model: the M=1 measurement (10 steps/s).
    assert estimate(classifier_sweep(1)).buckets[0].train_s == pytest.approx(steps / 10.0)


def test_m_beyond_the_largest_measured_is_not_extrapolated():
    (bucket,) = estimate(classifier_sweep(64)).buckets  # the device's 80 model-steps/s at M=4
    assert bucket.train_s == pytest.approx(64 * 2 * STEPS_PER_EPOCH / 80.0)


def test_sharding_divides_the_models_over_devices():
    one = estimate(classifier_sweep(8), num_devices=1).buckets[0]
    two = estimate(classifier_sweep(8), num_devices=2).buckets[0]
    assert "M=4" in two.detail and "M=4" in one.detail  # 4 per device vs 8 -> nearest 4
    alone = estimate(classifier_sweep(2), num_devices=2).buckets[0]
    assert "M=1" in alone.detail and alone.train_s == pytest.approx(2 * STEPS_PER_EPOCH / 10.0)


def test_other_shape_is_scaled_by_its_flops():
    (bucket,) = estimate(classifier_sweep(1, channel_mult=2)).buckets
    assert bucket.basis == "scaled"
    f1 = R.train_step_flops(models.build("coordconv_classifier", channel_mult=1), (2,), 16)
    f2 = R.train_step_flops(models.build("coordconv_classifier", channel_mult=2), (2,), 16)
    assert bucket.train_s == pytest.approx(2 * STEPS_PER_EPOCH / (10.0 * f1 / f2))


def test_unmeasured_model_falls_back_to_the_assumed_flop_rate():
    sweep = union("d", [Grid("d", base={"task": "classification", "model": "deconv_painter",
                                        "filter_size": 2, "batch_size": 32, "epochs": 1,
                                        "eval_every": 1})])  # fmt: skip
    (bucket,) = estimate(sweep).buckets
    flops = R.train_step_flops(models.build("deconv_painter", filter_size=2), (2,), 32)
    steps = math.ceil(len(datasets.split_indices("uniform")[0]) / 32)
    assert bucket.basis == "assumed"
    assert bucket.train_s == pytest.approx(steps * flops / R.ASSUMED_FLOP_RATE["cpu"])
    assert bucket.compile_s == pytest.approx(2 * R.ASSUMED_COMPILE_S["cpu"])
    # An unknown device kind: everything assumed.
    assert estimate(classifier_sweep(2), device_kind="other").buckets[0].basis == "assumed"


def test_only_rates_of_the_options_lowering_are_used():
    table = fake_table()
    lax = R.Rate("coordconv_classifier", (("channel_mult", 1),), 16, 1, 1.0,
                 table["fakecpu"][0].step_flops, 3.0, "lax")  # fmt: skip
    matmul = [R.Rate(**{**vars(r), "lowering": "matmul"}) for r in table["fakecpu"]]
    table = {"fakecpu": [*matmul, lax]}
    steps = 2 * STEPS_PER_EPOCH
    default = R.estimate_seconds(classifier_sweep(1), ONE_DEVICE, device_kind="fakecpu",
                                 platform="cpu", rates=table)  # fmt: skip
    assert default.buckets[0].train_s == pytest.approx(steps / 10.0)  # auto on CPU: matmul
    as_lax = EngineOptions(shard=False, progress=False, lowering="lax")
    slow = R.estimate_seconds(classifier_sweep(1), as_lax, device_kind="fakecpu",
                              platform="cpu", rates=table)  # fmt: skip
    assert slow.buckets[0].train_s == pytest.approx(steps / 1.0)


def test_long_estimates_warn():
    assert estimate(classifier_sweep(2)).warning is None
    slow = fake_table(model_steps_per_s=1e-4)
    est = estimate(classifier_sweep(1, epochs=50), slow)
    assert est.seconds > R.LONG_SECONDS
    assert "months" in est.warning and "fakecpu" in est.warning


def test_format_duration():
    assert format_duration(42) == "42 s"
    assert format_duration(90) == "1.5 min"
    assert format_duration(3 * 3600) == "3.0 h"
    assert format_duration(3 * 86400) == "3.0 days"
    assert format_duration(90 * 86400) == "3.0 months"


def test_malformed_tables_are_rejected_naming_the_entry():
    with pytest.raises(ValueError, match="devices"):
        R.parse_rates({"rates": []})
    with pytest.raises(ValueError, match="'fakecpu', entry 0"):
        R.parse_rates({"devices": {"fakecpu": {"rates": [{"model": "x"}]}}})
    with pytest.raises(ValueError, match="model_steps_per_s must be > 0"):
        fake_table(model_steps_per_s=0.0)


def test_saved_rates_read_back_equal_and_other_device_kinds_are_kept(tmp_path):
    path = tmp_path / "rates.json"
    first = R.Rate("deconv_painter", (("channel_mult", 1), ("filter_size", 2)), 32, 8, 61.25,
                   3.9e8, compile_s=3.125, lowering="matmul", note="strategy vmap")  # fmt: skip
    other = dataclasses.replace(first, num_models=1, compile_s=None, lowering=None, note="")
    R.save_rates("fakecpu", [first], {"date": "today"}, path)
    R.save_rates("fakegpu", [other], {}, path)
    assert R.load_rates(path) == {"fakecpu": [first], "fakegpu": [other]}
    R.save_rates("fakecpu", [other], {}, path)  # a new measurement replaces that kind's rates
    assert R.load_rates(path) == {"fakecpu": [other], "fakegpu": [other]}


def test_saving_a_rate_the_estimates_cannot_read_is_refused(tmp_path):
    bad = R.Rate("deconv_painter", (), 32, 1, 0.0, 1.0)
    with pytest.raises(ValueError, match="model_steps_per_s must be > 0"):
        R.save_rates("fakecpu", [bad], {}, tmp_path / "rates.json")
    assert not (tmp_path / "rates.json").exists()


def test_the_shipped_table_parses_and_names_zoo_models():
    table = R.load_rates()
    for entries in table.values():
        for rate in entries:
            assert rate.model in models.MODELS
            assert set(dict(rate.shape)) <= set(models.MODELS[rate.model].shape_args)
            built = models.build(rate.model, **dict(rate.shape))
            shape = models.MODELS[rate.model].input_shape
            assert rate.step_flops == R.train_step_flops(built, shape, rate.batch_size)


def test_dry_run_states_the_estimate():
    text = plan_text(classifier_sweep(2), ONE_DEVICE)
    assert "est. time" in text and "estimated wall time on" in text

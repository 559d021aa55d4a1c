"""Memory planned per bucket: XLA's analysis of the compiled chunk, fitted in the model axis; a
memory limit splits buckets without changing a number; sizes parse strictly."""

import dataclasses
import math

import pandas as pd
import pytest
import user_experiments as ux
from tiny_sweeps import by_run

from coordjax import sweep as sw
from coordjax.cli import main
from coordjax.sweep import memory
from coordjax.sweep.planner import plan
from coordjax.sweep.programs import Programs

# lax.map over single models (the CPU rule): each model's numbers come from the same one-model
# program whatever its bucket holds, so a split must reproduce them bit for bit.
OPTIONS = sw.EngineOptions(progress=False, strategy="map", map_batch_size=1, shard=False)
BUCKET_COLUMNS = ["wall_time", "bucket_id", "bucket_model_steps"]


def test_sizes_parse_strictly():
    assert memory.parse_bytes("80GiB") == 80 * 2**30
    assert memory.parse_bytes("1.5 MB") == 1_500_000
    for bad in ("80", "80Gi", "-1GB", "0B", "eighty GB", "80 gib"):
        with pytest.raises(ValueError, match="device_memory must be a positive size"):
            memory.parse_bytes(bad)


def test_bad_device_memory_flag_is_one_line(capsys):
    assert main(["sweep", "classification", "--dry-run", "--device-memory", "80G"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--device-memory must be a size with a unit" in err


def _sweep():
    grid = sw.Grid("net", base={"epochs": 1, "width": 3},
                   axes={"lr": [0.01, 0.03], "seed": [0, 1, 2]})  # fmt: skip
    return sw.union("bright", [grid], experiment=ux.experiment("pure"))  # one bucket of 6


def test_a_bucket_is_split_like_max_models_until_it_fits_or_refused():
    sweep = _sweep()
    buckets = plan(sweep.expand(), experiment=sweep.experiment)
    # A program of 2 models needs 1000 + 2 * 300 bytes, one of 4 needs 1000 + 4 * 300.
    measured = (
        memory.ChunkMemory(2, 1200, 400, 300, 300),
        memory.ChunkMemory(4, 1800, 700, 600, 300),
    )
    model = memory.MemoryModel("map", 1, measured)
    assert (model.fixed, model.per_model, model.peak(6)) == (1000, 300, 2800)
    (whole,) = memory.fit(buckets, 2800, OPTIONS, models=[model])
    assert whole.parts == 1 and whole.buckets() == buckets
    (fit,) = memory.fit(buckets, 1700, OPTIONS, models=[model])
    assert (fit.parts, fit.models_per_program, fit.peak) == (3, 2, 1600)
    assert memory.fitted_buckets([fit]) == plan(sweep.expand(), experiment=sweep.experiment,
                                                max_models=2)  # fmt: skip
    assert "3 programs of <= 2 models" in memory.memory_text([fit], 1700, "cpu", "cpu")
    # Sharded over 2 devices, a program holds 2 models per device.
    (fit,) = memory.fit(buckets, 1700, OPTIONS, models=[model], devices=2)
    assert (fit.parts, fit.models_per_program) == (2, 4)
    with pytest.raises(memory.DoesNotFit, match="bucket bright-.*one model needs 1.3 KiB"):
        memory.fit(buckets, 1200, OPTIONS, models=[model])


@pytest.mark.slow
def test_a_sweep_split_to_fit_a_tiny_memory_equals_the_unsplit_sweep(tmp_path):
    sweep = _sweep()
    buckets = plan(sweep.expand(), experiment=sweep.experiment)
    (model,) = memory.measure(buckets, OPTIONS)
    # The analysis grows with the model axis (states are arguments and outputs).
    small, large = model.measured
    assert large.argument > small.argument and large.peak > small.peak > 0
    assert model.peak(small.models) == pytest.approx(small.peak)
    (whole,) = memory.fit(buckets, 2**40, OPTIONS, models=[model])
    assert whole.parts == 1 and whole.peak == pytest.approx(model.peak(6))
    # A limit that holds two models of the program and not three splits the bucket in three.
    limit = math.ceil(model.peak(2))
    fits = memory.fit(buckets, limit, OPTIONS, models=[model])
    assert fits[0].parts == 3 and fits[0].peak <= limit < model.peak(3)
    assert "3 programs of <= 2 models" in memory.memory_text(fits, limit, "cpu", "cpu")

    programs = Programs()
    unsplit = sw.run_sweep(sweep, tmp_path / "unsplit", options=OPTIONS, programs=programs)
    split = sw.run_sweep(sweep, tmp_path / "split", programs=programs,
                         options=dataclasses.replace(OPTIONS, device_memory=limit))  # fmt: skip
    assert split["bucket_id"].nunique() == 3 and unsplit["bucket_id"].nunique() == 1
    a, b = (by_run(t).drop(columns=BUCKET_COLUMNS) for t in (unsplit, split))
    pd.testing.assert_frame_equal(a, b, check_exact=True)

    with pytest.raises(memory.DoesNotFit, match="one model needs .* more than the device memory"):
        memory.fit(buckets, 1024, OPTIONS, models=[model])


@pytest.mark.slow  # two sweeps end to end (12 s), like the split's equality test above
def test_runs_added_by_extend_are_split_to_fit_like_the_first_ones(tmp_path, monkeypatch):
    from tiny_sweeps import tiny_sweep

    # Programs of 2 models fit 1700 bytes, of 3 do not (as above), whatever the bucket.
    measured = (
        memory.ChunkMemory(2, 1200, 400, 300, 300),
        memory.ChunkMemory(4, 1800, 700, 600, 300),
    )
    model = memory.MemoryModel("map", 1, measured)
    monkeypatch.setattr(memory, "measure", lambda buckets, *args, **kw: [model] * len(buckets))
    options = dataclasses.replace(OPTIONS, device_memory=1700)
    workdir, programs = tmp_path / "w", Programs()
    first = sw.run_sweep(tiny_sweep(lrs=(0.01, 0.002, 0.005), splits=("uniform",)), workdir,
                         options=options, programs=programs)  # fmt: skip
    (bucket,) = {b.rsplit("-p", 1)[0] for b in first["bucket_id"]}
    assert set(first["bucket_id"]) == {f"{bucket}-p0", f"{bucket}-p1"}
    grown = tiny_sweep(lrs=(0.01, 0.002, 0.005, 0.003, 0.004, 0.006), splits=("uniform",))
    results = sw.run_sweep(grown, workdir, options=options, extend=True, programs=programs)
    added = results[~results["run_id"].isin(first["run_id"])]
    assert set(added["bucket_id"]) == {f"{bucket}-x1-p0", f"{bucket}-x1-p1"}
    assert added.groupby("bucket_id")["run_id"].nunique().max() == 2
    # The first runs were not retrained.
    kept = results[results["run_id"].isin(first["run_id"])]
    pd.testing.assert_frame_equal(by_run(kept), by_run(first), check_exact=True)

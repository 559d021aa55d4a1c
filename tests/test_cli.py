"""What a user reads from the command line: --help, `coordjax list`, and the progress bar."""

import importlib
import itertools

import pytest
from tiny_sweeps import tiny_sweep_file

from coordjax import catalog, cli
from coordjax.sweep import Grid, plan, union
from coordjax.sweep.durations import format_duration
from coordjax.sweep.progress import Progress


def test_help_is_for_users(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "CoordConv" in out and "coordjax sweep classification --preset smoke" in out
    assert "no logic lives here" not in out  # not the module's developer docstring


def test_list_gives_description_model_count_and_grid_names(capsys, monkeypatch):
    # Each preset's time estimate (XLA's cost analysis of its buckets: most of the listing's
    # time over the whole catalog) is checked on a sweep file by test_list_shows_a_sweep_file.
    monkeypatch.setattr(cli, "_estimated_time", lambda definition: "9.9 min")
    assert cli.main(["list"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    for name in catalog.SWEEPS:
        module = importlib.import_module(f"coordjax.catalog.{name}")
        assert f"{name}:" in lines
        section = lines[lines.index(f"{name}:") + 1 :]
        for preset, make in module.PRESETS.items():
            sweep = make()
            (line,) = [i for i, text in enumerate(section) if text.split()[0] == preset][:1]
            assert f"{len(sweep.expand())} models" in section[line]
            only = next(i for i in range(line + 1, len(section)) if "--only: " in section[i])
            wrapped = " ".join(t.strip() for t in section[line:only])  # long ones wrap
            assert sweep.description in wrapped
            # A long list of grids wraps, indented under its first name.
            under = itertools.takewhile(lambda t: t.startswith(" " * 41), section[only + 1 :])
            grids = " ".join(t.strip() for t in [section[only], *under])
            grids = grids.split("--only: ")[1].split("   ")[0].split(", ")
            assert grids == list(dict.fromkeys(g.name for g in sweep.grids))
        # Presets come under their purpose's heading; every purpose names real presets.
        for purpose, presets in module.PURPOSES.items():
            assert set(presets) <= set(module.PRESETS), purpose
            heading = section.index(f"  -- {purpose}")
            below = [t.split()[0] for t in section[heading + 1 :] if t.startswith("  ") and
                     not t.startswith("   ")]  # fmt: skip
            assert below[: len(presets)] == presets
        # A retired preset is gone, and the replacement the CLI names is a preset.
        for retired, instead in getattr(module, "RETIRED", {}).items():
            assert retired not in module.PRESETS and instead.split()[0] in module.PRESETS
    assert max(len(line) for line in lines) <= 100


class FakeBar:
    def __init__(self, total):
        self.total, self.n, self.description = total, 0.0, ""

    def update(self, n):
        self.n += n

    def set_description_str(self, text, refresh=True):
        self.description = text


def test_progress_rate_counts_only_work_trained_here():
    """Resumed work moves the bar, not the rate; the ETA weighs buckets by their cost."""
    base = {"model": "tiny", "epochs": 4}
    sweep = union("s", [Grid("a", base=base), Grid("b", base={**base, "batch_size": 32})])
    first, second = plan(sweep.expand())
    costs = {first.bucket_id: 100.0, second.bucket_id: 300.0}  # the second costs 3x the first
    progress = Progress(bar=FakeBar(400.0), costs=costs)
    progress.start(0, 2, first)
    progress.restored(first, 2)  # half of the first bucket came from a checkpoint
    assert progress.bar.n == 50.0 and progress.status == ""
    # The other half: 50 cost units in 10 s.
    progress.trained(first, 2, seconds=10.0, models=first.num_models)
    steps = first.num_models * 2 * first.steps_per_epoch
    assert progress.status == f"{steps / 10.0:,.0f} model-steps/s, ETA {format_duration(60.0)}"
    progress.start(1, 2, second)
    progress.phase("compiling")
    assert progress.bar.description.startswith(f"bucket 2/2 {second.bucket_id} compiling | ")


def test_durations():
    # One wording for estimates, ETAs and heartbeat ages.
    assert format_duration(59) == "59 s" and format_duration(3600 * 5 + 61) == "5.0 h"
    assert format_duration(86400 * 140) == "4.7 months"


def test_list_shows_a_sweep_file(tmp_path, capsys):
    sweep_file = tiny_sweep_file(tmp_path, '[Grid("mine", base=BASE, axes={"lr": [0.1, 0.2]})]')
    assert cli.main(["list", str(sweep_file)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"{sweep_file}:" and lines[1].split()[:3] == ["t", "2", "models"]
    assert "--only: mine" in "\n".join(lines)
    assert "estimated time here: " in "\n".join(lines)


def test_a_log_line_under_the_bar_is_printed_once(capsys):
    import logging
    import sys

    from coordjax.sweep.progress import logs_through

    handler = logging.StreamHandler(sys.stderr)  # as the CLI's logging.basicConfig
    root, logger = logging.getLogger(), logging.getLogger("coordjax")
    level = logger.level
    root.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        with logs_through(bar=object()):
            logger.info("bucket b: finished, nothing to do")
    finally:
        root.removeHandler(handler)
        logger.setLevel(level)
    printed = capsys.readouterr().err
    assert printed.count("finished, nothing to do") == 1, printed

"""Every mistake a user can make gets one clear line: at the command line ``coordjax: ...`` naming
the parameter (and the grid and file it came from) and what is allowed, exit status 2, nothing
written; in the library a ValueError/TypeError naming the argument.

The CLI runs in-process (``coordjax.cli.main``), so the table is fast.
"""

import os
import re
import signal
import subprocess
import sys
import textwrap
import time

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import coordjax as cj
from coordjax import cli, datasets, models, tasks
from coordjax.sweep import workdir as wd

TINY = (
    '{"task": "classification", "model": "tiny", "batch_size": 256, "epochs": 1, "eval_every": 1}'
)


def sweep_file(tmp_path, grid_base: str = "{}", *, body: str | None = None) -> str:
    """A user's sweep file whose one grid has ``TINY`` updated with ``grid_base``."""
    text = body or textwrap.dedent(f"""\
        from coordjax.sweep import Grid, union
        BASE = {TINY}
        PRESETS = {{"t": lambda: union("mine", [Grid("g", base={{**BASE, **{grid_base}}})])}}
        """)
    path = tmp_path / "mine.py"
    path.write_text(text)
    return str(path)


def run_cli(capsys, argv):
    status = cli.main(argv)
    out, err = capsys.readouterr()
    return status, out, err


def grid_case(base: str, *expected: str):
    """A sweep file whose grid has one bad value: the message names the file, the preset, the
    grid and the key; nothing is written."""
    return ("grid", base, ("mine.py", "preset 't'", "grid 'g'", *expected))


def flag_case(flags: list[str], *expected: str):
    return ("flags", flags, expected)


def file_case(body: str, *expected: str):
    return ("file", body, expected)


CASES = {
    # flags
    "seeds 0": flag_case(["--seeds", "0"], "--seeds", "positive int"),
    "only nomatch": flag_case(["--only", "nomatch"], "--only", "'nomatch'", "grids: ['g']"),
    "max-models 0": flag_case(["--max-models", "0"], "--max-models", "positive int"),
    "map-batch-size 0": flag_case(["--map-batch-size", "0"], "--map-batch-size", "positive int"),
    "strategy bogus": flag_case(["--strategy", "fast"], "--strategy", "'fast'", "'tune'"),
    "pad batch_size": flag_case(["--pad", "batch_size"], "--pad", "filter_size", "steps per"),
    "pad unknown": flag_case(["--pad", "width"], "--pad", "'width'", "channel_mult"),
    "seeds not int": flag_case(["--seeds", "two"], "--seeds", "'two'"),
    "unknown flag": flag_case(["--epochs", "3"], "unrecognized arguments: --epochs 3"),
    "unknown preset": flag_case(["--preset", "nope"], "unknown preset 'nope'", "['t']"),
    # grid values
    "unknown task": grid_case('{"task": "segmentation"}', "task must be one of", "rendering"),
    "bad rendering loss": grid_case(
        '{"task": "rendering", "loss": "bce"}', "loss for task 'rendering'", "'mse'"
    ),
    "model does not fit task": grid_case(
        '{"model": "coordconv_regressor"}', "does not fit task 'classification'", "tiny"
    ),
    "unknown model": grid_case('{"model": "resnet"}', "model must be one of", "deconv_painter"),
    "unknown split": grid_case('{"split": "diagonal"}', "split must be one of", "quadrant"),
    "lr nan": grid_case('{"lr": float("nan")}', "lr must be finite and > 0", "nan"),
    "lr 0": grid_case('{"lr": 0.0}', "lr must be finite and > 0"),
    "lr True": grid_case('{"lr": True}', "lr must be a real number", "True"),
    "lr string": grid_case('{"lr": "0.01"}', "lr must be a real number", "'0.01'"),
    "l2 negative": grid_case('{"l2": -1.0}', "l2 must be finite and >= 0"),
    "lr_decay_every 0": grid_case('{"lr_decay_every": 0}', "lr_decay_every", ">= 1"),
    "lr_decay growing": grid_case('{"lr_decay": 2.0}', "lr_decay must be in (0, 1]", "2.0"),
    "schedule": grid_case('{"schedule": "linear"}', "schedule must be one of", "'cosine'"),
    "seed string": grid_case('{"seed": "1"}', "seed must be an int", "'1'"),
    "seed word": grid_case('{"seed": "seven"}', "seed must be an int", "'seven'"),
    "seed True": grid_case('{"seed": True}', "seed must be an int", "True"),
    "batch larger than split": grid_case(
        '{"batch_size": 10**6}', "batch_size 1000000 is larger than the 2368 training", "uniform"
    ),
    "batch 0": grid_case('{"batch_size": 0}', "batch_size must be a positive int"),
    "filter size float": grid_case('{"filter_size": 2.5}', "filter_size", "positive int", "2.5"),
    "epochs True": grid_case('{"epochs": True}', "epochs must be a positive int"),
    "eval_every 0": grid_case('{"eval_every": 0}', "eval_every must be a positive int"),
    "channel_mult string": grid_case('{"channel_mult": "2"}', "channel_mult", "'2'"),
    "value a list": grid_case('{"lr": [0.1]}', "lr in grid 'g' must be a str or a number"),
    # the sweep file itself
    "unknown key": file_case(
        'from coordjax.sweep import Grid, union\n\nPRESETS = {"t": lambda: union("u", '
        '[Grid("g", base={"learning_rate": 0.1})])}\n',
        "mine.py:3",
        "unknown config key 'learning_rate'",
        "allowed:",
    ),
    "axis not a list": file_case(
        'from coordjax.sweep import Grid, union\nPRESETS = {"t": lambda: union("u", '
        '[Grid("g", axes={"lr": 0.1})])}\n',
        "mine.py:2",
        "axis 'lr' of grid 'g' must be a list",
    ),
    "empty axis": file_case(
        'from coordjax.sweep import Grid, union\nPRESETS = {"t": lambda: union("u", '
        '[Grid("g", axes={"lr": []})])}\n',
        "mine.py:2",
        "axis 'lr' of grid 'g' has no values",
    ),
    "error in file": file_case(
        "import math\n\nx = undefined_name + 1\nPRESETS = {}\n",
        "mine.py:3",
        "NameError",
        "undefined_name",
    ),
    "syntax error": file_case("PRESETS = {\n", "mine.py:1", "SyntaxError"),
    "no PRESETS": file_case("x = 1\n", "defines no PRESETS"),
    "preset returns a Grid": file_case(
        'from coordjax.sweep import Grid\nPRESETS = {"t": lambda: Grid("g")}\n',
        "returned a Grid",
        "union",
    ),
    "preset not callable": file_case(
        'from coordjax.sweep import Grid, union\nPRESETS = {"t": union("u", [Grid("g")])}\n',
        "preset 't'",
        "not a function",
    ),
    "axis a model ignores": file_case(
        f'from coordjax.sweep import Grid, union\nPRESETS = {{"t": lambda: union("u", [Grid("g", '
        f'base={TINY}, axes={{"filter_size": [1, 3]}})])}}\n',
        "axis 'filter_size' of grid 'g'",
        "model 'tiny'",
        "duplicates",
    ),
    "axis a schedule ignores": file_case(
        f'from coordjax.sweep import Grid, union\nPRESETS = {{"t": lambda: union("u", [Grid("g", '
        f'base={TINY}, axes={{"schedule": ["constant", "step"], "lr_decay": [0.1, 0.5]}})])}}\n',
        "axis 'lr_decay' of grid 'g'",
        "schedule 'constant'",
    ),
    "repeated seed": file_case(
        f'from coordjax.sweep import Grid, union\nPRESETS = {{"t": lambda: union("u", [Grid("g", '
        f'base={TINY}, axes={{"seed": [0, 1, 0]}})])}}\n',
        "axis 'seed' of grid 'g' repeats 0",
    ),
    "empty union": file_case(
        'from coordjax.sweep import union\nPRESETS = {"t": lambda: union("u", [])}\n',
        "sweep 'u' has no grids",
    ),
    "exit in file": file_case(
        "import sys\n\nsys.exit(3)\nPRESETS = {}\n",
        "mine.py:3",
        "error while loading the sweep file",
        "SystemExit",
        "exit(3)",
    ),
    "exit in preset": file_case(
        "import sys\n\n\ndef t():\n    sys.exit('no')\n\n\nPRESETS = {'t': t}\n",
        "mine.py:5",
        "SystemExit",
    ),
    "preset raises": file_case(
        "def t():\n    raise RuntimeError('no data here')\n\n\nPRESETS = {'t': t}\n",
        "mine.py:2",
        "RuntimeError: no data here",
    ),
}


@pytest.mark.parametrize("kind, value, expected", CASES.values(), ids=CASES.keys())
def test_cli_mistake_is_one_line_exit_2_and_nothing_written(
    tmp_path, capsys, kind, value, expected
):
    workdir = tmp_path / "runs" / "w"
    if kind == "flags":
        argv = ["sweep", sweep_file(tmp_path), "--preset", "t", "--workdir", str(workdir), *value]
    elif kind == "grid":
        argv = ["sweep", sweep_file(tmp_path, value), "--preset", "t", "--workdir", str(workdir)]
    else:
        argv = ["sweep", sweep_file(tmp_path, body=value), "--preset", "t"]
        argv += ["--workdir", str(workdir)]
    status, out, err = run_cli(capsys, argv)
    assert status == 2, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("coordjax: "), err
    for part in expected:
        assert part in lines[0], (part, lines[0])
    assert not (tmp_path / "runs").exists()  # validated before anything is written


PLAIN_CASES = {
    "unknown sweep": (["sweep", "nope", "--workdir", "w"], ["unknown sweep 'nope'", "regression"]),
    "missing sweep file": (["sweep", "gone.py", "--workdir", "w"], ["'gone.py' does not exist"]),
    "unknown preset": (["sweep", "classification", "--preset", "huge"], ["'huge'", "'paper'"]),
    "retired preset": (
        ["sweep", "classification", "--preset", "fig-s2", "--workdir", "w"],
        ["'fig-s2'", "was retired", "fig-s2-cpu", "'smoke'"],
    ),
    "no workdir": (["sweep", "classification"], ["--workdir is required"]),
    "unknown command": (["train"], ["invalid choice: 'train'", "'sweep'"]),
    "report of a file": (["report", "README.md"], ["README.md is not a directory"]),
    "no command": ([], ["required: command"]),
}


@pytest.mark.parametrize("argv, expected", PLAIN_CASES.values(), ids=PLAIN_CASES.keys())
def test_cli_plain_mistakes(capsys, argv, expected):
    status, out, err = run_cli(capsys, argv)
    assert status == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("coordjax: "), err
    for part in expected:
        assert part in lines[0], (part, lines[0])


def test_debug_shows_the_traceback(tmp_path):
    with pytest.raises(cli.UsageError, match="--seeds"):
        cli.main(["--debug", "sweep", sweep_file(tmp_path), "--preset", "t", "--seeds", "0"])


def test_workdir_that_is_a_file(tmp_path, capsys):
    (tmp_path / "w").write_text("not a directory")
    status, _, err = run_cli(capsys, ["sweep", sweep_file(tmp_path), "--preset", "t",
                                      "--workdir", str(tmp_path / "w")])  # fmt: skip
    assert status == 2 and err.count("\n") == 1
    assert "is a file, not a directory" in err


def test_workdir_that_cannot_be_written(tmp_path, capsys, monkeypatch):
    # Tests may run as root, which ignores permission bits: the filesystem's answer is faked.
    monkeypatch.setattr(wd.os, "access", lambda path, mode: False)
    status, _, err = run_cli(capsys, ["sweep", sweep_file(tmp_path), "--preset", "t",
                                      "--workdir", str(tmp_path / "ro" / "w")])  # fmt: skip
    assert status == 2 and err.count("\n") == 1
    assert "cannot be written" in err and "--workdir" in err
    assert not (tmp_path / "ro").exists()


def test_different_sweep_refusal_says_what_differs(tmp_path, capsys):
    workdir = str(tmp_path / "w")
    first = sweep_file(tmp_path, '{"lr": 0.01, "epochs": 1}')
    args = ["--preset", "t", "--workdir", workdir, "--no-shard"]  # one model: no device padding
    assert cli.main(["sweep", first, *args, "--no-progress"]) == 0
    capsys.readouterr()
    second = sweep_file(tmp_path, '{"lr": 0.02, "epochs": 1}')
    status, _, err = run_cli(capsys, ["sweep", second, *args])
    assert status == 2 and err.count("\n") == 1
    assert "different sweep" in err and "lr: 0.01 -> 0.02" in err and "--restart" in err


@pytest.mark.integration
def test_ctrl_c_says_where_and_how_to_resume(tmp_path):
    """SIGINT during training: one line, no traceback, and the rerun resumes."""
    path = sweep_file(tmp_path, '{"epochs": 400, "eval_every": 1}')
    args = ["sweep", path, "--preset", "t", "--workdir", str(tmp_path / "w"), "--no-progress"]
    # A shell without job control starts background jobs with SIGINT ignored, and children
    # inherit that: give the CLI Python's own Ctrl-C handler, as in an interactive terminal.
    command = [sys.executable, "-c", textwrap.dedent(f"""
        import signal, sys
        signal.signal(signal.SIGINT, signal.default_int_handler)
        from coordjax import cli
        sys.exit(cli.main({args!r}))
    """)]  # fmt: skip
    victim = subprocess.Popen(command, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    checkpoints = tmp_path / "w" / "checkpoints"

    def saved():  # finished checkpoints only (orbax writes to a temporary name first)
        return [d for d in checkpoints.glob("*/*") if d.name.isdigit()]

    while not saved() and time.monotonic() < deadline:
        assert victim.poll() is None, victim.communicate()
        time.sleep(0.05)
    os.kill(victim.pid, signal.SIGINT)
    try:  # the interrupt waits for the running chunk: slow on a loaded machine
        _, err = victim.communicate(timeout=300)
    finally:  # never leave it running (its pipes would fail a later test)
        if victim.poll() is None:
            victim.kill()
            victim.communicate()
    assert victim.returncode == 130, err
    last = err.strip().splitlines()[-1]
    assert "Traceback" not in err, err
    assert last.startswith("coordjax: interrupted at epoch ") and "of bucket tiny-" in last
    assert last.endswith("rerun the same command to resume")
    epoch = int(last.split("interrupted at epoch ")[1].split()[0])
    assert epoch >= 1 and (tmp_path / "w" / "results.csv").exists()


# -- the library ------------------------------------------------------------------------------

LIBRARY_CASES = {
    "spatial_ndim True": (
        lambda: cj.add_coords(jnp.zeros((2, 8, 8, 1)), spatial_ndim=True),
        "spatial_ndim",
    ),
    "coord_channels str": (lambda: cj.coord_channels("64"), "spatial_shape"),
    "coord_channels float size": (lambda: cj.coord_channels((64.5, 3)), "spatial_shape"),
    "with_r yes": (lambda: cj.add_coords(jnp.zeros((2, 8, 8, 1)), with_r="yes"), "with_r"),
    "coord_channels with_r str": (lambda: cj.coord_channels((4, 4), with_r="no"), "with_r"),
    "make_hparams lr str": (lambda: cj.train.make_hparams(lr="0.01"), "lr must be a real"),
    "make_hparams lr True": (lambda: cj.train.make_hparams(lr=True), "lr must be a real"),
    "make_hparams l2 nan": (lambda: cj.train.make_hparams(0.1, float("nan")), "l2 must be"),
    "fit batch 0": (
        lambda: cj.train.fit(
            models.build("tiny"),
            tasks.get("classification"),
            datasets.not_so_clevr("uniform"),
            cj.train.make_hparams(0.01),
            seed=0,
            epochs=1,
            batch_size=0,
        ),  # fmt: skip
        "batch_size must be in [1, 2368]",
    ),
    "fit batch too large": (
        lambda: cj.train.fit(
            models.build("tiny"),
            tasks.get("classification"),
            datasets.not_so_clevr("quadrant"),
            cj.train.make_hparams(0.01),
            seed=0,
            epochs=1,
            batch_size=5000,
        ),  # fmt: skip
        "batch_size must be in [1, 2407]",
    ),
    "linen strides 0": (lambda: cj.linen.CoordConv(3, (3, 3), strides=0), "strides"),
    "linen strides length": (lambda: cj.linen.CoordConv(3, (3, 3), strides=(1, 1, 1)), "strides"),
    "linen dilation 0": (
        lambda: cj.linen.CoordConvTranspose(3, (3, 3), kernel_dilation=(0, 1)),
        "kernel_dilation",
    ),
    "nnx in_features 0": (
        lambda: cj.nnx.CoordConv(
            in_features=0, out_features=3, kernel_size=(3, 3), rngs=nnx.Rngs(0)
        ),
        "in_features",
    ),
    "nnx strides 0": (
        lambda: cj.nnx.CoordConv(
            in_features=2, out_features=3, kernel_size=(3, 3), strides=0, rngs=nnx.Rngs(0)
        ),
        "strides",
    ),
    "spec features 0": (
        lambda: cj.functional.coord_conv_spec(transpose=False, features=0, kernel_size=3),
        "features",
    ),
    "spec tile_shape length": (
        lambda: cj.functional.coord_conv_spec(
            transpose=False, features=2, kernel_size=(1, 1), tile_shape=(4,)
        ),
        "tile_shape",
    ),
    "spec input_dilation True": (
        lambda: cj.functional.coord_conv_spec(
            transpose=False, features=2, kernel_size=3, conv_options={"input_dilation": True}
        ),
        "input_dilation",
    ),
    "conv input_dilation with string padding": (
        lambda: cj.conv.conv(jnp.ones((1, 4, 4, 1)), jnp.ones((3, 3, 1, 2)), padding="SAME",
                             input_dilation=2, lowering="lax"),  # fmt: skip
        "padding 'SAME' is not defined for input_dilation",
    ),
    "conv groups under matmul": (
        lambda: cj.conv.conv(
            jnp.ones((1, 4, 4, 2)),
            jnp.ones((3, 3, 1, 2)),
            feature_group_count=2,
            lowering="matmul",
        ),  # fmt: skip
        "feature_group_count",
    ),
    "conv_transpose form": (
        lambda: cj.conv.conv_transpose(jnp.ones((1, 4, 4, 1)), jnp.ones((3, 3, 1, 1)), form="x"),
        "form",
    ),
    "conv_transpose_form strides 0": (
        lambda: cj.conv.conv_transpose_form((1, 4, 4, 1), (3, 3, 1, 1), strides=0),
        "strides",
    ),
    "add_coords axes float": (lambda: cj.add_coords(jnp.zeros((2, 8, 8, 1)), axes=1.0), "axes"),
    "add_coords dtype bogus": (
        lambda: cj.add_coords(jnp.zeros((2, 8, 8, 1)), dtype="bogus"), "dtype must be"
    ),
    "union of one Grid": (
        lambda: cj.sweep.union("x", cj.sweep.Grid("g")), "grids of sweep 'x' must be a list"
    ),
    "load_run missing workdir": (lambda: cj.sweep.load_run("/nonexistent", "r"), "no config"),
    "make_hparams lr_max_decays 2.5": (
        lambda: cj.train.make_hparams(0.01, schedule="step", lr_max_decays=2.5),
        "lr_max_decays must be a whole number",
    ),
    **{
        f"fit {what}": (lambda change=change: _fit(**change), message)
        for what, change, message in (
            ("negative lr", {"hparams": cj.train.make_hparams(0.01)._replace(lr=-1e-3)},
             "lr must be finite and > 0"),
            ("negative weight decay",
             {"hparams": cj.train.make_hparams(0.01)._replace(weight_decay=-0.1)},
             "weight_decay must be finite and >= 0"),
            ("hparams float", {"hparams": 0.01}, "hparams must be coordjax.train.Hparams"),
            ("task str", {"task": "classification"}, "task must be a coordjax.train.Task"),
            ("data str", {"data": "uniform"}, "data must have .train and .test"),
            ("eval_every True", {"eval_every": True}, "eval_every must be a positive int"),
        )
    },  # fmt: skip
    "build channel_mult 0": (lambda: models.build("deconv_painter", channel_mult=0), "channel"),
    "build channel_mult True": (lambda: models.build("tiny", channel_mult=True), "channel_mult"),
}


def _fit(**change):
    """``fit`` of the tiny model with one argument changed (refused before any tracing)."""
    arguments = dict(model=models.build("tiny"), task=tasks.get("classification"),
                     data=datasets.not_so_clevr("uniform"), hparams=cj.train.make_hparams(0.01),
                     seed=0, epochs=1, batch_size=16)  # fmt: skip
    return cj.train.fit(**{**arguments, **change})


@pytest.mark.parametrize("make, name", LIBRARY_CASES.values(), ids=LIBRARY_CASES.keys())
def test_library_mistake_names_the_argument(make, name):
    with pytest.raises((ValueError, TypeError)) as info:
        make()
    assert name in str(info.value)


def test_numpy_integers_are_ints():
    """A model can be rebuilt from a results row (NumPy ints), and grids accept NumPy values."""
    from coordjax.sweep import Grid, plan, union

    built = models.build("deconv_painter", filter_size=np.int64(3), channel_mult=np.int64(2))
    assert (built.filter_size, built.channel_mult) == (3, 2)
    assert isinstance(built.channel_mult, int)
    grid = Grid("g", base={"model": "tiny", "batch_size": np.int64(64)},
                axes={"lr": np.array([0.1, 0.2]), "seed": [np.int32(3)]})  # fmt: skip
    (bucket,) = plan(union("u", [grid]).expand())
    assert bucket.static["batch_size"] == 64 and [r["lr"] for r in bucket.runs] == [0.1, 0.2]
    assert cj.coord_channels((np.int64(4), 3)).shape == (4, 3, 2)


# -- sweeps that would train nothing, or the same run twice --------------------------------------

PAINTER = {"task": "classification", "model": "coordconv_classifier"}
DUPLICATING = {
    "filter_size on coordconv_classifier": (
        {"base": PAINTER, "axes": {"filter_size": [1, 3]}},
        "axis 'filter_size' of grid 'g' varies a key that model 'coordconv_classifier'",
    ),
    "filter_size where one model of the axis ignores it": (
        {"axes": {"model": ["deconv_painter", "coordconv_classifier"], "filter_size": [1, 3]}},
        "model 'coordconv_classifier'",
    ),
    "lr_decay under constant": (
        {"base": {"schedule": "constant"}, "axes": {"lr_decay": [0.1, 0.5]}},
        "axis 'lr_decay' of grid 'g' varies a key that schedule 'constant' (only 'step'",
    ),
    "lr_decay_every under cosine": (
        {"base": {"schedule": "cosine"}, "axes": {"lr_decay_every": [10, 20]}},
        "schedule 'cosine'",
    ),
    "lr_max_decays with a schedule axis": (
        {"axes": {"schedule": ["step", "constant"], "lr_max_decays": [1, 2]}},
        "axis 'lr_max_decays'",
    ),
    "repeated seed": ({"axes": {"seed": [0, 1, 1]}}, "axis 'seed' of grid 'g' repeats 1"),
}


@pytest.mark.parametrize("grid, message", DUPLICATING.values(), ids=DUPLICATING.keys())
def test_axes_that_duplicate_runs_are_refused(grid, message):
    from coordjax.sweep import Grid, union

    with pytest.raises(ValueError, match=re.escape(message)) as info:
        union("u", [Grid("g", **grid)]).expand()
    assert "\n" not in str(info.value)


def test_keys_a_run_ignores_are_fine_as_single_values_or_where_read():
    from coordjax.sweep import Grid, plan, union

    fine = [
        Grid("a", base={**PAINTER, "filter_size": 3, "lr_decay": 0.5}),  # base: one run each
        Grid("b", base=PAINTER, axes={"channel_mult": [1, 2], "lr": [0.1, 0.2]}),
        Grid("c", base={"schedule": "step"}, axes={"lr_decay": [0.1, 0.5]}),
        Grid("d", base={"model": "deconv_painter"}, axes={"filter_size": [1, 3], "seed": [0, 1]}),
    ]
    runs = union("u", fine).expand()
    assert len(runs) == 1 + 4 + 2 + 4 and len(plan(runs)) == 5


def test_an_empty_union_is_refused_before_a_workdir_is_written(tmp_path):
    from coordjax.sweep import run_sweep, union

    with pytest.raises(ValueError, match="^sweep 'nothing' has no grids"):
        run_sweep(union("nothing", []), tmp_path / "w")
    assert not (tmp_path / "w").exists()


def test_a_report_folder_that_is_a_file_is_one_line(tmp_path, capsys, tiny_workdir):
    import shutil

    workdir = tmp_path / "w"
    shutil.copytree(tiny_workdir[0], workdir)
    (workdir / "report").write_text("not a folder")
    status, out, err = run_cli(capsys, ["report", str(workdir)])
    assert status == 2 and err.count("\n") == 1 and "report is a file" in err, err


def test_version(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["--version"])
    assert info.value.code == 0 and capsys.readouterr().out.strip() == f"coordjax {cj.__version__}"


def test_mistakes_in_flags_and_sweep_files_are_answered_before_jax_is_imported(tmp_path):
    """Importing JAX takes seconds (10-40 on a loaded 2-core machine): a mistake that needs no
    sweep is answered without it (one process for every case; each must exit 2, JAX unloaded)."""
    empty = tmp_path / "empty.py"
    empty.write_text("PRESETS = {}\n")
    cases = [
        ["sweep", "nosuch"],
        ["sweep", str(tmp_path / "gone.py"), "--workdir", "w"],
        ["sweep", str(empty), "--workdir", "w"],
        ["sweep", "classification", "--preset", "huge"],
        ["sweep", "classification", "--bogus"],
        ["sweep", "classification"],
        ["sweep", "classification", "--seeds", "0", "--workdir", "w"],
        ["sweep", "classification", "--prune-at", "3,x", "--workdir", "w"],
        ["sweep", "classification", "--prune-keep", "2", "--workdir", "w"],
        ["sweep", "classification", "--task-index", "3", "--task-count", "2", "--workdir", "w"],
    ]
    script = textwrap.dedent(f"""
        import sys
        from coordjax import cli
        for argv in {cases!r}:
            assert cli.main(argv) == 2, argv
            assert "jax" not in sys.modules, argv
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          cwd=tmp_path, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == len(cases) and all(line.startswith("coordjax: ") for line in lines)


def test_a_long_sweep_says_so_before_it_trains(tmp_path, capsys, monkeypatch):
    """The first line of a sweep estimated longer than LONG_SECONDS (here: any) is the estimate,
    the device and what shortens it; the sweep itself is not run (a stand-in stops it)."""
    from coordjax import sweep as sw
    from coordjax.sweep import rates

    def stop(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(rates, "LONG_SECONDS", 0.0)
    monkeypatch.setattr(sw, "run_sweep", stop)
    argv = ["sweep", sweep_file(tmp_path), "--preset", "t", "--workdir", str(tmp_path / "w")]
    status, _, err = run_cli(capsys, argv)
    first = err.splitlines()[0]
    assert status == 130 and first.startswith("coordjax: WARNING: estimated "), err
    for part in (" on cpu: ", "--dry-run", "--prune-at", "GPU"):
        assert part in first, (part, first)
    monkeypatch.setattr(rates, "LONG_SECONDS", 1e9)
    status, _, err = run_cli(capsys, argv)
    assert status == 130 and "WARNING" not in err, err

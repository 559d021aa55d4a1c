"""The ``coordjax`` command line. It parses arguments and calls the library; no logic lives here.

coordjax sweep NAME --preset PRESET --workdir DIR [--dry-run] [--restart | --extend] ...
coordjax sweep NAME ... --task-index I --task-count N   one of N processes sharing a workdir
coordjax status WORKDIR [--json]
coordjax report WORKDIR
coordjax export WORKDIR (RUN_ID | --best METRIC) --out PATH
coordjax list

Every mistake in the user's input (flags, sweep names, presets, grid values, sweep files,
workdirs) is answered with one line ``coordjax: ...`` and exit status 2; ``--debug`` shows the
traceback instead. Ctrl-C prints where the sweep stopped and how to resume.

Each sub-command imports the library inside its function: ``coordjax list``, ``status`` and
``report`` start without loading JAX and the models.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import logging
import pathlib
import sys
import textwrap
import time
import traceback

from coordjax import __version__, catalog

DESCRIPTION = """\
Train and resume sweeps of CoordConv experiments (Liu et al., NeurIPS 2018): whole grids of
models trained at once, with results, checkpoints and config in a workdir."""

EPILOG = """\
examples:
  coordjax list                                             sweeps, presets, model counts
  coordjax sweep classification --preset smoke --workdir runs/smoke
  coordjax sweep classification --preset paper --dry-run   the plan, without training
  coordjax sweep my_sweep.py --preset mine --workdir runs/mine   your own grid file
  coordjax sweep classification --preset smoke --workdir runs/smoke --tensorboard runs/tb
  coordjax export runs/smoke --best test_accuracy --out best     one model, to load and apply

Rerunning the same command resumes an interrupted sweep; finished buckets are skipped."""

USAGE_ERROR = 2


class UsageError(Exception):
    """A mistake in the user's input: printed as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors as one ``coordjax: ...`` line (not usage + message)."""

    def error(self, message: str):
        raise UsageError(f"{message} (see `{self.prog} --help`)")


def _frame_in(tb, filename: str) -> int | None:
    """The line of the innermost frame of ``tb`` executing ``filename``, if any."""
    line = None
    for frame in traceback.extract_tb(tb):
        if pathlib.Path(frame.filename).resolve() == pathlib.Path(filename).resolve():
            line = frame.lineno
    return line


def _user_code_error(err: BaseException, filename: str, doing: str) -> UsageError:
    """One line for an exception raised while running a sweep file: file:line, type, message."""
    if isinstance(err, SyntaxError) and err.filename and err.lineno:
        where = f"{err.filename}:{err.lineno}"
        message = err.msg
    else:
        line = _frame_in(err.__traceback__, filename)
        where = f"{filename}:{line}" if line else filename
        message = f"it called exit({err.code!r})" if isinstance(err, SystemExit) else str(err)
    return UsageError(f"{where}: {doing}: {type(err).__name__}: {message}")


def _check_sweep_name(name: str) -> None:
    """A catalog sweep's name or an existing .py file (a one-line UsageError otherwise)."""
    if name.endswith(".py"):
        if not pathlib.Path(name).is_file():
            raise UsageError(f"sweep file {name!r} does not exist")
    elif name not in catalog.SWEEPS:
        raise UsageError(
            f"unknown sweep {name!r}; choose from {list(catalog.SWEEPS)} "
            "or pass a path to a .py file defining PRESETS"
        )


def _load_sweep_module(name: str):
    """A catalog sweep by name, or a user's sweep file (a .py path defining PRESETS)."""
    _check_sweep_name(name)
    if name.endswith(".py"):
        path = pathlib.Path(name)
        spec = importlib.util.spec_from_file_location(f"coordjax_user_sweep_{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        try:
            spec.loader.exec_module(module)
        except (Exception, SystemExit) as err:  # sys.exit() in the file, too
            raise _user_code_error(err, str(path), "error while loading the sweep file") from err
        presets = getattr(module, "PRESETS", None)
        if not isinstance(presets, dict) or not presets:
            raise UsageError(
                f"sweep file {name!r} defines no PRESETS dict (preset name -> function returning "
                "a coordjax.sweep.Sweep)"
            )
        return module
    return importlib.import_module(f"coordjax.catalog.{name}")


def _preset_function(module, sweep_name: str, preset: str):
    """The preset's function, or a one-line UsageError (unknown, retired, not callable); reads
    the module's ``PRESETS`` only (no JAX)."""
    presets = module.PRESETS
    retired = getattr(module, "RETIRED", {})
    if preset not in presets and preset in retired:
        raise UsageError(
            f"preset {preset!r} of sweep {sweep_name!r} was retired; run {retired[preset]} "
            f"instead (presets: {list(presets)})"
        )
    if preset not in presets:
        raise UsageError(
            f"unknown preset {preset!r} for sweep {sweep_name!r}; choose from {list(presets)}"
        )
    make = presets[preset]
    if not callable(make):
        raise UsageError(
            f"preset {preset!r} of {sweep_name!r} is a {type(make).__name__}, not a function; "
            "PRESETS maps names to functions returning a coordjax.sweep.Sweep"
        )
    return make


def _build_preset(module, sweep_name: str, preset: str):
    """Calls the preset's function; a Sweep, or a one-line UsageError saying what is wrong."""
    from coordjax import sweep as sw

    make = _preset_function(module, sweep_name, preset)
    try:
        definition = make()
    except (Exception, SystemExit) as err:
        raise _user_code_error(err, module.__file__, f"preset {preset!r}") from err
    if not isinstance(definition, sw.Sweep):
        hint = (
            " (wrap it: coordjax.sweep.union(name, [grid]))"
            if isinstance(definition, sw.Grid)
            else ""
        )
        raise UsageError(
            f"preset {preset!r} of {sweep_name!r} returned a {type(definition).__name__}, not a "
            f"coordjax.sweep.Sweep{hint}"
        )
    return definition


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="coordjax",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--debug", action="store_true", help="show tracebacks instead of one-line errors"
    )
    parser.add_argument("--version", action="version", version=f"coordjax {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    sweep = sub.add_parser(
        "sweep",
        help="run (or resume) a sweep into a workdir",
        description="Run a sweep preset into --workdir; rerunning the same command resumes it.",
    )
    sweep.add_argument("name", help=f"one of {list(catalog.SWEEPS)}, or a .py file with PRESETS")
    sweep.add_argument("--preset", default="smoke", help="which grid of the sweep (default smoke)")
    sweep.add_argument("--workdir", help="where config, results and checkpoints live")
    sweep.add_argument("--dry-run", action="store_true", help="print the plan and exit")
    sweep.add_argument(
        "--restart",
        action="store_true",
        help="move a workdir holding a different sweep aside and start over",
    )
    sweep.add_argument(
        "--extend",
        action="store_true",
        help="the sweep was edited to add runs (more seeds, values or grids): train the new runs "
        "into the workdir; its recorded runs, rows, checkpoints and pruning decisions stay as "
        "they are (a change to what they depend on is refused)",
    )
    sweep.add_argument("--seeds", type=int, help="replace the seed axis by seeds 0..N-1")
    sweep.add_argument(
        "--only", help="keep the grids whose name contains this string (see `coordjax list`)"
    )
    sweep.add_argument(
        "--strategy",
        default="auto",
        choices=("auto", "vmap", "map", "tune"),
        help="how a bucket's model axis is lowered: auto (default) is a fixed rule per platform "
        "and models per device; tune times vmap against map per bucket (load-dependent). The "
        "choice is recorded in the workdir and reused on resume",
    )
    sweep.add_argument(
        "--lowering",
        default="auto",
        choices=("auto", "lax", "matmul", "zero_insertion"),
        help="how convolutions are computed: XLA convolutions (lax), patches/sub-pixel phases + "
        "matmuls (matmul), transposed convs as zero-padded stride-1 convs (zero_insertion), or "
        "auto (default: a fixed per-platform rule, coordjax.conv.default_lowering; matmul on "
        "CPU; the choice is recorded in the workdir and reused on resume)",
    )
    sweep.add_argument(
        "--map-batch-size", type=int, default=4, help="models per lax.map slice with --strategy map"
    )
    sweep.add_argument("--max-models", type=int, help="at most this many models per program")
    sweep.add_argument(
        "--device-memory",
        help="memory one device may hold (e.g. 80GiB, 16GB; or 'device': the limit the device "
        "reports): each bucket's program is measured by XLA's memory analysis and run with a "
        "smaller map batch or split into programs of fewer models until it fits",
    )
    sweep.add_argument(
        "--pad",
        default="",
        help="comma-separated shape axes (filter_size, channel_mult) to serve by padding: one "
        "program per group trains its largest model and the smaller ones exactly inside it",
    )
    sweep.add_argument(
        "--prune-at",
        help="successive halving: comma-separated rung epochs (e.g. 25,50,100; evaluation "
        "epochs), overriding the sweep's own rule",
    )
    sweep.add_argument(
        "--prune-keep", type=float, help="the fraction of each group kept at a rung (default 1/3)"
    )
    sweep.add_argument(
        "--prune-metric",
        help="the results column ranked at a rung (default: the task's headline metric on the "
        "train split; a test metric selects on the test set)",
    )
    sweep.add_argument("--no-prune", action="store_true", help="ignore the sweep's pruning rule")
    sweep.add_argument(
        "--no-shard", action="store_true", help="do not shard the model axis over local devices"
    )
    sweep.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    sweep.add_argument(
        "--distributed",
        action="store_true",
        help="call jax.distributed.initialize() first (multi-host runs)",
    )
    sweep.add_argument(
        "--task-index",
        type=int,
        help="fan-out: this process is task I of --task-count independent processes sharing "
        "--workdir (default: $SLURM_ARRAY_TASK_ID or $JOB_COMPLETION_INDEX when set); each "
        "trains its share of the buckets, then any bucket no live process holds",
    )
    sweep.add_argument(
        "--task-count",
        type=int,
        help="fan-out: the number of tasks (default: $SLURM_ARRAY_TASK_COUNT under SLURM)",
    )
    sweep.add_argument(
        "--stale-after",
        type=float,
        default=None,
        help="fan-out: seconds without this process's heartbeat after which another machine's "
        "process may take its buckets over (default 600; recorded in its claims, which are judged "
        "by it; a dead process on the same machine is taken over at once)",
    )
    sweep.add_argument("--debug", action="store_true", help=argparse.SUPPRESS)

    sweep.add_argument(
        "--no-report", action="store_true", help="do not write WORKDIR/report at the end"
    )
    sweep.add_argument(
        "--tensorboard",
        metavar="DIR",
        help="write one TensorBoard run per model to DIR/<run_id> while the sweep runs (scalars "
        "at every evaluation, hparams, pruned runs marked; a resume adds no duplicates); needs "
        "`pip install 'coordjax[tensorboard]'`",
    )
    sweep.add_argument(
        "--wandb",
        metavar="PROJECT",
        help="log one W&B run per model to PROJECT, grouped by the sweep ($WANDB_MODE=offline "
        "works); needs `pip install 'coordjax[wandb]'`",
    )

    export = sub.add_parser(
        "export",
        help="write one run's model (Flax msgpack) and its config (JSON) to a new directory",
        description="Write one run's un-padded Flax variables (variables.msgpack) and its config "
        "and metrics (config.json) to --out; coordjax.sweep.load_export reads them back.",
    )
    export.add_argument("workdir", help="a sweep's workdir")
    export.add_argument("run_id", nargs="?", help="the run (a run_id of results.csv)")
    export.add_argument(
        "--best",
        metavar="METRIC",
        help="instead of RUN_ID: the best finished run by METRIC (a results column, e.g. "
        "test_accuracy), larger or smaller as the experiment says",
    )
    export.add_argument("--out", required=True, help="the directory to write (must not exist)")
    export.add_argument("--debug", action="store_true", help=argparse.SUPPRESS)

    report = sub.add_parser("report", help="write WORKDIR/report/report.md and its figures")
    report.add_argument("workdir", help="a sweep's workdir")
    report.add_argument("--debug", action="store_true", help=argparse.SUPPRESS)

    status = sub.add_parser(
        "status",
        help="where a sweep stands: each bucket done / running / stale / pending, and an ETA",
        description="Where a sweep stands (also while it runs, in one or many processes).",
    )
    status.add_argument("workdir", help="a sweep's workdir")
    status.add_argument("--json", action="store_true", help="print the status as JSON")
    status.add_argument(
        "--stale-after",
        type=float,
        default=None,
        help="seconds without a heartbeat after which a claim that records no period of its own "
        "(an older version's) counts as stale (default 600)",
    )
    status.add_argument("--debug", action="store_true", help=argparse.SUPPRESS)

    lower = sub.add_parser(
        "lower",
        help="list the convolutions and dots each bucket's program holds on another platform",
        description="Lower each bucket's training chunk for --platform on this machine (shapes "
        "only, nothing runs) and say, per bucket, how many convolutions are transposed by "
        "lhs_dilate or grouped, and how many ops are not at full (HIGHEST) precision.",
    )
    lower.add_argument("name", help=f"one of {list(catalog.SWEEPS)}, or a .py file with PRESETS")
    lower.add_argument("--preset", default="smoke", help="which grid of the sweep (default smoke)")
    lower.add_argument("--platform", default="cuda", choices=("cpu", "cuda", "rocm", "tpu"),
                       help="the platform to lower for (default cuda)")  # fmt: skip
    lower.add_argument("--only", help="keep the grids whose name contains this string")
    listing = sub.add_parser(
        "list",
        help="list sweeps, their presets, model counts and grid names",
        description="List each sweep's presets: description, model count, grids for --only.",
    )
    listing.add_argument(
        "sweeps", nargs="*", metavar="NAME_OR_FILE",
        help="catalog sweeps or sweep files (.py defining PRESETS) to list (default: the catalog)",
    )  # fmt: skip
    return parser


def main(argv: list[str] | None = None) -> int:
    """Runs the command line; returns the exit status (0, or 2 for a mistake in the input)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    debug = "--debug" in argv
    try:
        args = _parser().parse_args(argv)
        logging.basicConfig(format="%(message)s")
        logging.getLogger("coordjax").setLevel(logging.INFO)
        if args.command == "list":
            print(_list_text(args.sweeps))
            return 0
        if args.command == "report":
            print(f"report: {_report(args.workdir)}")
            return 0
        if args.command == "status":
            print(_status(args))
            return 0
        if args.command == "lower":
            print(_lower(args))
            return 0
        if args.command == "export":
            print(f"exported: {_export(args)}")
            return 0
        return _sweep(args)
    except UsageError as err:
        if debug:
            raise
        print(f"coordjax: {err}", file=sys.stderr)
        return USAGE_ERROR
    except KeyboardInterrupt as err:
        if debug:
            raise
        print(f"coordjax: {str(err) or 'interrupted'}", file=sys.stderr)
        return 130


def _list_text(names: list[str] | None = None) -> str:
    """Each sweep's presets (the catalog's, or ``names``: catalog sweeps or sweep files):
    description, model count, grid names for ``--only``."""
    lines = []
    for name in names or catalog.SWEEPS:
        module = _load_sweep_module(name)
        lines.append(f"{name}:")
        for preset in _by_purpose(module, lines):
            definition = _build_preset(module, name, preset)
            models = len(definition.expand())
            grids = ", ".join(dict.fromkeys(g.name for g in definition.grids))
            estimate = _estimated_time(definition)
            indent = " " * 33  # under the description
            head = f"  {preset:<16} {models:>5} models  "
            lines.extend(textwrap.wrap(definition.description or "-", 100, initial_indent=head,
                                       subsequent_indent=indent) or [head])  # fmt: skip
            details = [f"--only: {grids}"]
            if estimate:
                details.append(f"estimated time here: {estimate}")
            if len(indent) + len("   ".join(details)) <= 100:
                lines.append(indent + "   ".join(details))
            else:  # a long list of grids wraps under its first name
                lines.extend(textwrap.wrap(details[0], 100, initial_indent=indent,
                                           subsequent_indent=indent + " " * len("--only: "),
                                           break_on_hyphens=False))  # fmt: skip
                lines.extend(indent + detail for detail in details[1:])
    return "\n".join(lines)


def _by_purpose(module, lines: list[str]):
    """The module's presets in the order of its ``PURPOSES`` (purpose -> preset names), each
    purpose's heading appended to ``lines`` before its first preset; the rest come last."""
    purposes = getattr(module, "PURPOSES", {})
    listed = [p for presets in purposes.values() for p in presets if p in module.PRESETS]
    for purpose, presets in purposes.items():
        lines.append(f"  -- {purpose}")
        yield from (p for p in presets if p in module.PRESETS)
    rest = [p for p in module.PRESETS if p not in listed]
    if rest and purposes:
        lines.append("  -- other")
    yield from rest


def _estimated_time(definition) -> str | None:
    """The estimated wall time of a preset on this device, from measured rates."""
    from coordjax.sweep.durations import format_duration
    from coordjax.sweep.rates import estimate_seconds

    try:
        estimate = estimate_seconds(definition)
    except ValueError:  # a preset this device cannot estimate
        return None
    if not definition.rules():
        return format_duration(estimate.seconds)
    from coordjax.sweep.dry_run import pruned_estimate
    from coordjax.sweep.planner import plan

    buckets = plan(definition.expand(), experiment=definition.experiment)
    *_, pruned = pruned_estimate(definition, buckets, estimate)
    return f"{format_duration(pruned)} pruned ({format_duration(estimate.seconds)} unpruned)"


def _long_run_warning(definition, options) -> str | None:
    """A sentence when the sweep's estimate on this device (pruned, with rules) is long (more
    than :data:`coordjax.sweep.rates.LONG_SECONDS`), else None."""
    from coordjax.sweep.dry_run import pruned_estimate
    from coordjax.sweep.planner import plan
    from coordjax.sweep.rates import LONG_SECONDS, estimate_seconds, long_run_warning

    try:
        estimate = estimate_seconds(definition, options)
    except ValueError:  # a sweep this device cannot estimate
        return None
    seconds, how = estimate.seconds, ""
    if definition.rules():
        buckets = plan(definition.expand(), experiment=definition.experiment,
                       max_models=options.max_models, pad=options.pad)  # fmt: skip
        *_, seconds = pruned_estimate(definition, buckets, estimate)
        how = "with its pruning"
    if seconds <= LONG_SECONDS:
        return None
    return f"{long_run_warning(seconds, estimate.device_kind, how)} (a rerun resumes)"


def _lower(args) -> str:
    """Per bucket of the preset: its program's convolutions and dots on ``--platform``."""
    from coordjax import sweep as sw
    from coordjax.sweep.target import lowered_chunk, ops_summary, program_ops, target_lowering

    module = _load_sweep_module(args.name)
    definition = _build_preset(module, args.name, args.preset)
    try:
        definition = sw.customize(definition, only=args.only)
        buckets = sw.plan(definition.expand(), experiment=definition.experiment)
    except (ValueError, TypeError) as err:
        raise UsageError(f"preset {args.preset!r}: {_flag_names(err)}") from err
    lines = [f"{args.name} --preset {args.preset} on {args.platform} (lowering "
             f"{target_lowering(args.platform)}, 2 vmapped models per program; convs by "
             "lhs_dilate are transposed):"]  # fmt: skip
    for bucket in buckets:
        ops = program_ops(lowered_chunk(bucket, args.platform).as_text())
        lines.append(f"  {bucket.bucket_id:<34} {ops_summary(ops)}")
    return "\n".join(lines)


def _status(args) -> str:
    import json

    from coordjax.sweep.status import status_text, sweep_status
    from coordjax.sweep.workdir import WorkdirError

    stale_after = _stale_after(args)
    try:
        status = sweep_status(args.workdir, stale_after=stale_after)
    except WorkdirError as err:
        raise UsageError(str(err)) from err
    return json.dumps(status, indent=1) if args.json else status_text(status)


def _stale_after(args) -> float:
    """``--stale-after`` in seconds (the fan-out default when absent)."""
    from coordjax.sweep import fanout

    if args.stale_after is None:
        return fanout.DEFAULT_STALE_AFTER_S
    if not args.stale_after > 0:
        raise UsageError(f"--stale-after must be > 0 seconds; got {args.stale_after!r}")
    return args.stale_after


def _task_slot(args):
    """The fan-out task from the flags or the scheduler's environment (None: one process)."""
    from coordjax.sweep import fanout

    try:
        slot = fanout.task_slot(args.task_index, args.task_count)
    except fanout.FanOutError as err:
        raise UsageError(str(err).replace("task_index", "--task-index")
                         .replace("task_count", "--task-count")) from err  # fmt: skip
    if slot is not None and args.distributed:
        raise UsageError("--distributed (processes in lockstep) cannot be combined with a task "
                         f"index (from {slot.source}); use one or the other")  # fmt: skip
    _stale_after(args)
    if args.stale_after is not None and slot is None:
        raise UsageError("--stale-after applies to a fanned-out sweep: pass --task-index and "
                         "--task-count")  # fmt: skip
    if args.extend and args.restart:
        raise UsageError("--extend (keep the workdir's runs, add the new ones) cannot be combined "
                         "with --restart (move the workdir aside)")  # fmt: skip
    if slot is not None and args.restart:
        raise UsageError("--restart cannot be combined with a task index: other processes may be "
                         "using the workdir; move it aside yourself")  # fmt: skip
    return slot


def _export(args) -> str:
    """Writes one run's model (``coordjax.sweep.export``); returns what it wrote."""
    from coordjax.sweep import export

    if (args.run_id is None) == (args.best is None):
        raise UsageError("export takes a RUN_ID or --best METRIC (one of them)")
    try:
        if args.best is not None:
            run_id = export.best_finished_run(args.workdir, args.best)
        else:
            run_id = args.run_id
        out = export.export_model(args.workdir, run_id, args.out)
    except ValueError as err:
        message = str(err)
        if message.startswith("metric "):
            message = "--best " + message
        raise UsageError(message) from err
    return f"{run_id} -> {out}"


def _callbacks(args) -> list:
    """The trackers the flags ask for (checked before the workdir is touched)."""
    from coordjax import sweep as sw

    callbacks = []
    try:
        if args.tensorboard:
            callbacks.append(sw.TensorBoard(args.tensorboard))
        if args.wandb:
            callbacks.append(sw.WandB(args.wandb))
    except (ImportError, ValueError) as err:
        flag = "--wandb" if "wandb" in str(err) else "--tensorboard"
        raise UsageError(f"{flag}: {err}") from err
    return callbacks


def _report(workdir: str) -> str:
    from coordjax import report

    try:
        return str(report.write_report(workdir))
    except report.ReportError as err:
        raise UsageError(str(err)) from err


def _sweep(args) -> int:
    # Everything is checked before the workdir is touched; what needs no sweep (flags, the
    # sweep file, the preset's name) before JAX is imported, which takes seconds.
    _check_sweep_name(args.name)
    _check_flag_values(args)
    slot = _task_slot(args)  # a fan-out, from the flags or the scheduler's environment
    if args.distributed:  # before anything touches a JAX backend
        import jax

        jax.distributed.initialize()
    where = args.name if args.name.endswith(".py") else f"sweep {args.name!r}"
    module = _load_sweep_module(args.name)
    _preset_function(module, args.name, args.preset)
    _check_prune_flags(args)
    if not args.dry_run and not args.workdir:
        raise UsageError("--workdir is required (unless --dry-run)")

    import jax

    from coordjax import sweep as sw
    from coordjax.sweep import dry_run, engine, memory

    definition = _build_preset(module, args.name, args.preset)
    try:
        definition = sw.customize(definition, seeds=args.seeds, only=args.only)
        definition = _with_prune_flags(definition, args)
        options = sw.EngineOptions(
            strategy=args.strategy,
            map_batch_size=args.map_batch_size,
            max_models=args.max_models,
            shard=not args.no_shard,
            progress=not args.no_progress,
            pad=tuple(k.strip() for k in args.pad.split(",") if k.strip()),
            lowering=args.lowering,
            device_memory=_device_memory(args.device_memory),
        )
        sw.plan(definition.expand(), experiment=definition.experiment,
                max_models=options.max_models, pad=options.pad)  # fmt: skip
        engine.check_rules(definition, definition.expand())
    except (ValueError, TypeError) as err:
        flagged = any(f is not None for f in (args.prune_at, args.prune_keep, args.prune_metric))
        message = _flag_names(err, prune_flags=flagged)
        raise UsageError(f"{where}, preset {args.preset!r}: {message}") from err
    if args.dry_run:
        try:
            print(dry_run.plan_text(definition, options))
        except memory.DoesNotFit as err:
            raise UsageError(f"--device-memory: {err}") from err
        return 0
    callbacks = _callbacks(args)
    fanned = {}
    if slot is not None:
        fanned = {"task": slot, "stale_after": _stale_after(args)}
        print(f"coordjax: task {slot.index} of {slot.count} (from {slot.source}) on workdir "
              f"{args.workdir}", file=sys.stderr)  # fmt: skip
    warning = _long_run_warning(definition, options)
    if warning:
        print(f"coordjax: WARNING: {warning}", file=sys.stderr)
    start = time.perf_counter()
    try:
        results = sw.run_sweep(
            definition, args.workdir, preset=args.preset, options=options, restart=args.restart,
            callbacks=callbacks, extend=args.extend, **fanned,
        )  # fmt: skip
    except sw.WorkdirError as err:
        raise UsageError(str(err)) from err
    except memory.DoesNotFit as err:
        raise UsageError(f"--device-memory: {err}") from err
    except OSError as err:  # the workdir's filesystem refused a write
        raise UsageError(f"workdir {args.workdir}: {err}") from err
    if jax.process_index() == 0:
        wall = time.perf_counter() - start
        path = None
        # Of a fanned-out sweep's processes (they finish together), the first to finish writes
        # the report; the others wait for it, and one of them writes it if that one dies.
        if not args.no_report:
            from coordjax import report
            from coordjax.sweep import fanout

            def write() -> str:
                return str(report.write_report(args.workdir))

            try:
                if slot is None:
                    path = write()
                else:
                    present = pathlib.Path(args.workdir, "report").is_dir
                    path = fanout.once_per_results(args.workdir, "report", write, present=present)
            except Exception as err:  # the results are saved; the report can be rerun alone
                print(f"coordjax: the report failed ({type(err).__name__}: {err}); rerun "
                      f"`coordjax report {args.workdir}`", file=sys.stderr)  # fmt: skip
        print(_summary(definition, args.workdir, results, wall, path))
        print(f"results: {args.workdir}/results.csv")
    return 0


def _device_memory(value: str | None) -> int | None:
    """``--device-memory`` in bytes: a size with a unit, or ``device`` (the reported limit)."""
    from coordjax.sweep import memory

    if value is None:
        return None
    if value == "device":
        import jax

        limit = memory.device_limit()
        if limit is None:
            raise UsageError(f"--device-memory device: {jax.devices()[0].platform} reports no "
                             "memory limit; give a size, e.g. 80GiB")  # fmt: skip
        return limit
    try:
        return memory.parse_bytes(value, "--device-memory")
    except ValueError as err:
        raise UsageError(f"--device-memory must be a size with a unit ({', '.join(memory.UNITS)}; "
                         f"e.g. 80GiB) or 'device'; got {value!r}") from err  # fmt: skip


def _summary(definition, workdir, results, wall: float, report: str | None) -> str:
    """The end-of-sweep lines: the paper's verdicts for its sweeps, else the best runs by the
    experiment's score."""
    if definition.experiment.name == "paper":
        from coordjax.paper.summary import summary_text

        return summary_text(results, wall_seconds=wall, report=report)
    from coordjax.sweep import workdir as wd
    from coordjax.sweep.results import scores_of, summary_text

    config = wd.read_config(workdir)
    groups = ["grid" if g == "family" else g for g in config.get("groups", ["grid"])]
    scores = scores_of(config["plan"])
    return summary_text(results, scores, by=groups, wall_seconds=wall, report=report)


def _check_flag_values(args) -> None:
    """The sweep flags whose values are wrong whatever the sweep (a one-line UsageError)."""
    for flag in ("seeds", "max_models", "map_batch_size"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            raise UsageError(f"--{flag.replace('_', '-')} must be a positive int; got {value!r}")
    if args.no_prune and any(
        f is not None for f in (args.prune_at, args.prune_keep, args.prune_metric)
    ):
        raise UsageError("--no-prune cannot be combined with --prune-at/-keep/-metric")
    _prune_at(args)


def _check_prune_flags(args) -> None:
    """``--prune-at`` and ``--prune-keep`` as a rule would take them (whatever the sweep)."""
    from coordjax.sweep.pruning import Prune  # pandas, not JAX

    keep = 1 / 3 if args.prune_keep is None else args.prune_keep
    try:
        Prune(at=_prune_at(args) or (1,), keep=keep)
    except ValueError as err:
        raise UsageError(_flag_names(err, prune_flags=True)) from err


def _prune_at(args) -> tuple[int, ...] | None:
    """``--prune-at`` as epochs (None when absent)."""
    if args.prune_at is None:
        return None
    try:
        return tuple(int(e) for e in args.prune_at.split(","))
    except ValueError:
        raise UsageError(
            f"--prune-at must be comma-separated epochs, e.g. 25,50,100; got {args.prune_at!r}"
        ) from None


def _with_prune_flags(definition, args):
    """The sweep with the rule the ``--prune-*`` flags say (they override the sweep's)."""
    from coordjax import sweep as sw
    from coordjax.sweep.pruning import DEFAULT_GROUP_BY

    flags = (args.prune_at, args.prune_keep, args.prune_metric)
    if args.no_prune:
        return sw.customize(definition, prune=None)
    if all(f is None for f in flags):
        return definition
    rules = list(dict.fromkeys(definition.rules().values()))
    base = rules[0] if len(rules) == 1 else None
    if args.prune_at is not None:
        at = _prune_at(args)
    elif base is not None:
        at = base.at
    else:
        raise UsageError("--prune-keep and --prune-metric need --prune-at (the sweep has no "
                         "single rule to adjust)")  # fmt: skip
    rule = sw.Prune(
        at=at,
        keep=args.prune_keep if args.prune_keep is not None else (base.keep if base else 1 / 3),
        metric=args.prune_metric if args.prune_metric is not None else (base and base.metric),
        group_by=base.group_by if base else DEFAULT_GROUP_BY,
    )
    return sw.customize(definition, prune=rule)


# Library errors name keyword arguments; at the command line the flag is what the user typed.
_FLAGS = {
    "seeds must": "--seeds must",
    "only=": "--only ",
    "max_models must": "--max-models must",
    "map_batch_size must": "--map-batch-size must",
    "pad may name": "--pad may name",
    "pad must": "--pad must",
    "strategy must": "--strategy must",
}


def _flag_names(err: BaseException, prune_flags: bool = False) -> str:
    message = str(err)
    for name, flag in _FLAGS.items():
        if message.startswith(name):
            return flag + message[len(name) :]
    for key in ("at", "keep", "metric"):  # the rule's keys, when --prune-* set them
        if prune_flags:
            message = message.replace(f"prune.{key} ", f"--prune-{key} ")
    return message


if __name__ == "__main__":
    sys.exit(main())

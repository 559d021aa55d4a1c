"""The ``coordjax`` command line. It parses arguments and calls the library; no logic lives here.

coordjax sweep NAME --preset PRESET --workdir DIR [--dry-run] [--restart] [--seeds N] ...
coordjax list
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import logging
import pathlib
import sys
import time

from coordjax import catalog


def _load_sweep_module(name: str):
    """A catalog sweep by name, or a user's sweep file (a .py path defining PRESETS)."""
    if name.endswith(".py"):
        path = pathlib.Path(name)
        if not path.is_file():
            raise SystemExit(f"coordjax: sweep file {name!r} does not exist")
        spec = importlib.util.spec_from_file_location(f"coordjax_user_sweep_{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        if not isinstance(getattr(module, "PRESETS", None), dict):
            raise SystemExit(f"coordjax: sweep file {name!r} defines no PRESETS dict")
        return module
    if name not in catalog.SWEEPS:
        raise SystemExit(
            f"coordjax: unknown sweep {name!r}; choose from {list(catalog.SWEEPS)} "
            "or pass a path to a .py file defining PRESETS"
        )
    return importlib.import_module(f"coordjax.catalog.{name}")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="coordjax", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    sweep = sub.add_parser("sweep", help="run (or resume) a sweep into a workdir")
    sweep.add_argument("name", help=f"one of {list(catalog.SWEEPS)}, or a .py file with PRESETS")
    sweep.add_argument("--preset", default="smoke", help="which grid of the sweep (default smoke)")
    sweep.add_argument("--workdir", help="where config, results and checkpoints live")
    sweep.add_argument("--dry-run", action="store_true", help="print the plan and exit")
    sweep.add_argument(
        "--restart",
        action="store_true",
        help="move a workdir holding a different sweep aside and start over",
    )
    sweep.add_argument("--seeds", type=int, help="replace the seed axis by seeds 0..N-1")
    sweep.add_argument("--only", help="keep runs whose grid name contains this string")
    sweep.add_argument(
        "--strategy",
        default="auto",
        choices=("auto", "vmap", "map", "tune"),
        help="how a bucket's model axis is lowered: auto (default) is a fixed rule per platform "
        "and models per device; tune times vmap against map per bucket (load-dependent). The "
        "choice is recorded in the workdir and reused on resume",
    )
    sweep.add_argument(
        "--map-batch-size", type=int, default=4, help="models per lax.map slice with --strategy map"
    )
    sweep.add_argument("--max-models", type=int, help="at most this many models per program")
    sweep.add_argument(
        "--pad",
        default="",
        help="comma-separated shape axes (filter_size, channel_mult) to serve by padding: one "
        "program per group trains its largest model and the smaller ones exactly inside it",
    )
    sweep.add_argument(
        "--no-shard", action="store_true", help="do not shard the model axis over local devices"
    )
    sweep.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    sweep.add_argument(
        "--distributed",
        action="store_true",
        help="call jax.distributed.initialize() first (multi-host runs)",
    )

    sub.add_parser("list", help="list sweeps and their presets")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(format="%(message)s")
    logging.getLogger("coordjax").setLevel(logging.INFO)
    if args.command == "list":
        for name in catalog.SWEEPS:
            module = _load_sweep_module(name)
            print(f"{name}: presets {', '.join(module.PRESETS)}")
        return 0
    return _sweep(args)


def _sweep(args) -> int:
    import jax

    from coordjax import sweep as sw
    from coordjax.sweep import dry_run

    if args.distributed:
        jax.distributed.initialize()
    module = _load_sweep_module(args.name)
    if args.preset not in module.PRESETS:
        raise SystemExit(
            f"coordjax: unknown preset {args.preset!r} for sweep {args.name!r}; "
            f"choose from {list(module.PRESETS)}"
        )
    definition = sw.customize(module.PRESETS[args.preset](), seeds=args.seeds, only=args.only)
    try:
        options = sw.EngineOptions(
            strategy=args.strategy,
            map_batch_size=args.map_batch_size,
            max_models=args.max_models,
            shard=not args.no_shard,
            progress=not args.no_progress,
            pad=tuple(k.strip() for k in args.pad.split(",") if k.strip()),
        )
    except ValueError as err:
        raise SystemExit(f"coordjax: {err}") from None
    if args.dry_run:
        print(dry_run.plan_text(definition, options))
        return 0
    if not args.workdir:
        raise SystemExit("coordjax: --workdir is required (unless --dry-run)")
    start = time.perf_counter()
    try:
        results = sw.run_sweep(
            definition, args.workdir, preset=args.preset, options=options, restart=args.restart
        )
    except sw.WorkdirError as err:
        raise SystemExit(f"coordjax: {err}") from None
    if jax.process_index() == 0:
        print(sw.summary_text(results, wall_seconds=time.perf_counter() - start))
        print(f"results: {args.workdir}/results.csv")
    return 0


if __name__ == "__main__":
    sys.exit(main())

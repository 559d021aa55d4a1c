"""What every benchmark report records (device, versions, command) and where it is written.

Imported by the scripts in this folder (``python benchmarks/<name>.py`` puts the folder on the
path); not part of the package.
"""

from __future__ import annotations

import datetime
import os
import pathlib
import re
import shlex
import sys

import flax
import jax
import jaxlib
import optax


def command_line() -> str:
    """The command as run, with the JAX environment variables that change what it measures."""
    env = [
        f"{k}={shlex.quote(os.environ[k])}"
        for k in ("JAX_PLATFORMS", "XLA_FLAGS")
        if k in os.environ
    ]
    return " ".join([*env, shlex.join([sys.executable, *sys.argv])])


def environment_lines(title: str) -> list[str]:
    """A report's title and its date, device, CPU load, versions and command lines."""
    devices = jax.devices()
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
    return [
        f"# {title}",
        "",
        f"- date: {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}",
        f"- device: {devices[0].device_kind} (platform {devices[0].platform}, "
        f"{len(devices)} device(s)); CPUs: {os.cpu_count()}; load average at start: {load}",
        f"- versions: jax {jax.__version__}, jaxlib {jaxlib.__version__}, "
        f"flax {flax.__version__}, optax {optax.__version__}, Python {sys.version.split()[0]}",
        f"- command: `{command_line()}`",
    ]


def output_path(out_dir: pathlib.Path, name: str) -> pathlib.Path:
    """``out_dir/<name>-<device_kind>.md`` with the device kind made filename-safe."""
    kind = re.sub(r"[^a-z0-9._-]+", "-", jax.devices()[0].device_kind.lower()).strip("-")
    return out_dir / f"{name}-{kind or 'unknown'}.md"


def write_report(out_dir: pathlib.Path, name: str, report: str) -> None:
    """Writes the report to :func:`output_path` and prints it (with where it went)."""
    path = output_path(out_dir, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(report)
    print(report)
    print(f"wrote {path}")

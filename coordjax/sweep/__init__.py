"""Sweeps: grids as data, a planner that buckets by shape, and the vmapped, resumable engine."""

from coordjax.sweep.checkpoints import load_run as load_run
from coordjax.sweep.engine import EngineOptions as EngineOptions
from coordjax.sweep.engine import SweepInterrupted as SweepInterrupted
from coordjax.sweep.engine import run_sweep as run_sweep
from coordjax.sweep.grid import DEFAULTS as DEFAULTS
from coordjax.sweep.grid import Grid as Grid
from coordjax.sweep.grid import Sweep as Sweep
from coordjax.sweep.grid import customize as customize
from coordjax.sweep.grid import run_id as run_id
from coordjax.sweep.grid import union as union
from coordjax.sweep.planner import STATIC_KEYS as STATIC_KEYS
from coordjax.sweep.planner import VMAPPED_KEYS as VMAPPED_KEYS
from coordjax.sweep.planner import Bucket as Bucket
from coordjax.sweep.planner import plan as plan
from coordjax.sweep.summary import summary_text as summary_text
from coordjax.sweep.workdir import WorkdirError as WorkdirError

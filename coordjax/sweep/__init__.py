"""Sweeps: grids as data, a planner that buckets by shape, and the vmapped, resumable engine.

Names load on first use (PEP 562): reading a workdir (``load_run``, ``summary_text``) does not
import the engine or the training step.
"""

from coordjax._lazy import lazy_names

_NAMES = {
    "load_run": "coordjax.sweep.workdir",
    "export_run": "coordjax.sweep.workdir",
    "EngineOptions": "coordjax.sweep.options",
    "run_sweep": "coordjax.sweep.engine",
    "run_study": "coordjax.sweep.ask_tell",
    "SweepInterrupted": "coordjax.sweep.trainer",
    "Experiment": "coordjax.sweep.experiment",
    "Key": "coordjax.sweep.experiment",
    "Score": "coordjax.sweep.experiment",
    "Recipe": "coordjax.sweep.experiment",
    "Padding": "coordjax.sweep.experiment",
    "STATIC": "coordjax.sweep.experiment",
    "supervised": "coordjax.sweep.from_arrays",
    "ArrayData": "coordjax.sweep.from_arrays",
    "array_data": "coordjax.sweep.from_arrays",
    "VMAPPED": "coordjax.sweep.experiment",
    "Grid": "coordjax.sweep.grid",
    "Sweep": "coordjax.sweep.grid",
    "customize": "coordjax.sweep.grid",
    "run_id": "coordjax.sweep.grid",
    "union": "coordjax.sweep.grid",
    "Prune": "coordjax.sweep.pruning",
    "LogUniform": "coordjax.sweep.space",
    "Uniform": "coordjax.sweep.space",
    "Choice": "coordjax.sweep.space",
    "Bucket": "coordjax.sweep.planner",
    "plan": "coordjax.sweep.planner",
    "summary_text": "coordjax.sweep.results",
    "best_runs": "coordjax.sweep.results",
    "WorkdirError": "coordjax.sweep.workdir",
    "TaskSlot": "coordjax.sweep.fanout",
    "task_slot": "coordjax.sweep.fanout",
    "sweep_status": "coordjax.sweep.status",
    "Callback": "coordjax.sweep.callbacks",
    "SweepStart": "coordjax.sweep.callbacks",
    "Evaluation": "coordjax.sweep.callbacks",
    "Rung": "coordjax.sweep.callbacks",
    "TensorBoard": "coordjax.sweep.trackers",
    "WandB": "coordjax.sweep.trackers",
    "export_model": "coordjax.sweep.export",
    "load_export": "coordjax.sweep.export",
    "best_finished_run": "coordjax.sweep.export",
}
__all__ = list(_NAMES)

__getattr__, __dir__ = lazy_names(__name__, _NAMES, globals())

"""The supervised training recipe as pure, vmappable functions, and a single-model ``fit``.

Names load on first use (PEP 562): a module that needs one piece (the paper's models need the
L2 mask, its tasks the ``Task`` type) does not import the training step, and reading a workdir
never does.
"""

from coordjax._lazy import lazy_names

_NAMES = {
    "LinenModel": "coordjax.train.adapters",
    "PureModel": "coordjax.train.adapters",
    "as_model": "coordjax.train.adapters",
    "nnx_model": "coordjax.train.adapters",
    "DeviceData": "coordjax.train.data",
    "SplitIndices": "coordjax.train.data",
    "sides_indices": "coordjax.train.data",
    "stack_splits": "coordjax.train.data",
    "all_finite": "coordjax.train.guard",
    "keep_if_finite": "coordjax.train.guard",
    "FitResult": "coordjax.train.single",
    "fit": "coordjax.train.single",
    "Hparams": "coordjax.train.hparams",
    "learning_rate": "coordjax.train.hparams",
    "make_hparams": "coordjax.train.hparams",
    "stack_hparams": "coordjax.train.hparams",
    "RunSpec": "coordjax.train.step",
    "TrainSetup": "coordjax.train.step",
    "TrainState": "coordjax.train.step",
    "apply_mask": "coordjax.train.step",
    "chunk_lengths": "coordjax.train.step",
    "evaluate": "coordjax.train.step",
    "init_state": "coordjax.train.step",
    "steps_per_epoch": "coordjax.train.step",
    "train_chunk": "coordjax.train.step",
    "train_epoch": "coordjax.train.step",
    "train_step": "coordjax.train.step",
    "Task": "coordjax.train.task",
}
__all__ = list(_NAMES)

__getattr__, __dir__ = lazy_names(__name__, _NAMES, globals())

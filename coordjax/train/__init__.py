"""The supervised training recipe as pure, vmappable functions, and a single-model ``fit``."""

from coordjax.train.adapters import LinenModel as LinenModel
from coordjax.train.adapters import PureModel as PureModel
from coordjax.train.adapters import as_model as as_model
from coordjax.train.adapters import nnx_model as nnx_model
from coordjax.train.data import DeviceData as DeviceData
from coordjax.train.data import SplitIndices as SplitIndices
from coordjax.train.data import sides_indices as sides_indices
from coordjax.train.data import stack_splits as stack_splits
from coordjax.train.fit import FitResult as FitResult
from coordjax.train.fit import fit as fit
from coordjax.train.hparams import Hparams as Hparams
from coordjax.train.hparams import learning_rate as learning_rate
from coordjax.train.hparams import make_hparams as make_hparams
from coordjax.train.hparams import stack_hparams as stack_hparams
from coordjax.train.step import RunSpec as RunSpec
from coordjax.train.step import TrainSetup as TrainSetup
from coordjax.train.step import TrainState as TrainState
from coordjax.train.step import apply_mask as apply_mask
from coordjax.train.step import chunk_lengths as chunk_lengths
from coordjax.train.step import evaluate as evaluate
from coordjax.train.step import init_state as init_state
from coordjax.train.step import steps_per_epoch as steps_per_epoch
from coordjax.train.step import train_chunk as train_chunk
from coordjax.train.step import train_epoch as train_epoch
from coordjax.train.step import train_step as train_step
from coordjax.train.task import Task as Task

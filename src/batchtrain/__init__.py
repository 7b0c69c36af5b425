"""batchtrain: mini-batch training of PyTorch models, Keras-style, from Python or one command."""
__version__ = "0.1.0"

from batchtrain.batching import (  # noqa: E402
    BatchSizePolicy, Doubling, Fixed, Piecewise, Ramp, Schedule, StepStats)
from batchtrain.callbacks import (  # noqa: E402
    Callback, Checkpoint, EarlyStopping, MetricsLogger, ModelCheckpoint, Plotter, ProgressBar,
    ReduceLROnPlateau, TensorBoard)
from batchtrain.checkpointing.files import CheckpointError  # noqa: E402
from batchtrain.data.builtin import load_dataset  # noqa: E402
from batchtrain.errors import BatchTrainError, ConfigError, DataError, DatasetNotFoundError  # noqa: E402
from batchtrain.state import History  # noqa: E402
from batchtrain.errors import NonFiniteError, TrainingInterrupted  # noqa: E402
from batchtrain.models import ModelSpec  # noqa: E402
from batchtrain.optim.schedules import Constant, Cosine, OneCycle, Step, Warmup  # noqa: E402
from batchtrain.trainer import Trainer  # noqa: E402

__all__ = [
    "BatchSizePolicy", "BatchTrainError", "Callback", "Checkpoint", "CheckpointError", "ConfigError", "Constant", "Cosine",
    "DataError", "DatasetNotFoundError", "Doubling", "EarlyStopping", "Fixed", "History",
    "MetricsLogger", "ModelCheckpoint", "ModelSpec", "NonFiniteError", "OneCycle", "Piecewise",
    "Plotter", "ProgressBar", "Ramp", "ReduceLROnPlateau", "Schedule", "Step", "StepStats",
    "TensorBoard", "Trainer", "TrainingInterrupted", "Warmup", "__version__", "load_dataset",
]

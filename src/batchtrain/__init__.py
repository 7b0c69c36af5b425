"""batchtrain: mini-batch training of PyTorch models, Keras-style, from Python or one command."""
__version__ = "0.1.0"

from batchtrain.callbacks import Callback, MetricsLogger, Plotter, ProgressBar  # noqa: E402
from batchtrain.data.builtin import load_dataset  # noqa: E402
from batchtrain.errors import BatchTrainError, ConfigError, DataError, DatasetNotFoundError  # noqa: E402
from batchtrain.history import History  # noqa: E402
from batchtrain.models import ModelSpec  # noqa: E402
from batchtrain.trainer import Trainer  # noqa: E402

__all__ = [
    "BatchTrainError", "Callback", "ConfigError", "DataError", "DatasetNotFoundError", "History",
    "MetricsLogger", "ModelSpec", "Plotter", "ProgressBar", "Trainer", "__version__", "load_dataset",
]

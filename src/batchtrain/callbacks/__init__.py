"""Callbacks: progress, run logs, plots, checkpoints, early stopping, best-model saving, the
learning rate on a plateau and TensorBoard, behind the five-hook protocol in base.py."""
from batchtrain.callbacks.base import Callback, CallbackList, FitInfo
from batchtrain.callbacks.best_model import ModelCheckpoint
from batchtrain.callbacks.checkpointing import Checkpoint
from batchtrain.callbacks.early_stopping import EarlyStopping
from batchtrain.callbacks.logs import MetricsLogger
from batchtrain.callbacks.plateau import ReduceLROnPlateau
from batchtrain.callbacks.plots import Plotter, plot_history
from batchtrain.callbacks.progress import ProgressBar
from batchtrain.callbacks.tensorboard import TensorBoard

__all__ = ["Callback", "CallbackList", "Checkpoint", "EarlyStopping", "FitInfo", "MetricsLogger",
           "ModelCheckpoint", "Plotter", "ProgressBar", "ReduceLROnPlateau", "TensorBoard",
           "plot_history"]

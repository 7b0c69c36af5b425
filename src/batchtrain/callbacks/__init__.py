"""Callbacks: progress, run logs and plots, behind the five-hook protocol in base.py."""
from batchtrain.callbacks.base import Callback, CallbackList, FitInfo
from batchtrain.callbacks.checkpointing import Checkpoint
from batchtrain.callbacks.logs import MetricsLogger
from batchtrain.callbacks.plots import Plotter, plot_history
from batchtrain.callbacks.progress import ProgressBar

__all__ = ["Callback", "CallbackList", "Checkpoint", "FitInfo", "MetricsLogger", "Plotter", "ProgressBar",
           "plot_history"]

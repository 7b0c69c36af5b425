"""ReduceLROnPlateau: lower the learning rate when the monitored quantity stops improving."""
import sys

from batchtrain.callbacks.base import Callback, FitInfo, is_main_process
from batchtrain.callbacks.early_stopping import epochs
from batchtrain.callbacks.monitor import (check_count, check_monitor, check_number,
                                          check_saved_monitor, direction, improves, monitored)
from batchtrain.errors import ConfigError


class ReduceLROnPlateau(Callback):
    """Keras' ReduceLROnPlateau (arguments in Keras' order), as a factor on batchtrain's
    learning-rate control.

    monitor: "val_loss" (default) or another quantity of the epoch's logs (monitor.py).
    factor: the lr is multiplied by this (in (0, 1); default 0.1) after `patience` epochs
        (default 10) without an improvement larger than min_delta (default 1e-4, absolute).
    verbose: print a line at each reduction (rank 0 only; default on, Keras' 0).
    mode: "auto", "min" or "max". cooldown: epochs after a reduction before epochs count again
        (Keras' counting: the epoch that ends the cooldown already counts).
    min_lr: the plateau factor never takes the lr below this (default 0); at it, no more
        reductions. A NaN is never an improvement.

    The lr of a step is base lr x batch-size coupling x sample-keyed schedule x plateau factor
    (batching/coupling.py LearningRate): the factor scales the other two and never replaces them,
    so a schedule keeps its shape and a growing batch (auto) keeps raising the lr by its coupling,
    from the reduced level. The factor is in the lr control's state, the patience and cooldown
    counters in this callback's: both are saved in checkpoints. A later fit() of the same trainer
    keeps the factor (as Keras keeps the lowered lr).
    """

    def __init__(self, monitor: str = "val_loss", factor: float = 0.1, patience: int = 10,
                 verbose: bool | int = True, mode: str = "auto", min_delta: float = 1e-4,
                 cooldown: int = 0, min_lr: float = 0.0):
        self.monitor = monitor
        self.factor = factor
        self.patience = patience
        self.verbose = verbose
        self.mode = mode
        self.min_delta = min_delta
        self.cooldown = cooldown
        self.min_lr = min_lr

    def check(self, who: str = "ReduceLROnPlateau") -> None:
        """ConfigError for an argument out of range (fit begin; the CLI before reading data)."""
        self.factor_ = check_number(who, "factor", self.factor)
        if not 0 < self.factor_ < 1:
            raise ConfigError(f"{who} factor must be in (0, 1), got {self.factor!r}")
        self.patience_ = check_count(who, "patience", self.patience)
        self.cooldown_ = check_count(who, "cooldown", self.cooldown)
        self.min_delta_ = abs(check_number(who, "min_delta", self.min_delta))
        self.min_lr_ = check_number(who, "min_lr", self.min_lr)
        if self.min_lr_ < 0:
            raise ConfigError(f"{who} min_lr must be a number >= 0, got {self.min_lr!r}")
        self.direction_ = direction(self.monitor, self.mode)

    def on_fit_begin(self, trainer, info: FitInfo) -> None:
        check_monitor("ReduceLROnPlateau", self.monitor, getattr(trainer, "metric_names_", ()),
                      info.validation_samples)
        self.check()
        self.best_: float | None = None
        self.wait_ = 0
        self.cooldown_counter_ = 0
        self.reductions_ = 0
        self.main_ = is_main_process(trainer)

    def on_epoch_end(self, trainer, epoch: int, logs: dict) -> None:
        current = monitored(logs, self.monitor)
        if self.cooldown_counter_ > 0:
            self.cooldown_counter_ -= 1
            self.wait_ = 0
        if improves(current, self.best_, self.direction_, self.min_delta_):
            self.best_, self.wait_ = current, 0
            return
        if self.cooldown_counter_ > 0:
            return
        self.wait_ += 1
        lr_control = trainer.state_.lr_control
        if self.wait_ >= self.patience_ and lr_control.reduce(self.factor_, self.min_lr_):
            waited, self.cooldown_counter_, self.wait_ = self.wait_, self.cooldown_, 0
            self.reductions_ += 1
            if self.verbose and self.main_:
                since = f" on {self.best_:.6g}" if self.best_ is not None else ""
                print(f"ReduceLROnPlateau: {self.monitor} has not improved{since} for "
                      f"{epochs(waited)} (epoch {epoch + 1}): lr x{self.factor_:g}, the plateau "
                      f"factor now {lr_control.plateau:.6g} (lr at least {self.min_lr_:g})",
                      file=sys.stderr, flush=True)

    def state_dict(self) -> dict:
        return {"monitor": self.monitor, "best": self.best_, "wait": self.wait_,
                "cooldown_counter": self.cooldown_counter_, "reductions": self.reductions_}

    def load_state_dict(self, state: dict) -> None:
        check_saved_monitor("ReduceLROnPlateau", state, self.monitor)
        self.best_, self.wait_ = state["best"], int(state["wait"])
        self.cooldown_counter_, self.reductions_ = int(state["cooldown_counter"]), int(state["reductions"])

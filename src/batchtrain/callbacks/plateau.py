"""ReduceLROnPlateau: lower the learning rate when the monitored quantity stops improving."""
import sys

from batchtrain.callbacks.base import Callback, FitInfo, is_main_process
from batchtrain.callbacks.early_stopping import epochs
from batchtrain.callbacks.monitor import check_monitor, direction, improves, monitored
from batchtrain.errors import ConfigError


class ReduceLROnPlateau(Callback):
    """Keras' ReduceLROnPlateau, as a factor on batchtrain's learning-rate control.

    monitor: "val_loss" (default) or another quantity of the epoch's logs (monitor.py).
    factor: the lr is multiplied by this (in (0, 1); default 0.1) after `patience` epochs
        (default 10) without an improvement larger than min_delta (default 1e-4, absolute).
    mode: "auto", "min" or "max". cooldown: epochs after a reduction before epochs count again.
    min_lr: the plateau factor never takes the lr below this (default 0).
    verbose: print a line at each reduction (rank 0 only).

    The lr of a step is base lr x batch-size coupling x sample-keyed schedule x plateau factor
    (batching/coupling.py LearningRate): the factor scales the other two and never replaces them,
    so a schedule keeps its shape and a growing batch (auto) keeps raising the lr by its coupling,
    from the reduced level. The factor is in the lr control's state, the patience and cooldown
    counters in this callback's: both are saved in checkpoints.
    """

    def __init__(self, monitor: str = "val_loss", factor: float = 0.1, patience: int = 10,
                 mode: str = "auto", min_delta: float = 1e-4, cooldown: int = 0,
                 min_lr: float = 0.0, verbose: bool = True):
        self.monitor = monitor
        self.factor = factor
        self.patience = patience
        self.mode = mode
        self.min_delta = min_delta
        self.cooldown = cooldown
        self.min_lr = min_lr
        self.verbose = verbose

    def on_fit_begin(self, trainer, info: FitInfo) -> None:
        if not (isinstance(self.factor, (int, float)) and 0 < self.factor < 1):
            raise ConfigError(f"ReduceLROnPlateau factor must be in (0, 1), got {self.factor!r}")
        for name in ("patience", "cooldown"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(f"ReduceLROnPlateau {name} must be an integer >= 0, got {value!r}")
        for name in ("min_delta", "min_lr"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and 0 <= value < float("inf")):
                raise ConfigError(f"ReduceLROnPlateau {name} must be a number >= 0, got {value!r}")
        check_monitor("ReduceLROnPlateau", self.monitor, getattr(trainer, "metric_names_", ()),
                      info.validation_samples)
        self.direction_ = direction(self.monitor, self.mode)
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
        if improves(current, self.best_, self.direction_, self.min_delta):
            self.best_, self.wait_ = current, 0
            return
        if self.cooldown_counter_ > 0:
            return
        self.wait_ += 1
        if self.wait_ >= self.patience and trainer.state_.lr_control.reduce(self.factor, self.min_lr):
            self.cooldown_counter_, self.wait_ = self.cooldown, 0
            self.reductions_ += 1
            if self.verbose and self.main_:
                lr_control = trainer.state_.lr_control
                print(f"ReduceLROnPlateau: {self.monitor} has not improved on {self.best_:.6g} for "
                      f"{epochs(self.patience)} (epoch {epoch + 1}): lr x{self.factor:g}, the "
                      f"plateau factor now {lr_control.plateau:.6g} (lr at least {self.min_lr:g})",
                      file=sys.stderr, flush=True)

    def state_dict(self) -> dict:
        return {"best": self.best_, "wait": self.wait_, "cooldown_counter": self.cooldown_counter_,
                "reductions": self.reductions_}

    def load_state_dict(self, state: dict) -> None:
        self.best_, self.wait_ = state["best"], int(state["wait"])
        self.cooldown_counter_, self.reductions_ = int(state["cooldown_counter"]), int(state["reductions"])

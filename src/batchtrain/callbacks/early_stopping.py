"""EarlyStopping: stop at an epoch's end once the monitored quantity has stopped improving."""
import sys

from batchtrain.callbacks.base import Callback, FitInfo, is_main_process
from batchtrain.callbacks.monitor import (check_count, check_monitor, check_number,
                                          check_saved_monitor, direction, improves, monitored)


class EarlyStopping(Callback):
    """Keras' EarlyStopping, argument for argument and in Keras' order.

    monitor: "val_loss" (default), "loss", "accuracy", "val_accuracy", "val_mae" ... (monitor.py).
    min_delta: an improvement must exceed this (absolute, in the monitor's units; default 0).
    patience: epochs without improvement before the stop (default 0: the first epoch that does not
        improve stops, from the second epoch on, as in Keras).
    verbose: print a line when it stops and when it restores weights (rank 0 only; default on,
        where Keras' is 0). mode: "auto" (from the name), "min" or "max".
    baseline: a value the monitor must beat: until it does, the patience runs out from the first
        monitored epoch (None: no baseline).
    restore_best_weights: the model ends fit() with the weights of the best epoch (as in Keras,
        also when training ran to its last epoch; the weights are kept on the CPU).
    start_from_epoch: epochs (from the first, 0-based count) to train before monitoring begins.
    A NaN is never an improvement (in Keras a NaN first epoch becomes the best, and nothing beats
    it after).

    The state (best value and epoch, epochs waited, the stop, the best weights) is saved in
    checkpoints: a resumed run stops at the epoch the uninterrupted one stopped at, and one
    resumed after the stop stops at once.
    """

    def __init__(self, monitor: str = "val_loss", min_delta: float = 0.0, patience: int = 0,
                 verbose: bool | int = True, mode: str = "auto", baseline: float | None = None,
                 restore_best_weights: bool = False, start_from_epoch: int = 0):
        self.monitor = monitor
        self.min_delta = min_delta
        self.patience = patience
        self.verbose = verbose
        self.mode = mode
        self.baseline = baseline
        self.restore_best_weights = restore_best_weights
        self.start_from_epoch = start_from_epoch

    def check(self, who: str = "EarlyStopping") -> None:
        """ConfigError for an argument out of range (fit begin; the CLI before reading data)."""
        self.patience_ = check_count(who, "patience", self.patience)
        self.start_from_epoch_ = check_count(who, "start_from_epoch", self.start_from_epoch)
        self.min_delta_ = abs(check_number(who, "min_delta", self.min_delta))
        self.baseline_ = check_number(who, "baseline", self.baseline, allow_none=True)
        self.direction_ = direction(self.monitor, self.mode)

    def on_fit_begin(self, trainer, info: FitInfo) -> None:
        check_monitor("EarlyStopping", self.monitor, getattr(trainer, "metric_names_", ()),
                      info.validation_samples)
        self.check()
        self.wait_ = 0
        self.best_: float | None = None
        self.best_epoch_ = 0
        self.best_weights_: dict | None = None
        self.stopped_epoch_ = 0
        self.main_ = is_main_process(trainer)

    def on_epoch_end(self, trainer, epoch: int, logs: dict) -> None:
        if epoch < self.start_from_epoch_:
            return
        current = monitored(logs, self.monitor)
        if self.restore_best_weights and self.best_weights_ is None:
            self._keep_weights(trainer, epoch)  # until one improves, the first monitored epoch's
        self.wait_ += 1
        if improves(current, self.best_, self.direction_, self.min_delta_):
            self.best_, self.best_epoch_ = current, epoch
            if self.restore_best_weights:
                self._keep_weights(trainer, epoch)
            if self.baseline_ is None or improves(current, self.baseline_, self.direction_,
                                                  self.min_delta_):
                self.wait_ = 0
            return
        if self.wait_ >= self.patience_ and epoch > 0:
            self.stopped_epoch_ = epoch
            trainer.stop_training = True
            since = (f" on {self.best_:.6g} (epoch {self.best_epoch_ + 1})"
                     if self.best_ is not None else "")
            self._say(f"early stopping after epoch {epoch + 1}: {self.monitor} has not improved"
                      f"{since} for {epochs(self.wait_)}")

    def on_fit_end(self, trainer, history) -> None:
        if self.restore_best_weights and self.best_weights_ is not None:
            trainer.model_.load_state_dict(self.best_weights_)
            value = f" (best {self.monitor} {self.best_:.6g})" if self.best_ is not None else ""
            self._say(f"restored the weights of epoch {self.best_epoch_ + 1}{value}")

    def _keep_weights(self, trainer, epoch: int) -> None:
        self.best_weights_ = {name: tensor.detach().to("cpu", copy=True)
                              for name, tensor in trainer.model_.state_dict().items()}
        self.best_epoch_ = epoch

    def _say(self, line: str) -> None:
        if self.verbose and self.main_:
            print(f"EarlyStopping: {line}", file=sys.stderr, flush=True)

    def state_dict(self) -> dict:
        return {"monitor": self.monitor, "wait": self.wait_, "best": self.best_,
                "best_epoch": self.best_epoch_, "stopped_epoch": self.stopped_epoch_,
                "best_weights": self.best_weights_}

    def load_state_dict(self, state: dict) -> bool:
        check_saved_monitor("EarlyStopping", state, self.monitor)
        self.wait_, self.best_ = int(state["wait"]), state["best"]
        self.best_epoch_, self.stopped_epoch_ = int(state["best_epoch"]), int(state["stopped_epoch"])
        self.best_weights_ = state["best_weights"]
        return self.stopped_epoch_ > 0  # it had stopped the run: the resumed fit stops at once


def epochs(count: int) -> str:
    return f"{count} epoch" if count == 1 else f"{count} epochs"

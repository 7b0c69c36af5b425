"""EarlyStopping: stop at an epoch's end once the monitored quantity has stopped improving."""
import sys

from batchtrain.callbacks.base import Callback, FitInfo, is_main_process
from batchtrain.callbacks.monitor import check_monitor, direction, improves, monitored
from batchtrain.errors import ConfigError


class EarlyStopping(Callback):
    """Keras' EarlyStopping, argument for argument.

    monitor: "val_loss" (default), "loss", "accuracy", "val_accuracy", "val_mae" ... (monitor.py).
    min_delta: an improvement must exceed this (absolute, in the monitor's units; default 0).
    patience: epochs without improvement before the stop (default 0: the first epoch that does not
        improve stops, from the second epoch on, as in Keras).
    mode: "auto" (from the name), "min" or "max". baseline: a value the monitor must beat: until
        it does, the patience runs out from the first epoch (None: no baseline).
    restore_best_weights: the model ends fit() with the weights of the best epoch (as in Keras,
        also when training ran to its last epoch; the weights are kept on the CPU).
    start_from_epoch: epochs (from the first, 0-based count) to train before monitoring begins.
    verbose: print a line when it stops and when it restores weights (rank 0 only).

    The state (best value and epoch, epochs waited, the best weights) is saved in checkpoints: a
    resumed run stops at the epoch the uninterrupted one would have stopped at.
    """

    def __init__(self, monitor: str = "val_loss", min_delta: float = 0.0, patience: int = 0,
                 mode: str = "auto", baseline: float | None = None,
                 restore_best_weights: bool = False, start_from_epoch: int = 0,
                 verbose: bool = True):
        self.monitor = monitor
        self.min_delta = min_delta
        self.patience = patience
        self.mode = mode
        self.baseline = baseline
        self.restore_best_weights = restore_best_weights
        self.start_from_epoch = start_from_epoch
        self.verbose = verbose

    def on_fit_begin(self, trainer, info: FitInfo) -> None:
        _check_count(self.patience, "patience")
        _check_count(self.start_from_epoch, "start_from_epoch")
        if not (isinstance(self.min_delta, (int, float)) and self.min_delta == self.min_delta):
            raise ConfigError(f"EarlyStopping min_delta must be a number, got {self.min_delta!r}")
        check_monitor("EarlyStopping", self.monitor, getattr(trainer, "metric_names_", ()),
                      info.validation_samples)
        self.direction_ = direction(self.monitor, self.mode)
        self.wait_ = 0
        self.best_: float | None = None
        self.best_epoch_ = 0
        self.best_weights_: dict | None = None
        self.stopped_epoch_ = 0
        self.main_ = is_main_process(trainer)

    def on_epoch_end(self, trainer, epoch: int, logs: dict) -> None:
        if epoch < self.start_from_epoch:
            return
        current = monitored(logs, self.monitor)
        if self.restore_best_weights and self.best_weights_ is None:
            self._keep_weights(trainer, epoch)  # until one improves, the first monitored epoch's
        self.wait_ += 1
        if improves(current, self.best_, self.direction_, abs(self.min_delta)):
            self.best_, self.best_epoch_ = current, epoch
            if self.restore_best_weights:
                self._keep_weights(trainer, epoch)
            if self.baseline is None or improves(current, self.baseline, self.direction_,
                                                 abs(self.min_delta)):
                self.wait_ = 0
            return
        if self.wait_ >= self.patience and epoch > 0:
            self.stopped_epoch_ = epoch
            trainer.stop_training = True
            self._say(f"early stopping after epoch {epoch + 1}: {self.monitor} has not improved "
                      f"on {self.best_:.6g} (epoch {self.best_epoch_ + 1}) for {epochs(self.wait_)}")

    def on_fit_end(self, trainer, history) -> None:
        if self.restore_best_weights and self.best_weights_ is not None:
            trainer.model_.load_state_dict(self.best_weights_)
            self._say(f"restored the weights of epoch {self.best_epoch_ + 1} (best {self.monitor} "
                      f"{self.best_:.6g})" if self.best_ is not None else
                      f"restored the weights of epoch {self.best_epoch_ + 1}")

    def _keep_weights(self, trainer, epoch: int) -> None:
        self.best_weights_ = {name: tensor.detach().to("cpu", copy=True)
                              for name, tensor in trainer.model_.state_dict().items()}
        self.best_epoch_ = epoch

    def _say(self, line: str) -> None:
        if self.verbose and self.main_:
            print(f"EarlyStopping: {line}", file=sys.stderr, flush=True)

    def state_dict(self) -> dict:
        return {"wait": self.wait_, "best": self.best_, "best_epoch": self.best_epoch_,
                "stopped_epoch": self.stopped_epoch_, "best_weights": self.best_weights_}

    def load_state_dict(self, state: dict) -> None:
        self.wait_, self.best_ = int(state["wait"]), state["best"]
        self.best_epoch_, self.stopped_epoch_ = int(state["best_epoch"]), int(state["stopped_epoch"])
        self.best_weights_ = state["best_weights"]


def epochs(count: int) -> str:
    return f"{count} epoch" if count == 1 else f"{count} epochs"


def _check_count(value, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"EarlyStopping {name} must be an integer >= 0, got {value!r}")

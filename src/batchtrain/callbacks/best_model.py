"""ModelCheckpoint: keep the model of the best epoch so far in its own directory (RUN/best/)."""
import json
import math
import sys
from pathlib import Path

from batchtrain.callbacks.base import Callback, FitInfo
from batchtrain.callbacks.monitor import (check_monitor, check_number, check_saved_monitor,
                                          direction, improves, monitored)
from batchtrain.checkpointing.fileio import (atomic_write, previous_directory, read_small_file,
                                             replace_directory, write_error)
from batchtrain.errors import ConfigError

BEST_DIR = "best"  # in a run directory: the best epoch's model (batchtrain evaluate RUN --best)
RECORD_FILE = "best.json"  # beside the model: which epoch, and its value
MAX_RECORD_BYTES = 4096


class ModelCheckpoint(Callback):
    """After each epoch whose monitored value is the best so far, write the model to `directory`
    (model.safetensors + model.json: what a finished run writes, so Trainer.load(directory) and
    `batchtrain evaluate RUN --best` read it) and best.json (monitor, value, epoch, step).

    Keras' ModelCheckpoint(filepath, monitor, verbose, save_best_only=True, mode=...,
    initial_value_threshold=...), without the file name template. The directory is replaced
    whole (checkpointing/fileio.py replace_directory): a crash leaves the previous best or the
    new one, never a mix. monitor, mode, min_delta: as EarlyStopping's (default "val_loss").
    initial_value_threshold: a value the first saved epoch must beat. As in Keras, the best so
    far carries over to the callback's next fit (a worse epoch of a later fit does not replace
    the model). It is saved in checkpoints; a resumed run also reads best.json, so a replayed
    epoch that comes out a little worse (not bit for bit on a GPU) does not replace the model.
    """

    main_process_only = True  # under DDP only rank 0 writes

    def __init__(self, directory: str | Path, monitor: str = "val_loss", verbose: bool | int = False,
                 mode: str = "auto", initial_value_threshold: float | None = None,
                 min_delta: float = 0.0):
        self.directory = Path(directory)
        self.monitor = monitor
        self.verbose = verbose
        self.mode = mode
        self.initial_value_threshold = initial_value_threshold
        self.min_delta = min_delta

    def check(self, who: str = "ModelCheckpoint") -> None:
        """ConfigError for an argument out of range (fit begin; the CLI before reading data)."""
        self.min_delta_ = abs(check_number(who, "min_delta", self.min_delta))
        self.threshold_ = check_number(who, "initial_value_threshold",
                                       self.initial_value_threshold, allow_none=True)
        self.direction_ = direction(self.monitor, self.mode)

    def on_fit_begin(self, trainer, info: FitInfo) -> None:
        check_monitor("ModelCheckpoint", self.monitor, getattr(trainer, "metric_names_", ()),
                      info.validation_samples)
        self.check()
        if not hasattr(self, "best_"):  # the first fit of this callback (Keras keeps it after)
            self.best_: float | None = self.threshold_
            self.best_epoch_: int | None = None
        if info.resumed_from:
            on_disk = self._recorded_best()
            if on_disk is not None and improves(on_disk, self.best_, self.direction_, 0.0):
                self.best_ = on_disk

    def on_epoch_end(self, trainer, epoch: int, logs: dict) -> None:
        current = monitored(logs, self.monitor)
        if not improves(current, self.best_, self.direction_, self.min_delta_):
            return
        record = {"monitor": self.monitor, "value": current, "epoch": epoch + 1,
                  "step": trainer.step_, "samples_seen": trainer.samples_seen_}

        def write(directory: Path) -> None:
            trainer.save(directory)
            atomic_write(directory / RECORD_FILE,
                         lambda path: path.write_text(json.dumps(record, indent=2) + "\n"))

        try:
            replace_directory(self.directory, write)
        except OSError as error:
            raise write_error(self.directory, error) from None
        self.best_, self.best_epoch_ = current, epoch
        if self.verbose:
            print(f"ModelCheckpoint: epoch {epoch + 1}: {self.monitor} {current:.6g}, the best so "
                  f"far: model written to {self.directory}", file=sys.stderr, flush=True)

    def _recorded_best(self) -> float | None:
        """The value in the directory's best.json, when it records this monitor (untrusted: a
        small file, every field checked; anything else is ignored)."""
        try:
            record = json.loads(read_small_file(self.directory / RECORD_FILE, MAX_RECORD_BYTES))
        except (OSError, ValueError):
            return None
        if not isinstance(record, dict) or record.get("monitor") != self.monitor:
            return None
        value = record.get("value")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return None
        return float(value)

    def state_dict(self) -> dict:
        return {"monitor": self.monitor, "best": self.best_, "best_epoch": self.best_epoch_}

    def load_state_dict(self, state: dict) -> None:
        check_saved_monitor("ModelCheckpoint", state, self.monitor)
        saved = state["best"]
        if saved is not None and improves(saved, self.best_, self.direction_, 0.0):
            self.best_, self.best_epoch_ = saved, state["best_epoch"]
        elif self.best_ is None:
            self.best_epoch_ = state["best_epoch"]


def best_model_dir(run_dir: str | Path) -> Path:
    """RUN/best, or the previous best where a crash interrupted its replacement; an error naming
    the fix when the run kept no best model."""
    best = Path(run_dir) / BEST_DIR
    if best.is_dir():
        return best
    if previous_directory(best).is_dir():
        return previous_directory(best)
    raise ConfigError(f"{run_dir} has no best model ({best} is missing): train with --save-best "
                      "MONITOR (e.g. --save-best val_loss), or evaluate the final model without --best")

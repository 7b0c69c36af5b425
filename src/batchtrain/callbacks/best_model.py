"""ModelCheckpoint: keep the model of the best epoch so far in its own directory (RUN/best/)."""
import json
import sys
from pathlib import Path

from batchtrain.callbacks.base import Callback, FitInfo
from batchtrain.callbacks.monitor import check_monitor, direction, improves, monitored
from batchtrain.checkpointing.fileio import previous_directory, replace_directory, write_error
from batchtrain.errors import ConfigError

BEST_DIR = "best"  # in a run directory: the best epoch's model (batchtrain evaluate RUN --best)
RECORD_FILE = "best.json"  # beside the model: which epoch, and its value


class ModelCheckpoint(Callback):
    """After each epoch whose monitored value is the best so far, write the model to `directory`
    (model.safetensors + model.json: what a finished run writes, so Trainer.load(directory) and
    `batchtrain evaluate RUN --best` read it) and best.json (monitor, value, epoch, step).

    The directory is replaced whole (checkpointing/fileio.py replace_directory): a crash leaves
    the previous best or the new one, never a mix. monitor, mode, min_delta: as EarlyStopping's
    (default "val_loss"). initial_value_threshold: a value the first saved epoch must beat.
    The best value so far is saved in checkpoints: a resumed run replaces the model only with a
    better one. Keras' ModelCheckpoint(save_best_only=True), without the file name template.
    """

    main_process_only = True  # under DDP only rank 0 writes

    def __init__(self, directory: str | Path, monitor: str = "val_loss", mode: str = "auto",
                 min_delta: float = 0.0, initial_value_threshold: float | None = None,
                 verbose: bool = False):
        self.directory = Path(directory)
        self.monitor = monitor
        self.mode = mode
        self.min_delta = min_delta
        self.initial_value_threshold = initial_value_threshold
        self.verbose = verbose

    def on_fit_begin(self, trainer, info: FitInfo) -> None:
        check_monitor("ModelCheckpoint", self.monitor, getattr(trainer, "metric_names_", ()),
                      info.validation_samples)
        if not (isinstance(self.min_delta, (int, float)) and 0 <= self.min_delta < float("inf")):
            raise ConfigError(f"ModelCheckpoint min_delta must be a number >= 0, got {self.min_delta!r}")
        self.direction_ = direction(self.monitor, self.mode)
        self.best_: float | None = self.initial_value_threshold
        self.best_epoch_: int | None = None

    def on_epoch_end(self, trainer, epoch: int, logs: dict) -> None:
        current = monitored(logs, self.monitor)
        if not improves(current, self.best_, self.direction_, self.min_delta):
            return
        record = {"monitor": self.monitor, "value": current, "epoch": epoch + 1,
                  "step": trainer.step_, "samples_seen": trainer.samples_seen_}

        def write(directory: Path) -> None:
            trainer.save(directory)
            (directory / RECORD_FILE).write_text(json.dumps(record, indent=2) + "\n")

        try:
            replace_directory(self.directory, write)
        except OSError as error:
            raise write_error(self.directory, error) from None
        self.best_, self.best_epoch_ = current, epoch
        if self.verbose:
            print(f"ModelCheckpoint: epoch {epoch + 1}: {self.monitor} {current:.6g}, the best so "
                  f"far: model written to {self.directory}", file=sys.stderr, flush=True)

    def state_dict(self) -> dict:
        return {"best": self.best_, "best_epoch": self.best_epoch_}

    def load_state_dict(self, state: dict) -> None:
        self.best_, self.best_epoch_ = state["best"], state["best_epoch"]


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

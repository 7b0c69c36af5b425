"""Checkpoint: writes the trainer's whole state every N samples, at epoch ends, and on interrupts."""
from pathlib import Path

from batchtrain.callbacks.base import Callback, FitInfo
from batchtrain.checkpoint import save_checkpoint
from batchtrain.resume import capture_state
from batchtrain.schedules import Duration, to_samples


class Checkpoint(Callback):
    """Saves resumable checkpoints into `directory` (see checkpoint.py for the format).

    every: also save mid-epoch every this many samples ("0.25e" = four times an epoch; None:
        epoch ends only). at_epoch_end: save after every epoch (default True). keep: the number
        of newest checkpoints kept (default 3). A checkpoint is always written when training is
        interrupted (Ctrl-C, SIGTERM), after the step in progress.
    """

    main_process_only = True  # under DDP only rank 0 writes

    def __init__(self, directory: str | Path, every: Duration | None = None, keep: int = 3,
                 at_epoch_end: bool = True):
        self.directory = Path(directory)
        self.every = every
        self.keep = keep
        self.at_epoch_end = at_epoch_end

    def on_fit_begin(self, trainer, info: FitInfo) -> None:
        self.every_samples_ = to_samples(self.every, info.num_samples) if self.every else 0
        self.last_path_ = None
        self.epoch_ = 0
        self.saved_at_ = -1

    def on_epoch_begin(self, trainer, epoch: int) -> None:
        self.epoch_ = epoch

    def on_batch_end(self, trainer, batch_size: int) -> None:
        samples = trainer.run_samples_
        due = self.every_samples_ and samples // self.every_samples_ > (samples - batch_size) // self.every_samples_
        if due or trainer.interrupt_ is not None:
            self.save(trainer, self.epoch_, trainer.position_)

    def on_epoch_end(self, trainer, epoch: int, logs: dict) -> None:
        if trainer.position_ < trainer.samples_per_epoch_:  # stopped mid-epoch by a callback
            self.save(trainer, epoch, trainer.position_)
        elif self.at_epoch_end:
            self.save(trainer, epoch + 1, 0)

    def save(self, trainer, epoch: int, position: int) -> Path:
        if trainer.samples_seen_ == self.saved_at_:  # e.g. an interrupt right after a due save
            return self.last_path_
        self.last_path_ = save_checkpoint(self.directory, capture_state(trainer, epoch, position),
                                          self.keep)
        self.saved_at_ = trainer.samples_seen_
        return self.last_path_

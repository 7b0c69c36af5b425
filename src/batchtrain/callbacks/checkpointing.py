"""Checkpoint: writes the trainer's whole state every N samples, at epoch ends, and on interrupts."""
from pathlib import Path

from batchtrain.callbacks.base import Callback, FitInfo
from batchtrain.checkpointing.files import save_checkpoint
from batchtrain.checkpointing.resume import capture_state
from batchtrain.durations import Duration, to_samples


class Checkpoint(Callback):
    """Saves resumable checkpoints into `directory` (see checkpointing/files.py for the format),
    with the states of the fit's other callbacks (it runs after them).

    every: also save mid-epoch every this many samples ("0.25e" = four times an epoch; None:
        epoch ends only). at_epoch_end: save after every epoch (default True). keep: the number
        of newest checkpoints kept (default 3). A checkpoint is always written when training is
        interrupted (Ctrl-C, SIGTERM), after the step in progress.
    """

    main_process_only = True  # under DDP only rank 0 writes
    saves_run_state = True  # runs after the other callbacks (CallbackList), saving their decisions

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

    def on_batch_end(self, trainer, samples: int) -> None:
        run = trainer.state_
        every = self.every_samples_
        due = every and run.samples_seen // every > (run.samples_seen - samples) // every
        if due or run.interrupt is not None:
            self.save(trainer, self.epoch_, run.position)

    def on_epoch_end(self, trainer, epoch: int, logs: dict) -> None:
        run = trainer.state_
        # saved again where the epoch's last step was saved: now with the epoch's record and the
        # other callbacks' decisions on it (an early stop, a new best)
        self.saved_at_ = -1
        if run.position < run.samples_per_epoch:  # stopped mid-epoch by a callback
            self.save(trainer, epoch, run.position)
        elif self.at_epoch_end:
            self.save(trainer, epoch + 1, 0)

    def save(self, trainer, epoch: int, position: int) -> Path:
        run = trainer.state_
        if run.total_samples_seen == self.saved_at_:  # e.g. an interrupt right after a due save
            return self.last_path_
        state = capture_state(trainer.model_, trainer.optimizer_, run, epoch, position)
        self.last_path_ = save_checkpoint(self.directory, state, self.keep)
        self.saved_at_ = run.total_samples_seen
        return self.last_path_

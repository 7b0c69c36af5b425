"""Progress: a tqdm bar on a terminal, plain lines elsewhere (no carriage returns in logs)."""
import sys
import time
from typing import TextIO

from tqdm import tqdm

from batchtrain.callbacks.base import Callback, FitInfo


class ProgressBar(Callback):
    """Shows training progress.

    On a terminal: one tqdm bar per epoch (samples, samples/s, ETA, running loss and metrics),
    then the epoch's summary line. Elsewhere (a log file, a pipe, CI): the summary line per epoch,
    plus a progress line every `interval_s` seconds (default 60) within long epochs.
    stream: where to write (default sys.stderr); terminal: force bar (True) or lines (False).
    """

    main_process_only = True  # under DDP only rank 0 writes

    def __init__(self, stream: TextIO | None = None, terminal: bool | None = None,
                 interval_s: float = 60.0, refresh_s: float = 0.5):
        self.stream = stream
        self.terminal = terminal
        self.interval_s = interval_s
        self.refresh_s = refresh_s

    def on_fit_begin(self, trainer, info: FitInfo) -> None:
        self.out_ = self.stream or sys.stderr
        self.is_terminal_ = self.terminal if self.terminal is not None else _isatty(self.out_)
        self.info_ = info
        self.bar_ = None
        print(f"batch size {info.policy}; {info.memory}; {info.lr}", file=self.out_, flush=True)
        if info.calibration:
            print(f"{info.calibration}; first batch {info.batch_size}", file=self.out_, flush=True)
        if info.resumed_from:
            print(f"resumed from {info.resumed_from} (step {trainer.step_})", file=self.out_, flush=True)

    def on_epoch_begin(self, trainer, epoch: int) -> None:
        self.epoch_ = epoch
        # an epoch can begin past its start (resumed mid-epoch, or after auto's kept start
        # branch), and go past samples no step reported (auto's kept branches)
        self.epoch_samples_ = _position(trainer, 0)
        self.last_read_ = time.monotonic()
        if self.is_terminal_:
            self.bar_ = tqdm(total=self.info_.num_samples, initial=self.epoch_samples_,
                             file=self.out_, unit="sample",
                             unit_scale=True, leave=False, dynamic_ncols=True,
                             desc=f"epoch {epoch + 1}/{self.info_.epochs}")

    def on_batch_end(self, trainer, samples: int) -> None:
        self.epoch_samples_ = _position(trainer, self.epoch_samples_ + samples)
        if self.bar_ is not None:
            self.bar_.update(self.epoch_samples_ - self.bar_.n)
        now = time.monotonic()
        due_s = self.refresh_s if self.is_terminal_ else self.interval_s
        if now - self.last_read_ < due_s:
            return
        self.last_read_ = now
        logs = trainer.running_logs()  # reads the device: only at these intervals
        if self.bar_ is not None:
            self.bar_.set_postfix({key: f"{value:.4f}" for key, value in logs.items()}, refresh=False)
        else:
            done = f"{self.epoch_samples_}/{self.info_.num_samples} samples"
            print(f"epoch {self.epoch_ + 1}/{self.info_.epochs} {done} - {format_logs(logs)}",
                  file=self.out_, flush=True)

    def on_epoch_end(self, trainer, epoch: int, logs: dict) -> None:
        if self.bar_ is not None:
            self.bar_.close()
            self.bar_ = None
        print(format_epoch(logs, self.info_.epochs), file=self.out_, flush=True)


def format_logs(logs: dict) -> str:
    """'loss 0.3012 - accuracy 0.8931 - ...' for the loss and metric entries."""
    skip = {"epoch", "time_s", "samples_per_s", "batch_size", "lr"}
    return " - ".join(f"{key} {value:.4f}" for key, value in logs.items()
                      if key not in skip and isinstance(value, float))


def format_epoch(logs: dict, epochs: int) -> str:
    setting = f"batch {logs['batch_size']} - lr {logs['lr']:.3g} - " if "batch_size" in logs else ""
    return (f"epoch {logs['epoch']}/{epochs} - {logs['time_s']:.1f}s - "
            f"{logs['samples_per_s']:.0f} samples/s - {setting}{format_logs(logs)}")


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def _position(trainer, default: int) -> int:
    """The samples of the epoch done: the run's position, or `default` without a run state."""
    return getattr(getattr(trainer, "state_", None), "position", default)

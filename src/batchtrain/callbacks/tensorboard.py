"""TensorBoard: the run's scalars as TensorBoard event files (torch.utils.tensorboard)."""
import math
import time
from pathlib import Path

from batchtrain.callbacks.base import Callback, FitInfo
from batchtrain.callbacks.monitor import check_count
from batchtrain.errors import ConfigError

X_AXES = ("step", "samples")
MISSING = ("TensorBoard needs the tensorboard package, which batchtrain leaves optional: "
           "pip install 'batchtrain[tensorboard]' (or pip install tensorboard), or drop --tensorboard")


def summary_writer_class():
    """torch.utils.tensorboard.SummaryWriter, or ConfigError naming the install when tensorboard
    is missing (torch imports it lazily, only here)."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ConfigError(MISSING) from None
    return SummaryWriter


class TensorBoard(Callback):
    """Writes scalars to event files in log_dir, for `tensorboard --logdir log_dir`.

    Every `every_steps` optimizer steps (default 20): batch/loss and batch/<metric> (the epoch's
    running values), batch/lr, batch/batch_size (logical), batch/physical_batch,
    batch/noise_scale (when the batch-size policy measures it) and batch/samples_per_s (over the
    interval, wall clock). After each epoch: epoch/<key> for every number of its History record
    (loss, metrics, val_*, lr, batch_size, samples_per_s, time_s).
    x_axis: "step" (optimizer steps, default) or "samples" (samples seen: the axis on which runs
    with different batch sizes compare). A resumed run drops the events written after the point
    it continues from (SummaryWriter's purge_step) and writes on. Rank 0 only under DDP, where the
    batch/ loss and metrics are rank 0's shard of the batch (reducing them would need every
    rank); the epoch/ values are the whole batch's, as in History.
    """

    main_process_only = True

    def __init__(self, log_dir: str | Path, every_steps: int = 20, x_axis: str = "step"):
        self.log_dir = Path(log_dir)
        self.every_steps = every_steps
        self.x_axis = x_axis

    def on_fit_begin(self, trainer, info: FitInfo) -> None:
        if check_count("TensorBoard", "every_steps", self.every_steps) < 1:
            raise ConfigError(f"TensorBoard every_steps must be an integer >= 1, got {self.every_steps!r}")
        self.every_steps_ = int(self.every_steps)
        if self.x_axis not in X_AXES:
            raise ConfigError(f"TensorBoard x_axis must be one of {', '.join(X_AXES)}, got {self.x_axis!r}")
        writer_class = summary_writer_class()
        # events after the point a resumed run continues from are discarded (they will be written
        # again); the point itself was written before its checkpoint
        self.writer_ = writer_class(str(self.log_dir), purge_step=self._x(trainer) + 1
                                    if info.resumed_from else None)
        self.writer_.add_text("run", f"batch size: {info.policy or info.batch_size}; lr: {info.lr}; "
                              f"{info.memory}", self._x(trainer))
        self.interval_started_ = time.perf_counter()
        self.interval_samples_ = 0

    def on_batch_end(self, trainer, samples: int) -> None:
        self.interval_samples_ += samples
        interrupted = getattr(getattr(trainer, "state_", None), "interrupt", None) is not None
        if trainer.step_ % self.every_steps_ and not interrupted:
            return
        step, x = trainer.last_step_, self._x(trainer)
        elapsed = time.perf_counter() - self.interval_started_
        scalars = {**trainer.running_logs(), "lr": step["lr"], "batch_size": step["batch_size"],
                   "physical_batch": step["physical_batch"],
                   "samples_per_s": self.interval_samples_ / elapsed if elapsed > 0 else None}
        if "noise_scale" in step:
            scalars["noise_scale"] = step["noise_scale"]
        self._write("batch", scalars, x)
        self.interval_started_, self.interval_samples_ = time.perf_counter(), 0
        if interrupted:  # the run ends with TrainingInterrupted, without on_fit_end
            self.writer_.flush()

    def on_epoch_end(self, trainer, epoch: int, logs: dict) -> None:
        self._write("epoch", {key: value for key, value in logs.items() if key != "epoch"},
                    self._x(trainer))
        self.writer_.flush()

    def on_fit_end(self, trainer, history) -> None:
        self.writer_.close()

    def _x(self, trainer) -> int:
        return trainer.samples_seen_ if self.x_axis == "samples" else trainer.step_

    def _write(self, group: str, scalars: dict, x: int) -> None:
        for name, value in scalars.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                self.writer_.add_scalar(f"{group}/{name}", value, x)

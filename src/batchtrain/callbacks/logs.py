"""Run logs: metrics.jsonl (per epoch, and per step at an interval) and history.csv."""
import json
import time
from pathlib import Path

from batchtrain.callbacks.base import Callback, FitInfo
from batchtrain.checkpointing.fileio import atomic_write, write_error


class MetricsLogger(Callback):
    """Appends JSON lines to run_dir/metrics.jsonl and rewrites run_dir/history.csv each epoch.

    Lines: {"type": "fit", the run's set-up, and when resuming "resumed_from" (the checkpoint) and
    its "step"} first; {"type": "step", "step", "epoch", "samples_seen", "batch_size", "samples",
    "physical_batch", "accumulation_steps", "lr"} after every step,
    with the running loss and metrics added every `every_steps` steps (reading them waits for the
    device, so not every step); {"type": "epoch", ...History record} after each epoch.
    """

    main_process_only = True  # under DDP only rank 0 writes

    def __init__(self, run_dir: str | Path, every_steps: int | None = None):
        self.run_dir = Path(run_dir)
        self.every_steps = every_steps

    def on_fit_begin(self, trainer, info: FitInfo) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.path_ = self.run_dir / "metrics.jsonl"
        self.epoch_ = 0
        if trainer.step_ and self.path_.exists():
            self._truncate_after(trainer.step_)
        resumed = {"resumed_from": info.resumed_from, "step": trainer.step_} if info.resumed_from else {}
        calibrated = {"calibration": info.calibration} if info.calibration else {}
        self._write({"type": "fit", "epochs": info.epochs, "samples_per_epoch": info.num_samples,
                     "validation_samples": info.validation_samples, "batch_policy": info.policy,
                     "memory": info.memory, "lr_control": info.lr, **calibrated, **resumed})

    def on_epoch_begin(self, trainer, epoch: int) -> None:
        self.epoch_ = epoch

    def on_batch_end(self, trainer, samples: int) -> None:
        record = {"type": "step", "epoch": self.epoch_ + 1, **trainer.last_step_}
        if self.every_steps and trainer.step_ % self.every_steps == 0:
            record.update(trainer.running_logs())
        self._write(record)

    def on_epoch_end(self, trainer, epoch: int, logs: dict) -> None:
        self._write({"type": "epoch", "step": trainer.step_,
                     "samples_seen": trainer.last_step_["samples_seen"], **logs})
        path = self.run_dir / "history.csv"
        try:
            trainer.history_.to_csv(path)
        except OSError as error:
            raise write_error(path, error) from None

    def _truncate_after(self, step: int) -> None:
        """A resumed run repeats the steps after its checkpoint: drop their earlier records."""
        kept = [line for line in self.path_.read_text().splitlines(keepends=True)
                if json.loads(line).get("step", 0) <= step]
        atomic_write(self.path_, lambda path: path.write_text("".join(kept)))

    def _write(self, record: dict) -> None:
        record = {"time": round(time.time(), 3), **record}
        try:
            with open(self.path_, "a") as handle:
                handle.write(json.dumps(record) + "\n")
        except OSError as error:  # a full disk: the path and the fix, not bare errno text
            raise write_error(self.path_, error) from None

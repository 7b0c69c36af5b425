"""Run logs: metrics.jsonl (per epoch, and per step at an interval) and history.csv."""
import json
import time
from pathlib import Path

from batchtrain.callbacks.base import Callback, FitInfo


class MetricsLogger(Callback):
    """Appends JSON lines to run_dir/metrics.jsonl and rewrites run_dir/history.csv each epoch.

    Lines: {"type": "epoch", ...History record} after each epoch and, if every_steps is set,
    {"type": "step", "step", "epoch", "samples_seen", running loss/metrics} every that many steps.
    """

    def __init__(self, run_dir: str | Path, every_steps: int | None = None):
        self.run_dir = Path(run_dir)
        self.every_steps = every_steps

    def on_fit_begin(self, trainer, info: FitInfo) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.path_ = self.run_dir / "metrics.jsonl"
        self.epoch_ = 0

    def on_epoch_begin(self, trainer, epoch: int) -> None:
        self.epoch_ = epoch

    def on_batch_end(self, trainer, batch_size: int) -> None:
        if self.every_steps and trainer.step_ % self.every_steps == 0:
            self._write({"type": "step", "step": trainer.step_, "epoch": self.epoch_ + 1,
                         "samples_seen": trainer.samples_seen_, **trainer.running_logs()})

    def on_epoch_end(self, trainer, epoch: int, logs: dict) -> None:
        self._write({"type": "epoch", "step": trainer.step_, "samples_seen": trainer.samples_seen_,
                     **logs})
        trainer.history_.to_csv(self.run_dir / "history.csv")

    def _write(self, record: dict) -> None:
        record = {"time": round(time.time(), 3), **record}
        with open(self.path_, "a") as handle:
            handle.write(json.dumps(record) + "\n")

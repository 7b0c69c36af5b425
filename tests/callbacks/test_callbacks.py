"""Callbacks driven directly with a fake trainer and synthetic logs; and the hook contract in fit."""
import io
import json

import numpy as np
import pytest
import torch

from batchtrain import Callback, MetricsLogger, Plotter, ProgressBar, Trainer
from batchtrain.callbacks import FitInfo
from batchtrain.state import History

INFO = FitInfo(epochs=2, steps_per_epoch=4, num_samples=40, batch_size=10, validation_samples=0,
               policy="Fixed(10)", memory="memory ceiling: 99 samples", lr="lr scaling sqrt")


class FakeTrainer:
    def __init__(self):
        self.step_, self.samples_seen_, self.history_ = 0, 0, History()
        self.reads = 0

    def running_logs(self):
        self.reads += 1
        return {"loss": 0.5, "accuracy": 0.75}


def drive(callback, trainer, epochs=2, steps=4, batch=10):
    callback.on_fit_begin(trainer, INFO)
    for epoch in range(epochs):
        callback.on_epoch_begin(trainer, epoch)
        for _ in range(steps):
            trainer.step_ += 1
            trainer.samples_seen_ += batch
            trainer.last_step_ = {"step": trainer.step_, "samples_seen": trainer.samples_seen_,
                                  "batch_size": batch, "physical_batch": batch,
                                  "accumulation_steps": 1, "lr": 0.001}
            trainer.history_.steps.append(trainer.last_step_)
            callback.on_batch_end(trainer, batch)
        logs = {"epoch": epoch + 1, "loss": 1.0 / (epoch + 1), "accuracy": 0.5 + epoch / 10,
                "val_loss": 1.2, "val_accuracy": 0.4, "time_s": 2.0, "samples_per_s": 20.0}
        trainer.history_.append(logs)
        callback.on_epoch_end(trainer, epoch, logs)
    callback.on_fit_end(trainer, trainer.history_)


def test_progress_lines_off_terminal_have_no_carriage_returns():
    stream = io.StringIO()
    trainer = FakeTrainer()
    drive(ProgressBar(stream=stream, terminal=False, interval_s=3600), trainer)
    lines = stream.getvalue().splitlines()
    assert "\r" not in stream.getvalue()
    assert lines == ["batch size Fixed(10); memory ceiling: 99 samples; lr scaling sqrt",
                     "epoch 1/2 - 2.0s - 20 samples/s - loss 1.0000 - accuracy 0.5000 - "
                     "val_loss 1.2000 - val_accuracy 0.4000",
                     "epoch 2/2 - 2.0s - 20 samples/s - loss 0.5000 - accuracy 0.6000 - "
                     "val_loss 1.2000 - val_accuracy 0.4000"]
    assert trainer.reads == 0  # no device read between intervals


def test_progress_lines_within_long_epochs_at_the_interval():
    stream = io.StringIO()
    drive(ProgressBar(stream=stream, terminal=False, interval_s=0.0), FakeTrainer())
    assert "epoch 1/2 10/40 samples - loss 0.5000 - accuracy 0.7500" in stream.getvalue()


def test_progress_bar_on_terminal_uses_tqdm():
    stream = io.StringIO()
    drive(ProgressBar(stream=stream, terminal=True, refresh_s=0.0), FakeTrainer())
    output = stream.getvalue()
    assert "\r" in output and "epoch 1/2" in output and "sample/s" in output


def test_metrics_logger_writes_epoch_and_step_lines(tmp_path):
    trainer = FakeTrainer()
    drive(MetricsLogger(tmp_path, every_steps=3), trainer)
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if r["type"] == "step"]
    assert [r["step"] for r in steps] == list(range(1, 9))  # every step, host values only
    assert [r["step"] for r in steps if "loss" in r] == [3, 6]  # running metrics at the interval
    assert steps[0]["batch_size"] == 10 and steps[0]["lr"] == 0.001
    assert records[0]["type"] == "fit" and records[0]["batch_policy"] == "Fixed(10)"
    epochs = [r for r in records if r["type"] == "epoch"]
    assert [r["epoch"] for r in epochs] == [1, 2] and epochs[1]["samples_seen"] == 80
    assert (tmp_path / "history.csv").read_text().splitlines()[0].startswith("epoch,loss,accuracy")


def test_plotter_writes_one_png_per_metric(tmp_path):
    drive(Plotter(tmp_path), FakeTrainer())
    for name in ("loss.png", "accuracy.png", "batch_size.png", "lr.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (tmp_path / "val_loss.png").exists()


class Recorder(Callback):
    def on_fit_begin(self, trainer, info):
        self.calls = [("fit_begin", info.epochs, info.steps_per_epoch, info.num_samples)]

    def on_epoch_begin(self, trainer, epoch):
        self.calls.append(("epoch_begin", epoch))

    def on_batch_end(self, trainer, batch_size):
        self.calls.append(("batch", batch_size))

    def on_epoch_end(self, trainer, epoch, logs):
        self.calls.append(("epoch_end", epoch, sorted(logs)))
        trainer.stop_training = epoch == 1

    def on_fit_end(self, trainer, history):
        self.calls.append(("fit_end", len(history)))


def test_trainer_calls_every_hook_in_order_and_honours_stop_training():
    x, y = np.random.default_rng(0).normal(size=(25, 3)).astype(np.float32), np.arange(25) % 2
    recorder = Recorder()
    Trainer("mlp", seed=0).fit(x, y, batch_size=10, epochs=5, callbacks=[recorder])
    keys = sorted(["epoch", "loss", "accuracy", "batch_size", "lr", "time_s", "samples_per_s"])
    expected = [("fit_begin", 5, 3, 25)]
    for epoch in range(2):
        expected += [("epoch_begin", epoch), ("batch", 10), ("batch", 10), ("batch", 5),
                     ("epoch_end", epoch, keys)]
    assert recorder.calls == expected + [("fit_end", 2)]
    # reused in a second fit, the callback starts afresh
    Trainer("mlp", seed=0).fit(x, y, batch_size=25, epochs=1, callbacks=[recorder])
    assert recorder.calls[0] == ("fit_begin", 1, 1, 25) and len(recorder.calls) == 5


def test_non_callback_is_refused():
    with pytest.raises(ValueError, match="Callback instances"):
        Trainer("mlp").fit(torch.zeros(4, 2), torch.tensor([0, 1, 0, 1]), callbacks=[print])

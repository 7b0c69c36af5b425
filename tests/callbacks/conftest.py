"""The callback harness: a fake trainer and `drive`, which runs a callback's hooks as fit() does
over synthetic logs (2 epochs of 4 steps of 10 samples by default).

Fixtures, not imports (the tests run with --import-mode=importlib): a test asks for `FakeTrainer`
(the class) and `drive` (the function) by name.
"""
import pytest

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



@pytest.fixture(name="FakeTrainer")
def fake_trainer_class():
    """The FakeTrainer class: step_, samples_seen_, history_, last_step_ and running_logs()."""
    return FakeTrainer


@pytest.fixture(name="drive")
def drive_fixture():
    """drive(callback, trainer, epochs=2, steps=4, batch=10): every hook in fit()'s order."""
    return drive

"""Exact resume with the callbacks that decide: a run resumed from any of its checkpoints (before
the best epoch, after it, mid-epoch, after the early stop) ends with the same best weights, the
same stopping epoch, the same lr (the plateau factor) and the same best model as the
uninterrupted run, bit for bit on a CPU."""
import os
import signal

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from batchtrain import (Callback, Checkpoint, Doubling, EarlyStopping, ModelCheckpoint,
                        ReduceLROnPlateau, Trainer)
from batchtrain.checkpointing.files import list_checkpoints, load_checkpoint
from batchtrain.errors import TrainingInterrupted

SAMPLES = 120


def data():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(SAMPLES, 8, generator=generator)
    return x, (x[:, 0] + x[:, 1] > 0).long() + (x[:, 2] > 1).long()


def trainer():
    torch.manual_seed(1)  # dropout draws from the global RNG: resume restores it
    model = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Dropout(0.3), nn.Linear(32, 3))
    return Trainer(model, optimizer="adam", lr=0.03, lr_schedule="warmup:0.5e",
                   max_physical_batch=12, seed=5)


def deciding(best_dir):
    """Fresh callbacks (a resumed process makes new ones); ModelCheckpoint listed after
    Checkpoint on purpose: Checkpoint saves after the others whatever the order."""
    return [EarlyStopping(patience=3, restore_best_weights=True, verbose=False),
            ReduceLROnPlateau(factor=0.5, patience=1, cooldown=1, min_lr=0.01, verbose=False)], \
        ModelCheckpoint(best_dir)


FIT = dict(batch_size=Doubling(8, "2e", 32), epochs=40, validation_split=0.25)


def without_timing(history):
    return [{key: value for key, value in logs.items() if key not in ("time_s", "samples_per_s")}
            for logs in history]


def test_resume_from_every_checkpoint_decides_as_the_uninterrupted_run(tmp_path):
    x, y = data()
    reference = trainer()
    (stopper, plateau), best = deciding(tmp_path / "reference-best")
    history = reference.fit(x, y, **FIT, callbacks=[stopper, Checkpoint(tmp_path / "ckpt", every=45,
                                                                        keep=1000), best, plateau])
    assert 0 < stopper.stopped_epoch_ < 39 and stopper.best_epoch_ < stopper.stopped_epoch_
    assert plateau.reductions_ >= 2 and reference.state_.lr_control.plateau < 1
    final = [p.detach().clone() for p in reference.model_.parameters()]
    best_weights = load_file(tmp_path / "reference-best" / "model.safetensors")
    checkpoints = list_checkpoints(tmp_path / "ckpt")
    epochs = [load_checkpoint(path)["progress"]["epoch"] for path in checkpoints]
    assert min(epochs) <= stopper.best_epoch_ < max(epochs)  # before and after the best epoch
    assert load_checkpoint(checkpoints[-1])["callbacks"]["EarlyStopping"]["stopped_epoch"] > 0

    for path, epoch in zip(checkpoints, epochs):
        resumed = trainer()
        (stopper_again, plateau_again), best_again = deciding(tmp_path / f"best-{path.stem}")
        resumed_history = resumed.fit(x, y, **FIT, resume=path,
                                      callbacks=[stopper_again, plateau_again, best_again,
                                                 Checkpoint(tmp_path / f"ckpt-{path.stem}")])
        assert without_timing(resumed_history) == without_timing(history), path.name
        assert resumed_history.steps == history.steps, path.name  # every step's lr included
        assert stopper_again.stopped_epoch_ == stopper.stopped_epoch_
        assert resumed.state_.lr_control.state_dict() == reference.state_.lr_control.state_dict()
        for ours, theirs in zip(resumed.model_.parameters(), final):  # the best epoch's, restored
            assert torch.equal(ours, theirs), path.name
        assert (best_again.best_, best_again.best_epoch_) == (best.best_, best.best_epoch_)
        if epoch <= best.best_epoch_:  # the best epoch is trained again, and written again
            written = load_file(tmp_path / f"best-{path.stem}" / "model.safetensors")
            assert all(torch.equal(written[name], best_weights[name]) for name in best_weights)
        else:  # it was written before the checkpoint: nothing worse replaces it
            assert not (tmp_path / f"best-{path.stem}").exists()


class OutOfTime(Callback):
    """A user's callback that stops the run at an epoch's end (the job's time slot is up)."""

    def on_epoch_end(self, trainer, epoch, logs):
        trainer.stop_training = epoch == 0


def test_a_stop_by_another_callback_does_not_stick_to_the_checkpoint(tmp_path):
    x, y = data()
    first = trainer()
    first.fit(x, y, **{**FIT, "epochs": 4}, callbacks=[OutOfTime(), Checkpoint(tmp_path)])
    assert len(first.history_) == 1
    resumed = trainer()
    history = resumed.fit(x, y, **{**FIT, "epochs": 4}, resume=tmp_path)
    assert len(history) == 4  # the run goes on: only EarlyStopping's own stop is kept


def test_numpy_hyperparameters_still_give_checkpoints_that_load_without_pickle(tmp_path):
    x, y = data()
    callbacks = [ReduceLROnPlateau(factor=np.float64(0.5), patience=0, min_lr=np.float32(1e-4),
                                   min_delta=np.float64(10.0), verbose=False),
                 EarlyStopping(baseline=np.float32(0.01), patience=np.int64(5), verbose=False),
                 ModelCheckpoint(tmp_path / "best", initial_value_threshold=np.float64(50.0)),
                 Checkpoint(tmp_path / "ckpt")]
    trainer().fit(x, y, **{**FIT, "epochs": 3}, callbacks=callbacks)
    state = load_checkpoint(list_checkpoints(tmp_path / "ckpt")[-1])  # weights_only=True
    assert state["lr_control"]["plateau"] == 0.25 and type(state["lr_control"]["plateau"]) is float


def test_a_user_callback_whose_state_would_need_pickle_fails_when_saving(tmp_path):
    class Holding(Callback):
        def state_dict(self):
            return {"when": np.float64(1.5)}

    x, y = data()
    with pytest.raises(ValueError, match=r"Holding.state_dict\(\) returned .*float64.*when"):
        trainer().fit(x, y, **{**FIT, "epochs": 1}, callbacks=[Holding(), Checkpoint(tmp_path)])


def test_resuming_with_a_callback_monitoring_something_else_is_refused(tmp_path):
    x, y = data()
    trainer().fit(x, y, **{**FIT, "epochs": 2}, callbacks=[
        EarlyStopping("val_loss", patience=5, verbose=False), Checkpoint(tmp_path)])
    with pytest.raises(ValueError, match="monitored val_loss .* monitors val_accuracy"):
        trainer().fit(x, y, **{**FIT, "epochs": 3}, resume=tmp_path, callbacks=[
            EarlyStopping("val_accuracy", patience=5, verbose=False)])


class SignalAt(Callback):
    def __init__(self, step):
        self.step = step

    def on_batch_end(self, trainer, samples):
        if trainer.step_ == self.step:
            os.kill(os.getpid(), signal.SIGTERM)


def test_an_interrupt_after_the_best_epoch_resumes_to_the_same_end(tmp_path):
    x, y = data()
    reference = trainer()
    (stopper, plateau), best = deciding(tmp_path / "reference-best")
    history = reference.fit(x, y, **FIT, callbacks=[stopper, plateau, best])
    at = history.steps[-1]["step"] - 3  # three steps before the end: after the best epoch
    (stopper_again, plateau_again), best_again = deciding(tmp_path / "best")
    with pytest.raises(TrainingInterrupted):
        trainer().fit(x, y, **FIT, callbacks=[stopper_again, plateau_again, best_again,
                                              SignalAt(at), Checkpoint(tmp_path / "ckpt")])
    (stopper_again, plateau_again), best_again = deciding(tmp_path / "best")
    resumed = trainer()
    resumed_history = resumed.fit(x, y, **FIT, resume=tmp_path / "ckpt",
                                  callbacks=[stopper_again, plateau_again, best_again])
    assert resumed_history.steps == history.steps
    assert stopper_again.stopped_epoch_ == stopper.stopped_epoch_
    for ours, theirs in zip(resumed.model_.parameters(), reference.model_.parameters()):
        assert torch.equal(ours, theirs)
    written = load_file(tmp_path / "best" / "model.safetensors")
    expected = load_file(tmp_path / "reference-best" / "model.safetensors")
    assert all(torch.equal(written[name], expected[name]) for name in expected)

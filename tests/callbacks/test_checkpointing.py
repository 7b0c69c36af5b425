"""Checkpoint (callbacks/checkpointing.py): when it saves (every N samples, at epoch ends, on an
interrupt, at a stop mid-epoch), at which epoch and position, and never twice at the same sample.

Writing and capturing are replaced by recorders: checkpointing/ has its own tests, and
tests/checkpointing/test_resume.py drives this callback through real fits.
"""
from pathlib import Path
from types import SimpleNamespace

import pytest

from batchtrain.callbacks import FitInfo
from batchtrain.callbacks import checkpointing
from batchtrain.callbacks.checkpointing import Checkpoint

EPOCH = 40  # samples per epoch
INFO = FitInfo(epochs=2, steps_per_epoch=5, num_samples=EPOCH, batch_size=8, validation_samples=0)


@pytest.fixture
def saves(monkeypatch):
    """What the callback saved: (directory, keep, epoch, position, total_samples_seen) each."""
    saved = []

    def capture(model, optimizer, run, epoch, position):
        assert model == "model" and optimizer == "optimizer"
        return {"epoch": epoch, "position": position, "total": run.total_samples_seen}

    def save(directory, state, keep):
        saved.append((directory, keep, state["epoch"], state["position"], state["total"]))
        return Path(directory) / f"checkpoint-{state['total']}.pt"

    monkeypatch.setattr(checkpointing, "capture_state", capture)
    monkeypatch.setattr(checkpointing, "save_checkpoint", save)
    return saved


def fake_trainer(total_samples_seen=0):
    run = SimpleNamespace(samples_seen=0, total_samples_seen=total_samples_seen, position=0,
                          samples_per_epoch=EPOCH, interrupt=None)
    return SimpleNamespace(state_=run, model_="model", optimizer_="optimizer", stop_training=False)


def train(callback, trainer, epochs=2, batch=8, stop_after=None):
    """fit()'s hooks over `epochs` epochs of `batch`-sample steps; `stop_after` steps: a stop."""
    run, steps = trainer.state_, 0
    callback.on_fit_begin(trainer, INFO)
    for epoch in range(epochs):
        callback.on_epoch_begin(trainer, epoch)
        run.position = 0
        while run.position < EPOCH:
            run.samples_seen += batch
            run.total_samples_seen += batch
            run.position += batch
            callback.on_batch_end(trainer, batch)
            steps += 1
            if steps == stop_after:
                callback.on_epoch_end(trainer, epoch, {})
                return
        callback.on_epoch_end(trainer, epoch, {})


def test_by_default_it_saves_at_each_epoch_end_as_the_next_epochs_start(tmp_path, saves):
    train(Checkpoint(tmp_path / "checkpoints"), fake_trainer())
    assert saves == [(tmp_path / "checkpoints", 3, 1, 0, 40), (tmp_path / "checkpoints", 3, 2, 0, 80)]


def test_every_n_samples_saves_at_the_step_that_crosses_each_multiple(tmp_path, saves):
    callback = Checkpoint(tmp_path, every="0.375e", keep=7)  # 15 samples of a 40-sample epoch
    train(callback, fake_trainer())
    # steps end at 8, 16, ..., 80: the multiples 15, 30, 45, 60, 75 are crossed at 16, 32, 48,
    # 64 and 80; epoch 0 ends at 40 (saved as the start of epoch 1); the due save at 80 is
    # written again at the epoch's end (the same file), now with the epoch's record and the
    # other callbacks' decisions on it
    assert [(epoch, position, total) for _, keep, epoch, position, total in saves] == [
        (0, 16, 16), (0, 32, 32), (1, 0, 40), (1, 8, 48), (1, 24, 64), (1, 40, 80), (2, 0, 80)]
    assert {keep for _, keep, *_ in saves} == {7}
    assert callback.last_path_ == tmp_path / "checkpoint-80.pt"


def test_every_counts_the_samples_of_this_run_not_of_earlier_fits(tmp_path, saves):
    train(Checkpoint(tmp_path, every=20, at_epoch_end=False), fake_trainer(total_samples_seen=1000),
          epochs=1)
    assert [(epoch, position, total) for *_, epoch, position, total in saves] == [
        (0, 24, 1024), (0, 40, 1040)]


def test_without_epoch_end_saves_nor_an_interval_nothing_is_written(tmp_path, saves):
    train(Checkpoint(tmp_path, at_epoch_end=False), fake_trainer())
    assert saves == []


def test_an_interrupt_saves_after_the_step_in_progress_once(tmp_path, saves):
    callback, trainer = Checkpoint(tmp_path, at_epoch_end=False), fake_trainer()
    callback.on_fit_begin(trainer, INFO)
    callback.on_epoch_begin(trainer, 0)
    run = trainer.state_
    run.samples_seen = run.total_samples_seen = run.position = 24
    callback.on_batch_end(trainer, 8)
    assert saves == []
    run.interrupt = "SIGTERM"
    callback.on_batch_end(trainer, 8)
    callback.on_batch_end(trainer, 8)  # asked again at the same sample: the same checkpoint
    assert [(epoch, position, total) for *_, epoch, position, total in saves] == [(0, 24, 24)]
    assert callback.save(trainer, 0, 24) == tmp_path / "checkpoint-24.pt"
    assert len(saves) == 1


def test_a_stop_mid_epoch_saves_the_position_reached(tmp_path, saves):
    train(Checkpoint(tmp_path), fake_trainer(), stop_after=7)  # epoch 1, after 2 of its steps
    assert [(epoch, position, total) for *_, epoch, position, total in saves] == [
        (1, 0, 40), (1, 16, 56)]


def test_a_reused_callback_starts_afresh(tmp_path, saves):
    callback = Checkpoint(tmp_path, every=16)
    train(callback, fake_trainer(), epochs=1)
    assert [total for *_, total in saves] == [16, 32, 40]  # at 16, 32 and the epoch end
    callback.every = None
    train(callback, fake_trainer(), epochs=1)  # a new trainer: the same total (40) again
    assert [total for *_, total in saves] == [16, 32, 40, 40]

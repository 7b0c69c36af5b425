"""ModelCheckpoint: the best epoch's model in its own directory, replaced whole, readable by
Trainer.load; driven with synthetic logs, then in a fit."""
import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from batchtrain import ModelCheckpoint, Trainer
from batchtrain.callbacks import FitInfo
from batchtrain.callbacks.best_model import best_model_dir
from batchtrain.checkpointing.fileio import previous_directory
from batchtrain.errors import ConfigError

INFO = FitInfo(epochs=5, steps_per_epoch=1, num_samples=10, batch_size=10, validation_samples=5)


class Saving(SimpleNamespace):
    """A fake trainer whose save() writes the epoch it is at."""

    def save(self, directory):
        (directory / "model.json").write_text(json.dumps({"epoch": self.epoch}))


def test_only_improving_epochs_are_written(tmp_path):
    callback = ModelCheckpoint(tmp_path / "best", monitor="val_accuracy")
    trainer = Saving(metric_names_=("accuracy",), step_=0, samples_seen_=0, epoch=None)
    callback.on_fit_begin(trainer, INFO)
    written = []
    for epoch, accuracy in enumerate([0.5, 0.7, 0.6, 0.7, 0.8]):
        trainer.epoch, trainer.step_ = epoch, epoch + 1
        callback.on_epoch_end(trainer, epoch, {"val_accuracy": accuracy})
        written.append(json.loads((tmp_path / "best" / "model.json").read_text())["epoch"])
    assert written == [0, 1, 1, 1, 4]  # 0.6 and a second 0.7 are not improvements
    record = json.loads((tmp_path / "best" / "best.json").read_text())
    assert record == {"monitor": "val_accuracy", "value": 0.8, "epoch": 5, "step": 5,
                      "samples_seen": 0}
    assert callback.state_dict() == {"monitor": "val_accuracy", "best": 0.8, "best_epoch": 4}


def test_the_best_so_far_carries_into_the_next_fit_as_in_keras(tmp_path):
    callback = ModelCheckpoint(tmp_path / "best", monitor="loss")
    trainer = Saving(metric_names_=(), step_=0, samples_seen_=0, epoch=0)
    callback.on_fit_begin(trainer, INFO)
    callback.on_epoch_end(trainer, 0, {"loss": 0.5})
    trainer.epoch = 1
    callback.on_fit_begin(trainer, INFO)  # a second fit: a worse epoch must not replace the best
    callback.on_epoch_end(trainer, 0, {"loss": 0.7})
    assert json.loads((tmp_path / "best" / "model.json").read_text()) == {"epoch": 0}
    callback.on_epoch_end(trainer, 1, {"loss": 0.4})
    assert json.loads((tmp_path / "best" / "model.json").read_text()) == {"epoch": 1}


def test_a_resumed_run_never_replaces_a_better_model_on_disk(tmp_path):
    first = ModelCheckpoint(tmp_path / "best", monitor="loss")
    trainer = Saving(metric_names_=(), step_=0, samples_seen_=0, epoch=0)
    first.on_fit_begin(trainer, INFO)
    first.on_epoch_end(trainer, 0, {"loss": 0.5})
    # a new process resumes from a checkpoint saved before that epoch (its state: no best yet);
    # its replay of the epoch comes out a little worse (not bitwise on a GPU): best.json wins
    resumed = ModelCheckpoint(tmp_path / "best", monitor="loss")
    trainer.epoch = 9
    resumed.on_fit_begin(trainer, FitInfo(**{**vars(INFO), "resumed_from": "ckpt"}))
    resumed.on_epoch_end(trainer, 0, {"loss": 0.5000001})
    assert json.loads((tmp_path / "best" / "model.json").read_text()) == {"epoch": 0}


def test_initial_value_threshold_and_a_resumed_best(tmp_path):
    callback = ModelCheckpoint(tmp_path / "best", monitor="val_loss", initial_value_threshold=0.3)
    trainer = Saving(metric_names_=(), step_=0, samples_seen_=0, epoch=0)
    callback.on_fit_begin(trainer, INFO)
    callback.on_epoch_end(trainer, 0, {"val_loss": 0.4})
    assert not (tmp_path / "best").exists()  # 0.4 does not beat the threshold
    callback.load_state_dict({"best": 0.1, "best_epoch": 3})  # as a resumed run does
    callback.on_epoch_end(trainer, 4, {"val_loss": 0.2})
    assert not (tmp_path / "best").exists()


def test_a_failed_write_keeps_the_previous_best_and_names_the_path(tmp_path):
    callback = ModelCheckpoint(tmp_path / "best", monitor="loss")
    trainer = Saving(metric_names_=(), step_=0, samples_seen_=0, epoch=0)
    callback.on_fit_begin(trainer, INFO)
    callback.on_epoch_end(trainer, 0, {"loss": 1.0})

    def full_disk(directory):
        raise OSError(28, "No space left on device")

    trainer.save = full_disk
    with pytest.raises(ValueError, match="cannot write .*best: No space left on device"):
        callback.on_epoch_end(trainer, 1, {"loss": 0.5})
    assert json.loads((tmp_path / "best" / "model.json").read_text()) == {"epoch": 0}
    assert callback.best_ == 1.0  # not recorded as saved


def test_best_model_dir_falls_back_to_the_previous_best_and_names_the_fix(tmp_path):
    with pytest.raises(ConfigError, match="--save-best"):
        best_model_dir(tmp_path)
    previous_directory(tmp_path / "best").mkdir()  # a crash between replace_directory's renames
    assert best_model_dir(tmp_path) == previous_directory(tmp_path / "best")
    (tmp_path / "best").mkdir()
    assert best_model_dir(tmp_path) == tmp_path / "best"


def test_in_a_fit_the_best_epoch_is_loadable(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 4)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    kept = {}

    class Snapshot(ModelCheckpoint):
        def on_epoch_end(self, trainer, epoch, logs):
            kept[epoch] = {k: v.clone() for k, v in trainer.model_.state_dict().items()}
            super().on_epoch_end(trainer, epoch, logs)

    callback = Snapshot(tmp_path / "best", monitor="val_loss")
    trainer = Trainer("mlp", seed=0, lr=0.3)
    history = trainer.fit(x, y, batch_size=30, epochs=8, validation_split=0.3, callbacks=[callback])
    best = int(np.argmin([logs["val_loss"] for logs in history]))
    assert callback.best_epoch_ == best
    loaded = Trainer.load(tmp_path / "best")
    for name, tensor in loaded.model_.state_dict().items():
        assert torch.equal(tensor, kept[best][name])
    x_val, y_val = x[210:], y[210:]
    assert loaded.evaluate(x_val, y_val)["loss"] == pytest.approx(history[best]["val_loss"], rel=1e-5)

"""EarlyStopping, driven with synthetic logs as Keras' own tests drive theirs (the sequences and
the epochs Keras stops at come from keras/src/callbacks/early_stopping_test.py), then in a fit."""
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from batchtrain import EarlyStopping, Trainer
from batchtrain.callbacks import FitInfo
from batchtrain.errors import ConfigError

INFO = FitInfo(epochs=20, steps_per_epoch=1, num_samples=10, batch_size=10, validation_samples=5)


class WeightsAreTheEpoch(nn.Module):
    """A model whose one weight is set to the epoch number, so restored weights name their epoch."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.tensor(-1.0))


def fake_trainer():
    return SimpleNamespace(model_=WeightsAreTheEpoch(), stop_training=False,
                           metric_names_=("accuracy",))


def run(callback, monitored, key="loss"):
    """Epochs trained until the callback stops, feeding logs {key: value}; the trainer after
    on_fit_end."""
    trainer = fake_trainer()
    callback.on_fit_begin(trainer, INFO)
    trained = 0
    for epoch, value in enumerate(monitored):
        trained += 1
        with torch.no_grad():
            trainer.model_.weight.fill_(epoch)
        callback.on_epoch_end(trainer, epoch, {key: value})
        if trainer.stop_training:
            break
    callback.on_fit_end(trainer, None)
    return trained, trainer


@pytest.mark.parametrize("patience", [0, 1, 2, 3])
def test_patience_counts_epochs_without_improvement_as_keras_does(patience):
    losses = [10.0, 9.0, 8.0, 9.0, 8.9, 8.8, 8.7, 8.6, 8.5]
    stopper = EarlyStopping("loss", patience=patience, verbose=False)
    run(stopper, losses)
    assert stopper.stopped_epoch_ == max(patience, 1) + 2  # Keras' own expectation


def test_restore_best_weights_ends_at_the_best_epoch():
    _, trainer = run(EarlyStopping("val_loss", patience=2, restore_best_weights=True, verbose=False),
                     [0.2, 0.15, 0.1, 0.11, 0.12], "val_loss")
    assert trainer.model_.weight.item() == 2  # epoch 2 has the lowest loss


def test_a_baseline_never_beaten_stops_after_patience_and_restores_the_best():
    trained, trainer = run(EarlyStopping("val_loss", patience=5, baseline=0.5,
                                         restore_best_weights=True, verbose=False),
                           [0.9, 0.8, 0.7, 0.71, 0.72, 0.73], "val_loss")
    assert trained == 5 and trainer.model_.weight.item() == 2


def test_without_restore_the_last_weights_stay():
    _, trainer = run(EarlyStopping("val_loss", patience=1, verbose=False), [0.2, 0.1, 0.3, 0.4],
                     "val_loss")
    assert trainer.model_.weight.item() == 2  # stopped after epoch 2, its weights kept


def test_min_delta_and_mode_max():
    # accuracy improves upwards (auto); gains of 0.005 are below min_delta=0.01: no improvement
    stopper = EarlyStopping("accuracy", min_delta=0.01, patience=1, verbose=False)
    trained, _ = run(stopper, [0.5, 0.6, 0.605, 0.61, 0.9], "accuracy")
    assert trained == 3 and stopper.best_ == 0.6 and stopper.best_epoch_ == 1
    # mode="min" on the same name turns the direction round
    stopper = EarlyStopping("accuracy", mode="min", patience=0, verbose=False)
    trained, _ = run(stopper, [0.5, 0.6], "accuracy")
    assert trained == 2


def test_start_from_epoch_ignores_the_first_epochs():
    # the first two epochs (0, 1) are not monitored: their low loss does not count
    stopper = EarlyStopping("loss", patience=1, start_from_epoch=2, restore_best_weights=True,
                            verbose=False)
    trained, trainer = run(stopper, [0.1, 0.1, 5.0, 4.0, 4.5, 4.6, 4.7], "loss")
    assert stopper.best_ == 4.0 and trained == 5 and trainer.model_.weight.item() == 3


def test_nan_is_never_an_improvement():
    stopper = EarlyStopping("loss", patience=1, verbose=False)
    trained, _ = run(stopper, [1.0, float("nan"), 0.5])
    assert trained == 2 and stopper.best_ == 1.0


def test_reuse_starts_afresh_and_state_round_trips():
    stopper = EarlyStopping("loss", patience=1, restore_best_weights=True, verbose=False)
    run(stopper, [1.0, 0.5, 0.7, 0.8])
    saved = stopper.state_dict()
    assert saved["best"] == 0.5 and saved["best_epoch"] == 1 and saved["stopped_epoch"] == 2
    assert saved["best_weights"]["weight"].item() == 1
    trained, _ = run(stopper, [3.0, 2.0, 1.0])  # a second fit: no stale best of 0.5
    assert trained == 3 and stopper.best_ == 1.0
    fresh = EarlyStopping("loss", patience=1, restore_best_weights=True, verbose=False)
    fresh.on_fit_begin(fake_trainer(), INFO)
    fresh.load_state_dict(saved)
    assert fresh.state_dict() == saved


@pytest.mark.parametrize("arguments, message", [
    (dict(monitor="val_loss"), "no validation data"),
    (dict(monitor="val_acuracy"), "did you mean val_accuracy"),
    (dict(monitor="val_mae"), "does not compute"),
    (dict(monitor="loss", patience=-1), "patience must be an integer >= 0"),
    (dict(monitor="loss", mode="up"), "mode must be one of auto, min, max"),
    (dict(monitor="loss", min_delta=float("nan")), "min_delta must be a finite number"),
])
def test_bad_arguments_are_refused_before_training(arguments, message):
    info = FitInfo(epochs=2, steps_per_epoch=1, num_samples=10, batch_size=10,
                   validation_samples=0 if arguments["monitor"] == "val_loss" else 5)
    with pytest.raises(ConfigError, match=message):
        EarlyStopping(**arguments).on_fit_begin(fake_trainer(), info)


def test_in_a_fit_it_stops_and_restores_the_best_epoch():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 4)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    kept = {}

    class Snapshot(EarlyStopping):  # records each epoch's weights, to compare with the restored
        def on_epoch_end(self, trainer, epoch, logs):
            kept[epoch] = [p.detach().clone() for p in trainer.model_.parameters()]
            super().on_epoch_end(trainer, epoch, logs)

    stopper = Snapshot("val_loss", patience=1, restore_best_weights=True, verbose=False)
    trainer = Trainer("mlp", seed=0, lr=0.3)  # a large lr: val_loss soon stops improving
    history = trainer.fit(x, y, batch_size=30, epochs=40, validation_split=0.3, callbacks=[stopper])
    losses = [logs["val_loss"] for logs in history]
    assert len(history) < 40 and stopper.stopped_epoch_ == len(history) - 1
    best = int(np.argmin(losses))
    assert stopper.best_epoch_ == best and best < len(history) - 1
    for restored, expected in zip(trainer.model_.parameters(), kept[best]):
        assert torch.equal(restored, expected)


def test_a_stop_with_nothing_ever_improved_is_said_plainly(capsys):
    # epoch 0's NaN is no improvement (Keras would make it the best and then never improve)
    stopper = EarlyStopping("loss", patience=1)
    trained, _ = run(stopper, [float("nan"), float("nan"), float("nan")])
    assert trained == 2 and stopper.best_ is None
    assert "loss has not improved for 2 epochs" in capsys.readouterr().err


def test_keras_positional_arguments_keep_their_meaning():
    # Keras: EarlyStopping(monitor, min_delta, patience, verbose, mode, baseline,
    # restore_best_weights, start_from_epoch)
    stopper = EarlyStopping("val_loss", 0.1, 3, 1, "min", 0.5, True, 2)
    assert (stopper.min_delta, stopper.patience, stopper.verbose, stopper.mode, stopper.baseline,
            stopper.restore_best_weights, stopper.start_from_epoch) == (0.1, 3, 1, "min", 0.5,
                                                                        True, 2)

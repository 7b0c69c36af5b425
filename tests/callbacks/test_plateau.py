"""ReduceLROnPlateau driven with synthetic logs on a real learning-rate control (the patience,
cooldown and min_lr behaviour of Keras' callback), then in a fit with a schedule and auto."""
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from batchtrain import ReduceLROnPlateau, Trainer
from batchtrain.batching.coupling import LearningRate
from batchtrain.callbacks import FitInfo
from batchtrain.errors import ConfigError
from batchtrain.optim.schedules import SampleClock

INFO = FitInfo(epochs=20, steps_per_epoch=1, num_samples=10, batch_size=10, validation_samples=5)
CLOCK = SampleClock(0, 10, 200)


def fake_trainer(lr=1.0):
    optimizer = torch.optim.SGD(nn.Linear(2, 1).parameters(), lr=lr)
    control = LearningRate(optimizer, "none")
    control.apply(10, CLOCK)
    return SimpleNamespace(state_=SimpleNamespace(lr_control=control), metric_names_=("accuracy",))


def lrs(callback, losses, lr=1.0):
    """The lr of the step after each epoch, feeding val_loss = losses[epoch]."""
    trainer = fake_trainer(lr)
    callback.on_fit_begin(trainer, INFO)
    seen = []
    for epoch, loss in enumerate(losses):
        callback.on_epoch_end(trainer, epoch, {"val_loss": loss})
        seen.append(trainer.state_.lr_control.apply(10, CLOCK))
    return seen


def test_patience_then_a_reduction_then_counting_again():
    plateau = ReduceLROnPlateau(factor=0.5, patience=2, verbose=False)
    assert lrs(plateau, [1.0, 1.0, 1.0, 1.0, 1.0, 0.5, 0.5, 0.5]) == [
        1.0, 1.0, 0.5, 0.5, 0.25, 0.25, 0.25, 0.125]
    assert plateau.reductions_ == 3


def test_min_delta_decides_what_counts_as_an_improvement():
    # losses falling by 0.01 per epoch: improvements under min_delta=1e-4, not under 0.1
    falling = [1.0 - 0.01 * epoch for epoch in range(4)]
    assert lrs(ReduceLROnPlateau(factor=0.5, patience=1, verbose=False), falling) == [1.0] * 4
    assert lrs(ReduceLROnPlateau(factor=0.5, patience=1, min_delta=0.1, verbose=False),
               falling) == [1.0, 0.5, 0.25, 0.125]


def test_cooldown_waits_before_counting_again():
    # Keras' counting: the epoch that ends a cooldown already counts towards the patience
    plateau = ReduceLROnPlateau(factor=0.5, patience=1, cooldown=2, verbose=False)
    assert lrs(plateau, [1.0] * 7) == [1.0, 0.5, 0.5, 0.25, 0.25, 0.125, 0.125]
    without = ReduceLROnPlateau(factor=0.5, patience=1, verbose=False)
    assert lrs(without, [1.0] * 4) == [1.0, 0.5, 0.25, 0.125]


def test_min_lr_is_honoured():
    plateau = ReduceLROnPlateau(factor=0.1, patience=1, min_lr=0.05, verbose=False)
    assert lrs(plateau, [1.0] * 5) == pytest.approx([1.0, 0.1, 0.05, 0.05, 0.05])
    assert plateau.reductions_ == 2  # at the floor, no more reductions


def test_reuse_starts_afresh_and_state_round_trips():
    plateau = ReduceLROnPlateau(factor=0.5, patience=1, cooldown=1, verbose=False)
    lrs(plateau, [1.0, 1.0, 1.0])
    saved = plateau.state_dict()
    assert saved == {"monitor": "val_loss", "best": 1.0, "wait": 0, "cooldown_counter": 1,
                     "reductions": 2}
    assert lrs(plateau, [2.0, 1.0]) == [1.0, 1.0]  # best 1.0 from before would have reduced
    fresh = ReduceLROnPlateau(factor=0.5, patience=1, verbose=False)
    fresh.on_fit_begin(fake_trainer(), INFO)
    fresh.load_state_dict(saved)
    assert fresh.state_dict() == saved


@pytest.mark.parametrize("arguments, message", [
    (dict(factor=1.0), r"factor must be in \(0, 1\)"), (dict(factor=0), r"factor must be in"),
    (dict(patience=-1), "patience must be an integer >= 0"),
    (dict(cooldown=1.5), "cooldown must be an integer"), (dict(min_lr=-1), "min_lr must be"),
    (dict(monitor="val_r2"), "does not compute"),
])
def test_bad_arguments_are_refused(arguments, message):
    with pytest.raises(ConfigError, match=message):
        ReduceLROnPlateau(**arguments).on_fit_begin(fake_trainer(), INFO)


def test_in_a_fit_the_factor_multiplies_the_schedule_and_the_coupling():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 4)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    plateau = ReduceLROnPlateau("loss", factor=0.5, patience=0, min_delta=10.0, verbose=False)
    trainer = Trainer("mlp", seed=0, lr=0.01, lr_schedule="cosine", lr_scaling="linear",
                      optimizer="sgd")
    # min_delta=10: no epoch improves on the first, so each epoch from the second halves the lr
    history = trainer.fit(x, y, batch_size="20,40@2e", epochs=4, callbacks=[plateau])
    steps = history.steps
    for record in steps:
        epoch = (record["samples_seen"] - 1) // 200
        schedule = 0.5 * (1 + np.cos(np.pi * (record["samples_seen"] - record["samples"]) / 800))
        coupling = record["batch_size"] / 20
        factor = 0.5 ** max(epoch - 1, 0)  # reduced after epochs 2 and 3 (0-based 1, 2)
        assert record["lr"] == pytest.approx(0.01 * coupling * schedule * factor), record
    assert plateau.reductions_ == 3 and trainer.state_.lr_control.plateau == 0.125


def test_a_reduction_before_any_improvement_is_said_plainly(capsys):
    plateau = ReduceLROnPlateau(factor=0.5, patience=0)
    assert lrs(plateau, [float("nan"), float("nan")]) == [0.5, 0.25]
    assert "val_loss has not improved for 0 epochs" not in capsys.readouterr().err


def test_keras_positional_arguments_keep_their_meaning():
    # Keras: ReduceLROnPlateau(monitor, factor, patience, verbose, mode, min_delta, cooldown, min_lr)
    plateau = ReduceLROnPlateau("val_loss", 0.2, 4, 1, "min", 0.01, 2, 1e-6)
    assert (plateau.factor, plateau.patience, plateau.verbose, plateau.mode, plateau.min_delta,
            plateau.cooldown, plateau.min_lr) == (0.2, 4, 1, "min", 0.01, 2, 1e-6)


def test_the_plateau_factor_carries_into_the_next_fit_of_the_same_trainer():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(100, 4)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    trainer = Trainer("mlp", seed=0, lr=0.01)
    plateau = ReduceLROnPlateau("loss", factor=0.5, patience=0, min_delta=10.0, verbose=False)
    trainer.fit(x, y, batch_size=50, epochs=3, callbacks=[plateau])
    history = trainer.fit(x, y, batch_size=50, epochs=1)  # as Keras keeps the lowered lr
    assert history[0]["lr"] == pytest.approx(0.01 * 0.25)

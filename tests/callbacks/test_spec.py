"""The CLI's callback specs (callbacks/spec.py): what each grammar sets, and the one-line error,
with the fix, for each way a spec can be wrong."""
from pathlib import Path

import pytest

from batchtrain import EarlyStopping, ModelCheckpoint, ReduceLROnPlateau
from batchtrain.callbacks.spec import (early_stopping, monitor_callbacks, reduce_lr_on_plateau,
                                       save_best)
from batchtrain.errors import ConfigError


def arguments(callback, *names):
    return {name: getattr(callback, name) for name in names}


def test_early_stopping_specs():
    callback = early_stopping("val_loss:patience=3,restore_best")
    assert isinstance(callback, EarlyStopping)
    assert arguments(callback, "monitor", "patience", "restore_best_weights", "min_delta") == {
        "monitor": "val_loss", "patience": 3, "restore_best_weights": True, "min_delta": 0.0}
    callback = early_stopping("val_accuracy:min_delta=0.01,mode=max,baseline=0.5,start_from_epoch=2,"
                              "restore_best_weights=false")
    assert arguments(callback, "monitor", "min_delta", "mode", "baseline", "start_from_epoch",
                     "restore_best_weights") == {"monitor": "val_accuracy", "min_delta": 0.01,
                                                 "mode": "max", "baseline": 0.5,
                                                 "start_from_epoch": 2, "restore_best_weights": False}
    assert early_stopping("loss").monitor == "loss"
    assert early_stopping("patience=2").monitor == "val_loss"  # options alone: the default monitor
    assert early_stopping("restore_best").restore_best_weights is True


def test_plateau_and_save_best_specs(tmp_path):
    callback = reduce_lr_on_plateau("val_loss:factor=0.5,patience=2,cooldown=1,min_lr=1e-5")
    assert isinstance(callback, ReduceLROnPlateau)
    assert arguments(callback, "monitor", "factor", "patience", "cooldown", "min_lr") == {
        "monitor": "val_loss", "factor": 0.5, "patience": 2, "cooldown": 1, "min_lr": 1e-5}
    best = save_best("val_mae:mode=min", tmp_path)
    assert isinstance(best, ModelCheckpoint)
    assert (best.monitor, best.mode, best.directory) == ("val_mae", "min", tmp_path)


@pytest.mark.parametrize("make, text, message", [
    (early_stopping, "val_loss:patiance=3", r"unknown option 'patiance' \(did you mean patience\?\)"),
    (early_stopping, "val_loss:patience=-1", "patience must be an integer >= 0, got '-1'"),
    (early_stopping, "val_loss:patience=2.5", "patience must be an integer"),
    (early_stopping, "val_loss:patience", r"patience needs a value \(patience=...\)"),
    (early_stopping, "val_loss:min_delta=nan", "min_delta must be a finite number"),
    (early_stopping, "val_loss:restore_best=maybe", "restore_best is a flag"),
    (early_stopping, "val loss", "'val loss' is not a metric name"),
    (early_stopping, "  ", "needs a monitor and options"),
    (reduce_lr_on_plateau, "val_loss:factor=1.5", r"factor must be in \(0, 1\), got 1.5"),
    (reduce_lr_on_plateau, "val_loss:factor=0", r"factor must be in \(0, 1\)"),
    (reduce_lr_on_plateau, "val_loss:mode=up", "mode must be one of auto, min, max"),
    (lambda text: save_best(text, Path("run")), "val_loss:patience=1", "unknown option 'patience'"),
    (reduce_lr_on_plateau, "val_loss:min_lr=-1", "min_lr must be a number >= 0"),
    (reduce_lr_on_plateau, "val_loss:patience=1,cooldown=-2", "cooldown must be an integer >= 0"),
])
def test_bad_specs_name_the_problem_and_an_example(make, text, message):
    with pytest.raises(ConfigError, match=message) as raised:
        made = make(text)
        made.check()  # what fit begin checks, checked by the CLI before any data is read
    assert "\n" not in str(raised.value)


def test_monitor_callbacks_checks_monitors_any_task_could_compute(tmp_path):
    made = monitor_callbacks("val_loss:patience=1", "loss:factor=0.5", "val_r2", tmp_path, True)
    assert [type(callback) for callback in made] == [EarlyStopping, ReduceLROnPlateau,
                                                     ModelCheckpoint]
    assert made[2].directory == tmp_path
    assert monitor_callbacks(None, None, None, tmp_path, False) == []
    with pytest.raises(ConfigError, match="--save-best monitors 'val_loss' but the fit has no "
                                          "validation data"):
        monitor_callbacks(None, None, "val_loss", tmp_path, False)
    with pytest.raises(ConfigError, match=r"--early-stopping monitors 'val_acc'.*did you mean"):
        monitor_callbacks("val_acc", None, None, tmp_path, True)

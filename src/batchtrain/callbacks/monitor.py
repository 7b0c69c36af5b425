"""What EarlyStopping, ReduceLROnPlateau and ModelCheckpoint share: a monitored quantity of the
epoch's logs, the direction in which it improves, and whether a value improves on another.

The monitored quantity is "loss" or a metric of the run, for the validation data with "val_"
before it (val_loss, val_accuracy). mode "auto" takes the direction from the name: losses and
errors (loss, mae, rmse) improve downwards, accuracy and r2 upwards (Keras reads it from the
metric; an unknown name there, as here, asks for mode="min" or "max").
"""
import difflib
import math
import numbers

from batchtrain.errors import ConfigError

MODES = ("auto", "min", "max")
DOWNWARDS = ("loss", "mae", "rmse", "mse")
UPWARDS = ("accuracy", "acc", "r2", "auc")


def direction(monitor: str, mode: str) -> str:
    """ "min" or "max" for `monitor` under `mode`; ConfigError where auto cannot tell."""
    if mode not in MODES:
        raise ConfigError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    if mode != "auto":
        return mode
    name = monitor.removeprefix("val_")
    if name in DOWNWARDS:
        return "min"
    if name in UPWARDS:
        return "max"
    raise ConfigError(f"cannot tell whether {monitor!r} should go up or down; pass mode='min' "
                      "or mode='max'")


def improves(value: float, reference: float | None, direction: str, min_delta: float) -> bool:
    """Whether `value` beats `reference` by more than min_delta (>= 0) in `direction`; anything
    beats None (no value yet), and NaN never improves."""
    if math.isnan(value):
        return False
    if reference is None:
        return True
    return value < reference - min_delta if direction == "min" else value > reference + min_delta


def check_monitor(who: str, monitor: str, metric_names, validation_samples: int) -> None:
    """ConfigError, before training, unless the epoch's logs will hold `monitor`: "loss" or one of
    the run's metrics, "val_"-prefixed only when there is validation data."""
    if not isinstance(monitor, str) or not monitor:
        raise ConfigError(f"{who} monitor must be a name such as 'val_loss', got {monitor!r}")
    names = ["loss", *metric_names]
    known = names + [f"val_{name}" for name in names]
    if monitor.startswith("val_") and monitor.removeprefix("val_") in names and not validation_samples:
        raise ConfigError(f"{who} monitors {monitor!r} but the fit has no validation data; hold "
                          f"some out (validation_split > 0, --validation-split) or monitor "
                          f"{monitor[4:]!r}")
    if monitor not in known:
        close = difflib.get_close_matches(monitor, known, n=1)
        raise ConfigError(f"{who} monitors {monitor!r}, which this run does not compute"
                          + (f" (did you mean {close[0]}?)" if close else "")
                          + f"; choose one of {', '.join(known)}")


def monitored(logs: dict, monitor: str) -> float:
    """The epoch's value of `monitor` (check_monitor has made sure that it is there)."""
    return float(logs[monitor])


def check_count(who: str, name: str, value) -> int:
    """value as an int >= 0 (numpy integers included); ConfigError naming it otherwise."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise ConfigError(f"{who} {name} must be an integer >= 0, got {value!r}")
    return int(value)


def check_number(who: str, name: str, value, allow_none: bool = False) -> float | None:
    """value as a finite float (numpy scalars included: a checkpoint holds plain floats only)."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ConfigError(f"{who} {name} must be a finite number, got {value!r}")
    return float(value)


def check_saved_monitor(who: str, state: dict, monitor: str) -> None:
    """ConfigError when a checkpoint's state of `who` was of another monitored quantity."""
    saved = state.get("monitor", monitor)
    if saved != monitor:
        raise ConfigError(f"the checkpoint's {who} monitored {saved} but this {who} monitors "
                          f"{monitor}; resume with the callbacks the run was trained with")

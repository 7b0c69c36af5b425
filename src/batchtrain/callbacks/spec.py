"""The CLI's callback specs: "MONITOR:key=value,flag" for --early-stopping,
--reduce-lr-on-plateau and --save-best.

  val_loss                         the monitor alone, every option at its default
  val_loss:patience=3,restore_best options after a colon: key=value, or a flag's name alone
  patience=3                       options alone: the monitor at its default (val_loss)

A bad spec is a ConfigError that names the option, what is wrong and an example.
"""
import difflib
import math
from dataclasses import dataclass
from pathlib import Path

from batchtrain.callbacks.best_model import ModelCheckpoint
from batchtrain.callbacks.early_stopping import EarlyStopping
from batchtrain.callbacks.monitor import MODES, check_monitor
from batchtrain.callbacks.plateau import ReduceLROnPlateau
from batchtrain.errors import ConfigError
from batchtrain.tasks.metrics import CLASSIFICATION_METRICS, REGRESSION_METRICS

ALL_METRICS = CLASSIFICATION_METRICS + REGRESSION_METRICS  # what a monitor may name, any task


@dataclass(frozen=True)
class Spec:
    """One option's grammar: its flag, an example, the keyword each key sets and its kind
    ("int", "number", "mode", "flag": a name alone sets True)."""

    flag: str
    example: str
    keys: dict[str, tuple[str, str]]  # key in the spec -> (keyword argument, kind)


EARLY_STOPPING = Spec("--early-stopping", "val_loss:patience=3,restore_best", {
    "patience": ("patience", "int"), "min_delta": ("min_delta", "number"),
    "mode": ("mode", "mode"), "baseline": ("baseline", "number"),
    "restore_best": ("restore_best_weights", "flag"),
    "restore_best_weights": ("restore_best_weights", "flag"),
    "start_from_epoch": ("start_from_epoch", "int")})
PLATEAU = Spec("--reduce-lr-on-plateau", "val_loss:factor=0.5,patience=2", {
    "factor": ("factor", "number"), "patience": ("patience", "int"),
    "min_delta": ("min_delta", "number"), "cooldown": ("cooldown", "int"),
    "min_lr": ("min_lr", "number"), "mode": ("mode", "mode")})
SAVE_BEST = Spec("--save-best", "val_accuracy or val_loss:mode=min", {
    "mode": ("mode", "mode"), "min_delta": ("min_delta", "number")})


def parse_spec(text: str, spec: Spec) -> tuple[str, dict]:
    """(monitor, keyword arguments) of a spec's text; ConfigError naming the fix otherwise."""
    if not isinstance(text, str) or not text.strip():
        raise ConfigError(f"{spec.flag} needs a monitor and options, e.g. {spec.example}")
    text = text.strip()
    head, colon, rest = text.partition(":")
    if not colon and ("=" in head or head in spec.keys):  # options alone
        head, rest = "val_loss", text
    monitor = head.strip() or "val_loss"
    if not monitor.replace("_", "").isalnum():
        raise ConfigError(f"{spec.flag}: {monitor!r} is not a metric name (e.g. val_loss, "
                          f"val_accuracy); write {spec.example}")
    options = {}
    for item in (part.strip() for part in rest.split(",") if part.strip()):
        key, has_value, value = (part.strip() for part in item.partition("="))
        if key not in spec.keys:
            close = difflib.get_close_matches(key, spec.keys, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise ConfigError(f"{spec.flag}: unknown option {key!r}{hint}; options: "
                              f"{', '.join(spec.keys)}; e.g. {spec.example}")
        keyword, kind = spec.keys[key]
        if kind == "flag":
            if has_value and value.lower() not in ("true", "1", "yes", "false", "0", "no"):
                raise ConfigError(f"{spec.flag}: {key} is a flag: write {key} alone, or {key}=false")
            options[keyword] = not has_value or value.lower() in ("true", "1", "yes")
            continue
        if not has_value or not value:
            raise ConfigError(f"{spec.flag}: {key} needs a value ({key}=...), e.g. {spec.example}")
        options[keyword] = _value(value, kind, key, spec)
    return monitor, options


def _value(text: str, kind: str, key: str, spec: Spec):
    if kind == "mode":
        if text not in MODES:
            raise ConfigError(f"{spec.flag}: mode must be one of {', '.join(MODES)}, got {text!r}")
        return text
    try:
        number = int(text) if kind == "int" else float(text)
    except ValueError:
        number = None
    if number is None or (kind == "int" and number < 0) or not math.isfinite(number):
        what = "an integer >= 0" if kind == "int" else "a finite number"
        raise ConfigError(f"{spec.flag}: {key} must be {what}, got {text!r}; e.g. {spec.example}")
    return number


def early_stopping(text: str) -> EarlyStopping:
    monitor, options = parse_spec(text, EARLY_STOPPING)
    return EarlyStopping(monitor, **options)


def reduce_lr_on_plateau(text: str) -> ReduceLROnPlateau:
    monitor, options = parse_spec(text, PLATEAU)
    return ReduceLROnPlateau(monitor, **options)  # its ranges: ReduceLROnPlateau.check


def save_best(text: str, directory: str | Path) -> ModelCheckpoint:
    monitor, options = parse_spec(text, SAVE_BEST)
    return ModelCheckpoint(directory, monitor, **options)


def monitor_callbacks(early_stopping_spec: str | None, plateau_spec: str | None,
                      save_best_spec: str | None, best_dir: Path, validation: bool) -> list:
    """The callbacks the three options ask for, in that order (None: not asked), the best model
    kept in best_dir; ConfigError for a bad spec, or a monitor that no run of any task computes
    (val_* without validation data included). The run's own metrics are checked at fit begin."""
    made = []
    for spec, text, make in ((EARLY_STOPPING, early_stopping_spec, early_stopping),
                             (PLATEAU, plateau_spec, reduce_lr_on_plateau),
                             (SAVE_BEST, save_best_spec, lambda text: save_best(text, best_dir))):
        if text:
            callback = make(text)
            check_monitor(spec.flag, callback.monitor, ALL_METRICS, int(validation))
            try:
                callback.check(f"{spec.flag}:")  # the ranges fit() would check, named by the flag
            except ConfigError as error:
                raise ConfigError(f"{error}; e.g. {spec.example}") from None
            made.append(callback)
    return made

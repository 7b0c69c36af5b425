"""Durations: how long something lasts, in samples or in epochs, everywhere a length is given.

Schedules (learning rate and batch size), checkpoint intervals and warm-ups all take one:
    30000, "30000" or "30000s"   samples
    "2e", "0.5e"                 epochs (times samples_per_epoch, rounded)
Samples are the unit because the batch size may change mid-run: a length in steps would move.
"""
import numbers
import re

from batchtrain.errors import ConfigError

Duration = int | str  # samples (30000, "30000", "30000s") or epochs ("2e", "0.5e")
_EPOCHS = re.compile(r"(\d+(?:\.\d*)?|\.\d+)e")
_SAMPLES = re.compile(r"(\d+)s?")


def parse_duration(duration: Duration) -> tuple[float, bool]:
    """(amount, in_epochs) of a duration; ConfigError if it is neither samples nor epochs."""
    if isinstance(duration, numbers.Integral) and not isinstance(duration, bool) and duration >= 0:
        return float(duration), False
    text = duration.strip().lower() if isinstance(duration, str) else ""
    if match := _EPOCHS.fullmatch(text):
        return float(match[1]), True
    if match := _SAMPLES.fullmatch(text):
        return float(match[1]), False
    raise ConfigError(f"bad duration {duration!r}: write samples as 30000 or '30000s', "
                      "epochs as '2e' or '0.5e' (no negative values)")


def to_samples(duration: Duration, samples_per_epoch: int) -> int:
    """A duration in samples; epochs are multiplied by samples_per_epoch and rounded."""
    amount, in_epochs = parse_duration(duration)
    return round(amount * samples_per_epoch) if in_epochs else int(amount)


def describe_duration(duration: Duration) -> str:
    """'2 epochs', '30000 samples'."""
    amount, in_epochs = parse_duration(duration)
    shown = f"{int(amount)}" if amount.is_integer() else f"{amount:g}"  # 1000000, not 1e+06
    return f"{shown} {'epoch' if in_epochs else 'sample'}{'' if amount == 1 else 's'}"

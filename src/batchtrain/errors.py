"""Project exceptions, and the small validators that raise them.

Every error about bad input is a ValueError whose message names the problem and the fix;
TrainingInterrupted (a signal stopped fit) is not about input, so it is a plain Exception.
"""
import numbers


class BatchTrainError(ValueError):
    """Base class of batchtrain's errors about bad input (data, options, files)."""


class ConfigError(BatchTrainError):
    """An option, config file or argument is invalid."""


class DataError(BatchTrainError):
    """Training or evaluation data is missing, malformed or inconsistent."""


class DatasetNotFoundError(DataError):
    """A built-in dataset is neither on disk nor downloadable."""


class NonFiniteError(BatchTrainError):
    """A step produced a NaN or infinite loss or gradient."""


class TrainingInterrupted(Exception):
    """fit() stopped on a signal after finishing its step (and checkpointing, where configured)."""

    def __init__(self, signal_name: str, step: int):
        super().__init__(f"training interrupted by {signal_name} after step {step}")
        self.signal_name = signal_name
        self.step = step


def is_count(value: object, minimum: int = 1) -> bool:
    """True for an integer (Python or numpy, not bool) >= minimum."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= minimum


def check_batch_size(batch_size: object) -> None:
    if not is_count(batch_size):
        raise ConfigError(f"batch_size must be an integer >= 1, got {batch_size!r}")


def check_count(value: object, name: str) -> None:
    """ConfigError unless value is an integer >= 1 ("epochs must be an integer >= 1, got 0")."""
    if not is_count(value):
        raise ConfigError(f"{name} must be an integer >= 1, got {value!r}")

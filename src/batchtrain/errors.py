"""Project exceptions: every one is a ValueError whose message names the problem and the fix."""


class BatchTrainError(ValueError):
    """Base class of batchtrain's errors about bad input (data, options, files)."""


class ConfigError(BatchTrainError):
    """An option, config file or argument is invalid."""


class DataError(BatchTrainError):
    """Training or evaluation data is missing, malformed or inconsistent."""


class DatasetNotFoundError(DataError):
    """A built-in dataset is neither on disk nor downloadable."""

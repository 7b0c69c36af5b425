"""Durations (durations.py): samples or epochs, parsed, converted and described."""
import re

import numpy as np
import pytest

from batchtrain.durations import describe_duration, parse_duration, to_samples
from batchtrain.errors import ConfigError

BAD_DURATION = ("write samples as 30000 or '30000s', epochs as '2e' or '0.5e' "
                "(no negative values)")


@pytest.mark.parametrize("duration", [30000, "30000", "30000s", "30000S", " 30000s ",
                                      np.int64(30000)])
def test_samples(duration):
    assert parse_duration(duration) == (30000.0, False)
    assert to_samples(duration, 7) == 30000  # the epoch length does not matter
    assert type(to_samples(duration, 7)) is int
    assert describe_duration(duration) == "30000 samples"


@pytest.mark.parametrize("duration", [0, "0", "0s"])
def test_zero_samples_is_a_duration(duration):
    assert parse_duration(duration) == (0.0, False)
    assert to_samples(duration, 100) == 0
    assert describe_duration(duration) == "0 samples"


@pytest.mark.parametrize("duration, amount", [("2e", 2.0), ("0.5e", 0.5), (".5e", 0.5),
                                              ("2.e", 2.0), ("2E", 2.0), (" 1.25e ", 1.25),
                                              ("0e", 0.0)])
def test_epochs(duration, amount):
    assert parse_duration(duration) == (amount, True)


@pytest.mark.parametrize("duration, samples_per_epoch, expected", [
    ("2e", 600, 1200),
    ("0.5e", 600, 300),
    (".5e", 600, 300),
    ("0.5e", 7, 4),      # 3.5
    ("0.3e", 10, 3),     # 3.0000000000000004, not 4
    ("0.7e", 3, 2),      # 2.1 rounds down
    ("0.9e", 3, 3),      # 2.7 rounds up
    ("1.25e", 1001, 1251),  # 1251.25
    ("0.5e", 1, 0),      # Python's round: halves go to the even neighbour
])
def test_epochs_to_samples_round(duration, samples_per_epoch, expected):
    result = to_samples(duration, samples_per_epoch)
    assert result == expected and type(result) is int


@pytest.mark.parametrize("duration, text", [
    ("2e", "2 epochs"), ("1e", "1 epoch"), ("0.5e", "0.5 epochs"), (".5e", "0.5 epochs"),
    ("1", "1 sample"), (1, "1 sample"), ("1s", "1 sample"), (2, "2 samples"),
    (1000000, "1000000 samples"), ("123456789s", "123456789 samples"), ("100e", "100 epochs"),
])
def test_describe(duration, text):
    assert describe_duration(duration) == text


@pytest.mark.parametrize("duration", [-1, -30000, "-5", "-2e", "abc", "2x", "2es", "1e5", "1.5",
                                      1.5, 2.0, True, False, None, "", "e", "s", [3]])
def test_bad_durations_are_refused_with_the_way_to_write_one(duration):
    message = f"bad duration {duration!r}: {BAD_DURATION}"
    for convert in (parse_duration, lambda d: to_samples(d, 100), describe_duration):
        with pytest.raises(ConfigError, match=f"^{re.escape(message)}$"):
            convert(duration)

"""Memory budgets (batching/budget.py): the available memory, the default budget, and budgets as
users write them."""
import os
import sys

import pytest

from batchtrain.batching import budget
from batchtrain.batching.budget import (available_memory_bytes, default_budget_bytes, format_bytes,
                                        parse_budget)
from batchtrain.errors import ConfigError


def test_available_memory_is_memavailable_and_the_default_budget_a_fraction_of_it(
        monkeypatch, tmp_path):
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       16384000 kB\nMemFree:         1000000 kB\n"
                       "MemAvailable:    8192000 kB\nBuffers:          200000 kB\n")
    monkeypatch.setattr(budget, "MEMINFO", meminfo)
    monkeypatch.setattr(budget, "CGROUP_LIMIT", tmp_path / "no-cgroup")
    available = 8192000 * 1024  # the file's "kB" are KiB; MemAvailable, not MemFree
    assert available_memory_bytes() == available
    assert default_budget_bytes() == available // 2
    assert default_budget_bytes(0.25) == available // 4 and default_budget_bytes(1) == available
    for fraction in (1.5, 0, -0.5):
        with pytest.raises(ConfigError, match=r"\(0, 1\]"):
            default_budget_bytes(fraction)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/meminfo")
def test_available_memory_of_this_machine_is_within_its_physical_memory():
    physical = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    assert 0 < available_memory_bytes() <= physical


def test_available_memory_falls_back_to_sysconf_and_honours_a_cgroup_limit(monkeypatch, tmp_path):
    pages = {"SC_AVPHYS_PAGES": 1000, "SC_PAGE_SIZE": 4096}
    monkeypatch.setattr(budget, "MEMINFO", tmp_path / "no-meminfo")
    monkeypatch.setattr(budget.os, "sysconf", pages.__getitem__)
    monkeypatch.setattr(budget, "CGROUP_LIMIT", tmp_path / "max")
    monkeypatch.setattr(budget, "CGROUP_USAGE", tmp_path / "current")
    assert available_memory_bytes() == 1000 * 4096  # os.sysconf pages; no cgroup files
    (tmp_path / "current").write_text("262144\n")
    for limit, expected in [("1048576", 1048576 - 262144),  # the cgroup's room is smaller
                            ("8000000", 1000 * 4096),       # the free pages are fewer
                            ("max", 1000 * 4096),           # cgroup v2 without a limit
                            ("200000", 0)]:                 # over its limit: nothing left
        (tmp_path / "max").write_text(limit + "\n")
        assert available_memory_bytes() == expected, limit


def test_available_memory_without_any_source_says_what_to_do(monkeypatch, tmp_path):
    monkeypatch.setattr(budget, "MEMINFO", tmp_path / "no-meminfo")
    monkeypatch.setattr(budget.os, "sysconf", lambda name: (_ for _ in ()).throw(ValueError(name)))
    with pytest.raises(ConfigError, match="memory budget in bytes"):
        available_memory_bytes()


@pytest.mark.parametrize("text, parsed", [
    ("8GiB", 8 * 2**30), ("512 MiB", 512 * 2**20), ("1.5kb", 1500), ("1000", 1000), ("0.5", 0.5),
    (2048, 2048), (0.25, 0.25), (None, None),
])
def test_budgets_as_users_write_them(text, parsed):
    assert parse_budget(text) == parsed and type(parse_budget(text)) is type(parsed)


@pytest.mark.parametrize("bad, message", [
    ("8 parsecs", "is not a size"), (True, "must be bytes"), (1.5, r"must be in \(0, 1\]"),
    (0, "must be positive"), ("0b", "must be positive"),
])
def test_bad_budgets_name_the_fix(bad, message):
    with pytest.raises(ConfigError, match=message):
        parse_budget(bad)


@pytest.mark.parametrize("count, text", [
    (0, "0 B"), (1023, "1023 B"), (1536, "1.5 KiB"), (5 * 2**20, "5.0 MiB"), (3 * 2**40, "3.0 TiB"),
])
def test_format_bytes_in_binary_units(count, text):
    assert format_bytes(count) == text

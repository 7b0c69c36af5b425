"""Memory budgets: how much memory is available, budgets as users write them (bytes, a fraction
of available memory, or "8GiB"), and byte counts as users read them."""
import math
import os
import re
from pathlib import Path

import torch

from batchtrain.errors import ConfigError

MEMINFO = Path("/proc/meminfo")
# cgroup v2: in a container MemAvailable describes the host; the cgroup's limit is what kills.
CGROUP_LIMIT, CGROUP_USAGE = Path("/sys/fs/cgroup/memory.max"), Path("/sys/fs/cgroup/memory.current")
UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
         "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def available_memory_bytes() -> int:
    """Bytes of RAM this process can still take: MemAvailable, capped by a cgroup v2 limit.

    MemAvailable (Linux) counts the page cache the kernel can reclaim; elsewhere, free physical
    pages (os.sysconf), which do not, so the answer is lower than the truth there.
    """
    try:
        fields = dict(line.split(":", 1) for line in MEMINFO.read_text().splitlines())
        available = int(fields["MemAvailable"].split()[0]) * 1024  # the file's "kB" are KiB
    except (OSError, KeyError, ValueError):
        try:
            available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (AttributeError, OSError, ValueError):
            raise ConfigError("cannot read the available memory (no /proc/meminfo, no "
                              "os.sysconf); give the memory budget in bytes, e.g. 8GiB") from None
    try:  # memory.max reads "max" without a limit: ValueError
        available = min(available, int(CGROUP_LIMIT.read_text()) - int(CGROUP_USAGE.read_text()))
    except (OSError, ValueError):
        pass
    return max(available, 0)


def default_budget_bytes(fraction: float = 0.5) -> int:
    """Bytes for a training step: a fraction (default half) of the available memory.

    Half, as the estimate covers one step: not the data, other processes, nor the heap
    fragmentation that later steps add (batching/memory.py ALLOCATOR_SLACK).
    """
    if not 0 < fraction <= 1:
        raise ConfigError(f"memory budget fraction must be in (0, 1], got {fraction}")
    return int(available_memory_bytes() * fraction)


def parse_budget(budget: float | int | str | None) -> float | int | None:
    """None (default), a fraction of available memory (float in (0, 1]) or a byte count (int)."""
    if budget is None or isinstance(budget, bool):
        if isinstance(budget, bool):
            raise ConfigError(f"memory_budget must be bytes, a fraction or a size, got {budget!r}")
        return None
    if isinstance(budget, str):
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", budget)
        if not match or match.group(2).lower() not in UNITS:
            raise ConfigError(f"memory budget {budget!r} is not a size; write e.g. 8GiB, 512MiB, "
                              "a byte count, or a fraction of available memory such as 0.5")
        number, unit = float(match.group(1)), match.group(2).lower()
        # Without a unit: a decimal is a fraction of available memory, an integer a byte count.
        budget = number if not unit and "." in match.group(1) else int(number * UNITS[unit])
    if isinstance(budget, float) and not 0 < budget <= 1:
        raise ConfigError(f"a fractional memory budget must be in (0, 1], got {budget}")
    if isinstance(budget, int) and budget < 1:
        raise ConfigError(f"memory budget must be positive, got {budget} bytes")
    return budget


def resolve_budget(budget: float | int | str | None, device: torch.device | None = None) -> int | None:
    """Bytes for the memory ceiling (None: the estimator's default). A fraction is of the free
    memory of the device that trains: the GPU's on CUDA, the available RAM otherwise."""
    parsed = parse_budget(budget)
    if isinstance(parsed, float):
        if device is not None and device.type == "cuda":
            return int(parsed * torch.cuda.mem_get_info(device)[0])
        return int(parsed * available_memory_bytes())
    return parsed


def format_bytes(count: int) -> str:
    """1536 -> '1.5 KiB' (binary units, as free(1) and nvidia-smi print them)."""
    if abs(count) < 1024:
        return f"{count} B"
    exponent = min(int(math.log(abs(count), 1024)), 4)
    return f"{count / 1024**exponent:.1f} {('KiB', 'MiB', 'GiB', 'TiB')[exponent - 1]}"

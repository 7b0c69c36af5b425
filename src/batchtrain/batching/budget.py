"""Memory budgets as users write them (bytes, a fraction of available RAM, or "8GiB"), and
byte counts as users read them."""
import math
import re

import torch

from batchtrain.errors import ConfigError

UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
         "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


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
    from batchtrain.batching.memory import available_memory_bytes  # the estimator owns the probe

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

"""Numeric precision of training: full fp32, or mixed precision through torch.autocast.

Names follow Lightning's:
  "32"          everything in float32 (the default; exactly what batchtrain did before modes)
  "bf16-mixed"  forward and loss under autocast to bfloat16; weights, gradients and optimizer
                state stay float32 (bfloat16 has float32's range: no loss scaling needed)
  "16-mixed"    autocast to float16 with a gradient scaler (float16 overflows above 65504, so
                the loss is scaled up for backward and the gradients unscaled before use); meant
                for CUDA, allowed on a CPU (slow there: few CPUs have float16 units)
  "auto"        "bf16-mixed" where the device computes in bfloat16 natively (a CUDA device with
                bf16 support; a CPU with AVX512-BF16 or AMX-BF16), else "32"
"""
from contextlib import nullcontext
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import torch

from batchtrain.errors import ConfigError

PRECISIONS = ("32", "bf16-mixed", "16-mixed", "auto")
ALIASES = {"32-true": "32", "bf16": "bf16-mixed", "16": "16-mixed"}
CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # /proc/cpuinfo flags of native bfloat16 units
CPUINFO = Path("/proc/cpuinfo")


@dataclass(frozen=True)
class Precision:
    """A resolved precision: its name, the autocast dtype (None for "32") and the device type."""

    name: str
    dtype: torch.dtype | None
    device_type: str

    @property
    def scales_loss(self) -> bool:
        """True for float16, whose gradients need a scaler (GradScaler)."""
        return self.dtype == torch.float16

    def autocast(self):
        """The context forward passes and losses run in."""
        if self.dtype is None:
            return nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)

    def scaler(self) -> "torch.amp.GradScaler | None":
        """A fresh gradient scaler for "16-mixed", else None."""
        return torch.amp.GradScaler(self.device_type) if self.scales_loss else None


def canonical(precision: object) -> str:
    """The precision's name ("32", "bf16-mixed", "16-mixed", "auto"); ConfigError naming the
    choices for anything else. 32 (an int) and Lightning's "32-true" mean "32"."""
    text = str(precision).strip().lower() if isinstance(precision, (str, int)) and not isinstance(
        precision, bool) else None
    text = ALIASES.get(text, text)
    if text not in PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    return text


def resolve_precision(precision: object, device: torch.device) -> Precision:
    """The precision training on `device` uses ("auto" decided here)."""
    name = canonical(precision)
    if name == "auto":
        name = "bf16-mixed" if native_bf16(device) else "32"
    dtype = {"32": None, "bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}[name]
    if dtype is not None and device.type not in ("cpu", "cuda"):
        raise ConfigError(f"precision {name!r} needs a CPU or CUDA device, got {device}; use "
                          "precision 32")
    return Precision(name, dtype, device.type)


def native_bf16(device: torch.device) -> bool:
    """True where the device computes in bfloat16 natively (not emulated in float32)."""
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)
    return device.type == "cpu" and bool(set(CPU_BF16_FLAGS) & cpu_flags())


@cache
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags from /proc/cpuinfo (empty where it cannot be read)."""
    try:
        with CPUINFO.open() as handle:
            for line in handle:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()

"""Optimizers by name, with Keras' defaults.

| name    | torch class      | defaults (Keras 3)                                                   |
|---------|------------------|----------------------------------------------------------------------|
| sgd     | SGD              | lr=0.01, momentum=0.0, nesterov=False                                |
| adam    | Adam             | lr=0.001, betas=(0.9, 0.999), eps=1e-7                               |
| adamw   | AdamW            | lr=0.001, betas=(0.9, 0.999), eps=1e-7, weight_decay=0.004           |
| rmsprop | RMSprop          | lr=0.001, alpha(rho)=0.9, eps=1e-7, momentum=0.0, centered=False     |

Keras adds epsilon to sqrt(v) before bias correction, torch after; with eps=1e-7 the two differ
only while sqrt(v) is below ~1e-6, so we keep torch's well-tested implementations.
SGD momentum: Keras' v = m*v - lr*g and torch's b = m*b + g; w -= lr*b are the same update for a
constant learning rate.

SGD, Adam and AdamW use torch's fused implementation (one kernel for all parameters) when every
parameter is a float tensor on the CPU or CUDA: the same update to float rounding, measured 3.4x
faster per Adam step and 2x per SGD-momentum step than the default per-parameter loop on the
CPU (tests/runtime/test_threads.py checks the equivalence). optimizer_options={"fused": False} turns it off.
"""
import math
import numbers
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from batchtrain.errors import ConfigError

OPTIMIZERS: dict[str, tuple[type[torch.optim.Optimizer], dict[str, Any]]] = {
    "sgd": (torch.optim.SGD, {"lr": 0.01, "momentum": 0.0, "nesterov": False}),
    "adam": (torch.optim.Adam, {"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-7}),
    "adamw": (torch.optim.AdamW, {"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-7,
                                  "weight_decay": 0.004}),
    "rmsprop": (torch.optim.RMSprop, {"lr": 1e-3, "alpha": 0.9, "eps": 1e-7, "momentum": 0.0,
                                      "centered": False}),
}

FUSED_OPTIMIZERS = ("sgd", "adam", "adamw")
FUSED_DEVICE_TYPES = ("cpu", "cuda")
# Options that choose an implementation or need the per-parameter loop: fused is left to the user.
IMPLEMENTATION_OPTIONS = ("fused", "foreach", "differentiable", "capturable")

MAX_LR = 1e3  # far above any learning rate that trains; 1e38 overflows in the first update
# Coefficients that weigh a running average: finite, in [0, 1).
AVERAGE_COEFFICIENTS = ("momentum", "alpha", "betas")
NON_NEGATIVE = ("eps", "weight_decay")

OptimizerLike = str | torch.optim.Optimizer | Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]


def make_optimizer(spec: OptimizerLike, model: nn.Module, lr: float | None = None,
                   **options: Any) -> torch.optim.Optimizer:
    """An optimizer for model's parameters.

    spec: a name in OPTIMIZERS, an Optimizer instance (used as is), or a factory called with the
    parameters (e.g. functools.partial(torch.optim.SGD, lr=0.1)).
    lr: overrides the default learning rate of a named optimizer (or of the instance's groups).
    options: keyword overrides of a named optimizer's defaults (momentum=0.9, nesterov=True ...).
    """
    if lr is not None:
        check_lr(lr)
    if isinstance(spec, torch.optim.Optimizer):
        if lr is not None:
            for group in spec.param_groups:
                group["lr"] = lr
        return spec
    if callable(spec):
        optimizer = spec(model.parameters())
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise ConfigError(f"the optimizer factory returned {type(optimizer).__name__}, "
                              "not a torch.optim.Optimizer")
        return make_optimizer(optimizer, model, lr)
    name = str(spec).lower()
    if name not in OPTIMIZERS:
        raise ConfigError(f"unknown optimizer {spec!r}; choose one of {sorted(OPTIMIZERS)} "
                          "or pass a torch.optim.Optimizer")
    cls, defaults = OPTIMIZERS[name]
    settings = {**defaults, **options, **({"lr": lr} if lr is not None else {})}
    check_settings(settings)
    if name in FUSED_OPTIMIZERS and _can_fuse(model, options):
        settings["fused"] = True
    if name == "sgd" and settings["nesterov"] and not settings["momentum"] > 0:
        raise ConfigError("nesterov=True needs momentum > 0, e.g. momentum=0.9")
    try:
        return cls(model.parameters(), **settings)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"invalid options for optimizer {name!r}: {error}") from error


def check_lr(lr: object) -> None:
    """Raise ConfigError unless lr is a number in (0, MAX_LR] (NaN and inf are not)."""
    value = _as_number(lr)
    if value is None or not 0 < value <= MAX_LR:
        raise ConfigError(f"lr must be a number in (0, {MAX_LR:g}], got {str(lr)[:200]}")


def check_settings(settings: dict[str, Any]) -> None:
    """Raise ConfigError for a named optimizer's setting that cannot train: lr out of range, an
    average's coefficient outside [0, 1), a negative eps or weight_decay, or any NaN or inf
    (torch accepts momentum=nan, and every step is then NaN)."""
    check_lr(settings["lr"])
    for key, setting in settings.items():
        problem = _setting_problem(key, setting)
        if problem:
            raise ConfigError(f"{key} {problem}, got {str(setting)[:200]}")


def _setting_problem(key: str, setting: object) -> str | None:
    items = setting if isinstance(setting, (tuple, list)) else (setting,)
    values = [value for value in map(_as_number, items) if value is not None]
    if not all(math.isfinite(value) for value in values):
        return "must be finite"
    if key in AVERAGE_COEFFICIENTS and not all(0 <= value < 1 for value in values):
        return "must be in [0, 1)"
    if key in NON_NEGATIVE and any(value < 0 for value in values):
        return "must be >= 0"
    return None


def _as_number(value: object) -> float | None:
    """A real number (Python, numpy or a one-element tensor) as a float; None for anything else."""
    if isinstance(value, bool):
        return None
    if isinstance(value, numbers.Real) or (isinstance(value, torch.Tensor) and value.numel() == 1):
        return float(value)
    return None


def _can_fuse(model: nn.Module, options: dict[str, Any]) -> bool:
    """Whether torch's fused kernel applies: float parameters on a supported device, no user choice."""
    if any(key in options for key in IMPLEMENTATION_OPTIONS):
        return False
    parameters = list(model.parameters())
    return bool(parameters) and all(p.device.type in FUSED_DEVICE_TYPES and p.is_floating_point()
                                    for p in parameters)

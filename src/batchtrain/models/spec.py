"""Model specs: a built-in name or an import path, with options, that builds a torch module.

A spec is what a run directory stores (as JSON) so `batchtrain evaluate/predict` can rebuild the
model before loading its weights: no pickled objects anywhere.
"""
import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from batchtrain.errors import ConfigError
from batchtrain.models.mlp import mlp
from batchtrain.models.seed_cnn import seed_cnn

# A factory takes (input_shape, n_outputs, **options) and returns an nn.Module.
Factory = Callable[..., nn.Module]

BUILTIN_MODELS: dict[str, Factory] = {"seed-cnn": seed_cnn, "mlp": mlp}


@dataclass(frozen=True)
class ModelSpec:
    """name: a built-in model ("seed-cnn", "mlp") or "package.module:factory"; options: its keywords."""

    name: str
    options: dict[str, Any] = field(default_factory=dict)

    def build(self, input_shape: Sequence[int], n_outputs: int) -> nn.Module:
        """Build the module for samples of `input_shape` and `n_outputs` output units."""
        factory = resolve_factory(self.name)
        try:
            model = factory(tuple(input_shape), n_outputs, **self.options)
        except TypeError as error:
            raise ConfigError(f"model {self.name!r} rejected its options {self.options}: {error}; "
                              "check the option names") from error
        if not isinstance(model, nn.Module):
            raise ConfigError(f"model factory {self.name!r} returned {type(model).__name__}, "
                              "not a torch.nn.Module; make it return the module")
        return model

    def to_dict(self) -> dict:
        return {"name": self.name, "options": dict(self.options)}


def resolve_factory(name: str) -> Factory:
    """The factory behind a built-in model name or a "package.module:factory" import path."""
    if name in BUILTIN_MODELS:
        return BUILTIN_MODELS[name]
    if ":" not in name:
        raise ConfigError(f"unknown model {name!r}; choose one of {sorted(BUILTIN_MODELS)} "
                          "or give an import path 'package.module:factory'")
    module_name, _, attribute = name.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ConfigError(f"cannot import module {module_name!r} for model {name!r}: {error}; "
                          "check the path and that the module is on PYTHONPATH") from error
    factory = getattr(module, attribute, None)
    if not callable(factory):
        raise ConfigError(f"module {module_name!r} has no callable {attribute!r} for model {name!r}; "
                          "give 'package.module:factory' where factory(input_shape, n_outputs) "
                          "returns an nn.Module")
    return factory

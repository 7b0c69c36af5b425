"""Model specs: a built-in name or an import path, with options, that builds a torch module.

A spec is what a run directory stores (as JSON) so `batchtrain evaluate/predict` can rebuild the
model before loading its weights: no pickled objects anywhere.

A run directory is data, never code. An import path read from a file (model.json, a run's
config.yaml) would import and call whatever module it names with arguments from the same file, so
anyone who shares a run could run code on the machine that evaluates it. Such a spec is rebuilt only
when the user names the factory again or opts in (`trust_model_code`, as Hugging Face's
`trust_remote_code`); built-in names are always rebuilt.
"""
import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from batchtrain.errors import ConfigError


class UntrustedModelError(ConfigError):
    """A file names a model factory (code) that the user has not named or trusted."""
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
        except (TypeError, ValueError) as error:  # ValueError: an option of the wrong kind
            if isinstance(error, ConfigError):
                raise
            raise ConfigError(f"model {self.name!r} rejected its options {str(self.options)[:200]}: "
                              f"{str(error)[:200]}; check the option names and values") from error
        if not isinstance(model, nn.Module):
            raise ConfigError(f"model factory {self.name!r} returned {type(model).__name__}, "
                              "not a torch.nn.Module; make it return the module")
        return model

    def to_dict(self) -> dict:
        return {"name": self.name, "options": dict(self.options)}


def is_import_path(name: str) -> bool:
    """True for "package.module:factory" (code to import), False for a built-in model name."""
    return name not in BUILTIN_MODELS and ":" in name


def check_trusted(name: str, source: str, trusted: bool) -> None:
    """Refuse to follow an import path that `source` (a file) names, unless `trusted`.

    trusted: the user named this factory themselves or opted in with trust_model_code.
    """
    if trusted or not is_import_path(name):
        return
    shown = name if len(name) <= 200 else name[:200] + "..."
    raise UntrustedModelError(
        f"{source} names the model factory {shown!r}, and rebuilding it would import and run that "
        f"code; if you trust where the run came from, name the factory yourself (--model {shown}; "
        f"Trainer.load(run_dir, model={shown!r})) or opt in with --trust-model-code "
        "(trust_model_code=True)")


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

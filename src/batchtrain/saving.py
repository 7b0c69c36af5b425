"""Exporting trained models without pickle: safetensors weights + a JSON description.

model.safetensors holds the state dict; model.json the model spec (to rebuild the module), the
task, the input shape and the metric names. Neither format can execute code when loaded.
"""
import json
from pathlib import Path
from typing import TYPE_CHECKING

from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from batchtrain.errors import BatchTrainError
from batchtrain.fileio import atomic_write
from batchtrain.models.spec import ModelSpec
from batchtrain.models.standardize import placeholder_standardized, standardization
from batchtrain.tasks import Task

if TYPE_CHECKING:
    from batchtrain.trainer import Trainer

WEIGHTS_FILE = "model.safetensors"
DESCRIPTION_FILE = "model.json"
FORMAT_VERSION = 1


def save_model(trainer: "Trainer", run_dir: str | Path) -> None:
    """Write run_dir/model.safetensors and run_dir/model.json for a trained trainer."""
    run_dir = Path(run_dir)
    spec = getattr(trainer, "model_spec_", None)
    description = {
        "format": FORMAT_VERSION,
        "model": spec.to_dict() if spec is not None else None,
        "task": trainer.task_.to_dict(),
        "input_shape": list(trainer.input_shape_),
        "metrics": list(trainer.metric_names_),
        "standardized": standardization(trainer.model_),
    }
    state = {name: tensor.detach().cpu().contiguous() for name, tensor
             in trainer.model_.state_dict().items()}
    atomic_write(run_dir / WEIGHTS_FILE, lambda path: save_file(state, str(path)))
    atomic_write(run_dir / DESCRIPTION_FILE,
                 lambda path: path.write_text(json.dumps(description, indent=2) + "\n"))


def load_description(run_dir: str | Path) -> dict:
    """The parsed model.json of a run directory, with a clear error if it is missing or malformed."""
    path = Path(run_dir) / DESCRIPTION_FILE
    try:
        description = json.loads(path.read_text())
    except FileNotFoundError:
        raise BatchTrainError(f"{path} not found: {run_dir} is not a finished batchtrain run "
                              "(run `batchtrain fit --output DIR` first)") from None
    except (OSError, json.JSONDecodeError) as error:
        raise BatchTrainError(f"cannot read {path}: {error}; the run directory is damaged") from None
    if not isinstance(description, dict) or description.get("format") != FORMAT_VERSION:
        raise BatchTrainError(f"{path} is not a batchtrain model description (format "
                              f"{FORMAT_VERSION}); it may come from another version")
    return description


def load_model_state(run_dir: str | Path, model: nn.Module) -> nn.Module:
    """Load run_dir/model.safetensors into `model` (strict: every tensor must match)."""
    path = Path(run_dir) / WEIGHTS_FILE
    try:
        state = load_file(str(path))
    except FileNotFoundError:
        raise BatchTrainError(f"{path} not found: the run has no saved weights") from None
    except (SafetensorError, OSError, ValueError) as error:
        raise BatchTrainError(f"cannot read weights {path}: {error}; the file is damaged") from None
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        first_line = str(error).splitlines()[0]
        raise BatchTrainError(f"the weights in {path} do not fit the model: {first_line}") from None
    return model


def restore_trainer(trainer: "Trainer", run_dir: str | Path, model: nn.Module | None) -> "Trainer":
    """Set a fresh trainer's learned state (model_, task_ ...) from a run directory."""
    description = load_description(run_dir)
    task = Task(**description["task"])
    input_shape = tuple(description["input_shape"])
    if model is None:
        if description["model"] is None:
            raise BatchTrainError(f"{run_dir} holds weights of a custom nn.Module; pass the module: "
                                  "Trainer.load(run_dir, model=MyModel())")
        spec = ModelSpec(description["model"]["name"], description["model"]["options"])
        model = spec.build(input_shape, task.n_outputs)
        trainer.model = trainer.model_spec_ = spec
    if description.get("standardized"):  # buffers filled by the state dict
        targets = description["standardized"]["targets"]
        model = placeholder_standardized(model, input_shape, task.n_outputs if targets else None)
    trainer.model_ = trainer.network_ = load_model_state(run_dir, model).to(trainer.device_)
    trainer.task_ = task
    trainer.input_shape_ = input_shape
    trainer.metrics = description["metrics"]
    return trainer


__all__ = ["load_description", "load_model_state", "restore_trainer", "save_model"]

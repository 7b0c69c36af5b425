"""A trainer's first-fit set-up: the model built for the data's shape, the task fitted to it."""
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from batchtrain.errors import ConfigError
from batchtrain.models.spec import ModelSpec
from batchtrain.tasks import Task, check_outputs, probe_outputs


def build_model(model: nn.Module | str | ModelSpec, options: dict | None,
                input_shape: Sequence[int], task: Task,
                device: torch.device) -> tuple[nn.Module, ModelSpec | None]:
    """The module on `device`, and the spec that rebuilds it (None for a user's nn.Module)."""
    if isinstance(model, nn.Module):
        if options:
            raise ConfigError("model_options apply to named models only; configure your "
                              "nn.Module before passing it")
        return model.to(device), None
    spec = model if isinstance(model, ModelSpec) else ModelSpec(str(model), dict(options or {}))
    return spec.build(input_shape, task.n_outputs).to(device), spec


def fit_task_to_model(task: Task, model: nn.Module, sample_x: Tensor, user_module: bool,
                      task_given: bool) -> Task:
    """Probe the model on a few samples: a user module's output width sets the number of classes
    (one output with 0/1 labels means a binary task, unless a task or loss was given)."""
    outputs = probe_outputs(model, sample_x)
    if user_module and task.kind == "multiclass" and outputs.dim() == 2:
        if outputs.shape[1] == 1 and not task_given:
            task = Task("binary", 1, "binary_crossentropy")
        else:
            task = Task(task.kind, outputs.shape[1], task.loss)
    check_outputs(task, outputs)
    return task


def check_input_shape(expected: Sequence[int] | None, got: Sequence[int]) -> None:
    if expected is not None and tuple(got) != tuple(expected):
        raise ConfigError(f"samples have shape {tuple(got)} but the model was built for "
                          f"{tuple(expected)}; pass data shaped like the training data")

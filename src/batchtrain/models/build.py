"""A trainer's first-fit set-up: the model built for the data's shape, the task fitted to it."""
import os
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from batchtrain.runtime.allocator import keep_freed_memory
from batchtrain.data.iterator import BatchIterator
from batchtrain.runtime.device import device_memory_bytes, resolve_device
from batchtrain.distributed.ddp import Distributed, from_environment, process_device, wrap_for_ddp
from batchtrain.errors import ConfigError
from batchtrain.models.spec import BUILTIN_MODELS, ModelSpec
from batchtrain.models.standardize import standardized
from batchtrain.tasks.kinds import Task, check_outputs, infer_task, probe_outputs


@dataclass(frozen=True)
class Built:
    """What a trainer's first fit() sets up: where it runs, with which seed, and the model."""

    device: torch.device
    group: Distributed | None  # the process group under torchrun, else None
    seed: int
    input_shape: tuple[int, ...]
    task: Task
    model: nn.Module
    network: nn.Module  # the model, or the model wrapped in DistributedDataParallel
    spec: ModelSpec | None  # rebuilds the model (None for a user's nn.Module)


def build_run(model: nn.Module | str | ModelSpec, model_options: dict | None, device: str | torch.device,
              seed: int | None, loss: str | None, task: str | None, source) -> Built:
    """The device, process group, seed, task and model of a run, from the trainer's options and
    the first training source (its sample shape, targets and, for streamed tables, feature
    statistics)."""
    device = process_device(resolve_device(device))
    group = from_environment(device)
    # Activations come from malloc on the CPU: keep what a step frees. Not under torchrun: with
    # these settings a 2-rank gloo fit aborted ("terminate called without an active exception")
    # in 1 of 4 runs here, against 0 of 6 without; cause not found.
    if device.type == "cpu" and group is None:
        keep_freed_memory()
    seed = seed if seed is not None else int.from_bytes(os.urandom(4), "little")
    if group is not None:  # one seed for all ranks: the same initialisation and order
        seed = group.broadcast_int(seed, device)
    torch.manual_seed(seed)
    inferred = infer_task(source.targets(), loss, task, samples=len(source))
    module, spec = build_model(model, model_options, source.sample_shape, inferred, device)
    if source.standardize:  # streamed tables: statistics of the training rows
        module = standardize_model(module, source.moments(), inferred).to(device)
    sample_x, _ = next(BatchIterator(source, 2, False, 0, device).epoch(0))
    fitted = fit_task_to_model(inferred, module, sample_x, isinstance(model, nn.Module),
                               task_given=task is not None or loss is not None)
    return Built(device, group, seed, tuple(source.sample_shape), fitted, module,
                 wrap_for_ddp(module, group, device), spec)


def standardize_model(model: nn.Module, moments, task: Task) -> nn.Module:
    """The model with standardised inputs (and targets, for regression with one target shape)."""
    targets = (moments.y_mean.reshape(-1), moments.y_std.reshape(-1)) if (
        task.kind == "regression" and moments.y_mean.numel() == task.n_outputs) else ()
    return standardized(model, moments.x_mean, moments.x_std, *targets)


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
    if spec.name in BUILTIN_MODELS:  # a user's factory may do more than build: called once only
        check_model_fits(spec, input_shape, task.n_outputs, device)
    return spec.build(input_shape, task.n_outputs).to(device), spec


def check_model_fits(spec: ModelSpec, input_shape: Sequence[int], n_outputs: int,
                     device: torch.device) -> None:
    """Refuse a model whose parameters alone exceed the device's memory, counted on the meta
    device (no memory): --hidden 10**15 would otherwise fail inside the allocator."""
    with torch.device("meta"):
        skeleton = spec.build(input_shape, n_outputs)
    parameter_bytes = sum(tensor.numel() * tensor.element_size()
                          for tensor in skeleton.state_dict().values())
    memory = device_memory_bytes(device)
    if memory is not None and parameter_bytes > memory:
        count = sum(tensor.numel() for tensor in skeleton.parameters())
        raise ConfigError(f"model {spec.name!r} with options {str(spec.options)[:200]} would have "
                          f"{count:,} parameters ({parameter_bytes / 2**30:,.1f} GiB), more than "
                          f"the {memory / 2**30:,.1f} GiB of memory of {device}; choose a smaller "
                          "model (fewer layers or smaller hidden sizes)")


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

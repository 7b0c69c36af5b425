"""A trainer's first-fit set-up: the model built for the data's shape, the task fitted to it."""
import os
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from batchtrain.allocator import keep_freed_memory
from batchtrain.data.iterator import BatchIterator
from batchtrain.device import device_memory_bytes, resolve_device
from batchtrain.distributed import from_environment, process_device
from batchtrain.errors import ConfigError
from batchtrain.models.spec import BUILTIN_MODELS, ModelSpec
from batchtrain.models.standardize import standardized
from batchtrain.tasks import Task, check_outputs, infer_task, probe_outputs


def build_run(trainer, source) -> None:
    """The trainer's device, process group, seed, task and model, from its options and the first
    training source (its sample shape, targets and, for streamed tables, feature statistics)."""
    trainer.device_ = process_device(resolve_device(trainer.device))
    trainer.dist_ = from_environment(trainer.device_)
    # Activations come from malloc on the CPU: keep what a step frees. Not under torchrun: with
    # these settings a 2-rank gloo fit aborted ("terminate called without an active exception")
    # in 1 of 4 runs here, against 0 of 6 without; cause not found.
    if trainer.device_.type == "cpu" and trainer.dist_ is None:
        keep_freed_memory()
    trainer.seed_ = trainer.seed if trainer.seed is not None else int.from_bytes(os.urandom(4), "little")
    if trainer.dist_ is not None:  # one seed for all ranks: the same initialisation and order
        trainer.seed_ = trainer.dist_.broadcast_int(trainer.seed_, trainer.device_)
    torch.manual_seed(trainer.seed_)
    trainer.input_shape_ = source.sample_shape
    task = infer_task(source.targets(), trainer.loss, trainer.task, samples=len(source))
    model, trainer.model_spec_ = build_model(trainer.model, trainer.model_options,
                                             trainer.input_shape_, task, trainer.device_)
    if getattr(source, "standardize", False):  # streamed tables: statistics of the training rows
        model = standardize_model(model, source.moments(), task).to(trainer.device_)
    sample_x, _ = next(BatchIterator(source, 2, False, 0, trainer.device_).epoch(0))
    trainer.task_ = fit_task_to_model(task, model, sample_x, isinstance(trainer.model, nn.Module),
                                      task_given=trainer.task is not None or trainer.loss is not None)
    trainer.model_ = model
    trainer.network_ = model if trainer.dist_ is None else DistributedDataParallel(
        model, device_ids=[trainer.device_.index] if trainer.device_.type == "cuda" else None)


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

"""A run's beginning: its state (state.py RunState) and the step pipeline it trains with."""
from collections.abc import Callable

import torch
from torch import Tensor, nn

from batchtrain.batching.base import BatchSizePolicy, StepStats
from batchtrain.batching.budget import resolve_budget
from batchtrain.batching.coupling import LearningRate, lr_scale
from batchtrain.batching.memory import MemoryEstimate, memory_ceiling
from batchtrain.batching.spec import resolve_policy
from batchtrain.callbacks.base import FitInfo
from batchtrain.errors import check_batch_size
from batchtrain.models.build import Built
from batchtrain.optim.schedules import LRSchedule, as_lr_schedule
from batchtrain.runtime.compile import compiled
from batchtrain.runtime.precision import Precision, resolve_precision
from batchtrain.state import RunState
from batchtrain.stats import NoiseScaleTracker
from batchtrain.tasks.metrics import MetricSet
from batchtrain.training.branch import Brancher
from batchtrain.training.calibrate import calibrate_policy
from batchtrain.training.measure import NoiseMeasurement
from batchtrain.training.step import TrainStep
from batchtrain.training.sync import strategy


FULL = resolve_precision("32", torch.device("cpu"))  # float32: no autocast, no scaler


def begin_run(requested: BatchSizePolicy | str, built: Built, optimizer, metric_names: tuple[str, ...],
              samples_per_epoch: int, epochs: int, max_physical_batch: int, lr_scaling: str,
              lr_schedule: LRSchedule | str | None, previous: RunState | None,
              precision: Precision = FULL, compile: bool = False,
              draw: Callable[..., tuple[Tensor, Tensor]] | None = None,
              calibrate: bool = True, shuffle: bool = True) -> tuple[RunState, TrainStep]:
    """The state of a new run of `epochs` x `samples_per_epoch` samples and its step pipeline.

    requested: the parsed batch size (a policy, or "max"); max_physical_batch: the memory
    ceiling (samples), the same on every rank. The step and sample counters carry over from the
    previous run of the same trainer; everything else starts anew. compile: steps go through
    torch.compile (runtime/compile.py). draw(n, seed, start=0, shuffle=True): the training
    samples and targets at positions start .. start + n of epoch 0 of a run with this seed and
    shuffle (data/iterator.py first_epoch_samples): shuffled ones from other seeds for the
    branches a policy asks for during training (training/branch.py Brancher; one process), and
    the run's own first ones, in its order (`shuffle`), to calibrate a policy that asks
    (training/calibrate.py) when `calibrate` (not on a resumed run): the run's first epoch goes
    on after what the kept start branches trained on (Calibration.trained), and its counters
    count their samples and steps.
    """
    policy = resolve_policy(requested, max_physical_batch)
    noise = NoiseScaleTracker() if policy.wants_gradient_stats else None
    parameters = list(built.model.parameters())  # walking the module tree: ~50 us, done once
    measurement = (NoiseMeasurement(parameters, optimizer, noise, built.group,
                                    lambda: policy.stats_every, policy.noise_geometry,
                                    built.network) if noise is not None else None)
    scaler = precision.scaler()
    network = compiled(built.network, compile)
    pipeline = TrainStep(network, built.task.loss_fn, optimizer, parameters,
                         strategy(built.network, built.group), measurement, precision.autocast,
                         scaler)
    lr_control = LearningRate(optimizer, lr_scaling, as_lr_schedule(lr_schedule), policy)
    if previous is not None:  # a plateau's reduction holds for the trainer's later fits too
        lr_control.plateau, lr_control.min_lr = previous.lr_control.plateau, previous.lr_control.min_lr
    run = RunState(policy, lr_control, MetricSet(built.task, metric_names, built.device), noise,
                   max_physical_batch, previous.seed if previous else built.seed,
                   samples_per_epoch, samples_per_epoch * epochs,
                   step=previous.step if previous else 0,
                   total_samples_seen=previous.total_samples_seen if previous else 0,
                   precision=precision.name, scaler=scaler)
    policy.observe(StepStats(0, 0, samples_per_epoch, 0))  # where training stands
    if draw is not None and built.group is None:  # under DDP each rank would time its own clock
        policy.allow_branches()
        if calibrate:
            run.calibration = calibration = calibrate_policy(
                policy, built.model, built.task.loss_fn,
                lambda n, start: draw(n, run.seed, start, shuffle), samples_per_epoch,
                precision.autocast, run.total_samples, optimizer, max_physical_batch,
                keep_branch=lr_control.at_base(run.clock()))
            if calibration is not None:  # its kept branches trained the run's first samples
                run.count_branch(calibration.trained, calibration.steps)
        coupling = lr_control.rule if lr_control.rule in ("linear", "sqrt", "none") else "sqrt"
        run.brancher = Brancher(built.model, built.task.loss_fn, optimizer, draw,
                                samples_per_epoch, max_physical_batch,
                                lambda size, current: lr_scale(coupling, size, current),
                                precision.autocast)
    return run, pipeline


def physical_cap(max_physical_batch: int | None, memory: MemoryEstimate | None,
                 memory_budget, built: Built, optimizer, sample: Callable[[], Tensor],
                 precision: Precision = FULL) -> tuple[MemoryEstimate | None, int]:
    """The memory estimate (None when the user capped the physical batch) and the cap (samples),
    the same on every rank. memory: the estimate of an earlier fit (the model is the same);
    sample: a few training inputs, for the estimate, which runs in the training's precision
    (mixed precision keeps smaller activations)."""
    if max_physical_batch is not None:
        check_batch_size(max_physical_batch)
        memory, cap = None, int(max_physical_batch)
    else:
        if memory is None:
            budget = resolve_budget(memory_budget, built.device)
            with precision.autocast():
                memory = memory_ceiling(built.model, sample(), built.device, budget_bytes=budget,
                                        optimizer=optimizer)
        cap = memory.max_batch
    if built.group is not None:  # every rank must split its batches alike
        cap = built.group.broadcast_int(cap, built.device)
    return memory, cap


def fit_info(run: RunState, memory: MemoryEstimate | None, steps_per_epoch: int,
             validation_samples: int, epochs: int, resumed_from) -> FitInfo:
    """What the run will do, for callbacks' on_fit_begin."""
    memory_line = (memory.describe() if memory else
                   f"physical batch at most {run.max_physical_batch} (set by the user)")
    return FitInfo(epochs, steps_per_epoch, run.samples_per_epoch, run.policy.batch_size(),
                   validation_samples, repr(run.policy), memory_line,
                   f"lr scaling {run.lr_control.rule}, schedule "
                   f"{run.lr_control.schedule.describe()}", str(resumed_from or ""),
                   run.calibration.describe() if run.calibration is not None else "")


def loaded(model: nn.Module, spec, task, input_shape: tuple, device, seed: int) -> Built:
    """A Built for a model loaded from a run directory (one process, no DDP wrapper)."""
    return Built(device, None, seed, input_shape, task, model, model, spec)

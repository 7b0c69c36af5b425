"""Trainer: fit / evaluate / predict, Keras-style, on any torch module.

fit -> run_epoch -> train_step; evaluation -> eval_step. Batching lives in data/iterator.py,
reporting in callbacks/, the task's loss and target handling in tasks.py.
"""
import time
import warnings
from contextlib import nullcontext
from dataclasses import asdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from batchtrain.batching.base import BatchSizePolicy, StepStats
from batchtrain.batching.coupling import LearningRate
from batchtrain.batching.budget import resolve_budget
from batchtrain.batching.memory import MemoryEstimate, memory_ceiling
from batchtrain.batching.spec import parse_batch_size, resolve_policy
from batchtrain.callbacks.base import Callback, CallbackList, FitInfo
from batchtrain.checkpoint import newest_checkpoint
from batchtrain.saving import restore_trainer, save_model
from batchtrain.data.iterator import BatchIterator, check_batch_size, is_count
from batchtrain.data.iterable import IterableSource
from batchtrain.data.sources import Source, as_source, fit_sources
from batchtrain.data.stream import StreamSource
from batchtrain.device import resolve_device
from batchtrain.distributed import all_reduce_with_stats
from batchtrain.errors import ConfigError
from batchtrain.history import History
from batchtrain.interrupts import (NonFiniteError, TrainingInterrupted, step_is_finite,
                                   stop_on_signals)
from batchtrain.metrics import MetricSet
from batchtrain.models.spec import ModelSpec
from batchtrain.optim import OptimizerLike, make_optimizer
from batchtrain.resume import restore_state
from batchtrain.schedules import LRSchedule, SampleClock, as_lr_schedule
from batchtrain.speed import check_threads, restored_threads, thread_callbacks
from batchtrain.stats import MicroBatchGradients, NoiseScaleTracker, Preconditioner, split_for_stats
from batchtrain.setup import build_run, check_input_shape
from batchtrain.tasks import DEFAULT_METRICS, Task, prepare_targets

BatchSizeLike = int | str | BatchSizePolicy
NONFINITE_ACTIONS = ("stop", "skip", "raise")
Counted = tuple[Tensor, Tensor, Tensor]  # a micro-batch's (outputs, targets, mean loss), detached
EVAL_BATCH_SIZE = 1024  # evaluation keeps no activations for backward, so large batches are cheap


class Trainer:
    """Trains a model on mini-batches.

    model: an nn.Module, a built-in model name ("seed-cnn", "mlp"), "package.module:factory",
        or a ModelSpec; named models are built at the first fit() from the data's shape.
    optimizer: "sgd", "adam", "adamw", "rmsprop" (Keras defaults, see optim.py), an Optimizer or a
        factory of one. lr: overrides its learning rate. optimizer_options: e.g. {"momentum": 0.9}.
    loss: a name from tasks.LOSS_TASKS, default inferred from the targets.
    metrics: "auto" (accuracy for classification; mae, rmse, r2 for regression) or names.
    device: "auto" (cuda > mps > cpu), or a torch device string.
    seed: seeds the model's initialisation, the global torch RNG and the shuffle order;
        None draws one (recorded in seed_).
    task: "multiclass", "binary" or "regression"; default inferred from the targets and loss.
    model_options: keywords for a named model (e.g. {"hidden": [128, 64]} for mlp).
    lr_scaling: how the lr follows the logical batch: "auto" (linear for SGD, sqrt for Adam,
        AdamW, RMSprop, Adagrad), "none", "linear" or "sqrt"; relative to the first batch size.
    lr_schedule: a sample-keyed schedule (schedules.py) or its spec ("warmup:1e+cosine").
    memory_budget: memory for the physical batch: bytes (int), a fraction of available RAM
        (float in (0, 1]), or a string such as "8GiB"; default half the available RAM (CPU) or the
        device's memory found by trial (CUDA). Larger logical batches accumulate gradients.
    max_physical_batch: a cap on the physical batch that replaces the memory estimate.
    on_nonfinite: a NaN or infinite loss or gradient "stop"s training (default; the step is not
        applied, fit() returns with stop_reason_ set), is "skip"ped (no update), or "raise"s
        NonFiniteError.
    threads: torch's intra-op CPU threads during fit(): None keeps torch's setting (one per
        core), an int pins it, "auto" uses every core while the machine is free and one fewer per
        core other processes keep busy (speed.py; results then agree to float rounding, not bit
        for bit). Restored when fit() ends, by an exception too; no effect on a GPU.
    """

    def __init__(self, model: nn.Module | str | ModelSpec, optimizer: OptimizerLike = "adam",
                 loss: str | None = None, metrics: str | Sequence[str] = "auto",
                 lr: float | None = None, device: str | torch.device = "auto",
                 seed: int | None = None, task: str | None = None,
                 model_options: dict | None = None, optimizer_options: dict | None = None,
                 lr_scaling: str = "auto", lr_schedule: LRSchedule | str | None = None,
                 memory_budget: float | int | str | None = None,
                 max_physical_batch: int | None = None, on_nonfinite: str = "stop",
                 threads: int | str | None = None):
        self.model = model
        self.optimizer = optimizer
        self.loss = loss
        self.metrics = metrics
        self.lr = lr
        self.device = device
        self.seed = seed
        self.task = task
        self.model_options = model_options
        self.optimizer_options = optimizer_options
        self.lr_scaling = lr_scaling
        self.lr_schedule = lr_schedule
        self.memory_budget = memory_budget
        self.max_physical_batch = max_physical_batch
        self.on_nonfinite = on_nonfinite
        self.threads = threads
        # Learned state, set by the first fit() (or Trainer.load) and kept across fit() calls.
        self.model_: nn.Module | None = None
        self.optimizer_: torch.optim.Optimizer | None = None
        self.task_: Task | None = None
        self.input_shape_: tuple[int, ...] | None = None
        self.step_ = 0
        self.samples_seen_ = 0
        self.history_: History | None = None
        self.memory_: MemoryEstimate | None = None
        self.stop_training = False
        self.dist_ = None  # set when running under torchrun (distributed.py)
        self.network_: nn.Module | None = None  # model_, or model_ wrapped in DDP
        self.interrupt_: str | None = None

    def fit(self, x: Any, y: Any = None, *, batch_size: BatchSizeLike = 128, epochs: int = 5,
            validation_split: float = 0.0, validation_data: Any = None, shuffle: bool = True,
            callbacks: Iterable[Callback] = (), resume: str | Path | None = None) -> History:
        """Train for `epochs` passes over x, y (arrays/tensors), or over x alone: a Dataset or
        IterableDataset of (x, y), or data streamed from disk (batchtrain.data.open, from_batches).

        batch_size: samples per optimizer step: an int, "max" (the memory ceiling), a spec string
        ("128,256@2e", "double:64,1e,1024": see batching/spec.py) or a BatchSizePolicy.
        validation_split: the last fraction of x held out before shuffling (as Keras).
        validation_data: (x_val, y_val) or a Dataset; overrides validation_split.
        resume: a checkpoint directory, run directory or checkpoint file: continue from its newest
            valid checkpoint (mid-epoch included), with the same data and arguments.
        Ctrl-C or SIGTERM finish the current step, let callbacks checkpoint, then raise
        TrainingInterrupted.
        """
        requested = parse_batch_size(batch_size)
        _check_epochs(epochs)
        check_threads(self.threads)
        train, val = fit_sources(x, y, validation_split, validation_data)
        self._setup(train)
        self._begin_run(requested, train, int(epochs))
        start_epoch, start_position = self._resume(resume) if resume is not None else (0, 0)
        batches = BatchIterator(self._with_targets(train), self._next_batch_size, shuffle,
                                self.seed_, self.device_, shard=self.dist_)
        val_batches = self._eval_batches(val) if val is not None else None
        hooks = CallbackList([*thread_callbacks(self.threads, self.device_),
                              *(callback for callback in callbacks  # rank 0 writes the logs
                                if self.dist_ is None or self.dist_.is_main
                                or not getattr(callback, "main_process_only", False))])
        with restored_threads():  # on_fit_end restores them too, but an exception skips it
            hooks.on_fit_begin(self, self._fit_info(batches, int(epochs), val))
            with stop_on_signals(self):
                for epoch in range(start_epoch, int(epochs)):
                    if not self._fit_epoch(batches, val_batches, epoch, hooks,
                                           start_position * (epoch == start_epoch)):
                        break
            hooks.on_fit_end(self, self.history_)
        return self.history_

    def _fit_epoch(self, batches: BatchIterator, val_batches: BatchIterator | None, epoch: int,
                   hooks: Callback, start: int) -> bool:
        """One epoch of fit(): training, validation, its record, on_epoch_end; False to stop."""
        logs = self.run_epoch(batches, epoch, hooks, start)
        if self.stop_reason_:  # a non-finite step: this epoch is not complete
            return False
        if val_batches is not None:
            logs.update({f"val_{key}": value for key, value in self.run_eval(val_batches).items()})
        self.history_.append(logs)
        hooks.on_epoch_end(self, epoch, logs)
        return not self.stop_training

    def run_epoch(self, batches: BatchIterator, epoch: int, hooks: Callback, start: int = 0) -> dict:
        """One pass over the training batches (whatever sizes the policy picks), from sample
        `start` of the epoch's order; returns the epoch's record."""
        hooks.on_epoch_begin(self, epoch)
        if start == 0:  # a resumed epoch keeps the metric sums restored from its checkpoint
            self.train_metrics_.reset()
        self.model_.train()
        started = time.perf_counter()
        for x, y in batches.epoch(epoch, start):
            self.last_step_ = self.train_step(x, y, batches.global_size, batches.real_samples)
            self.position_ = batches.position
            if self.last_step_ is None:  # non-finite, on_nonfinite="stop"
                break
            self.history_.steps.append(self.last_step_)
            self.policy_.observe(StepStats(
                self.run_samples_, epoch, batches.num_samples, self.last_step_["samples"],
                gradient=self.last_noise_,
                physical_batch=self.last_step_["physical_batch"], time_s=self.step_time_s_))
            hooks.on_batch_end(self, self.last_step_["samples"])
            if self.interrupt_ is not None:
                raise TrainingInterrupted(self.interrupt_, self.step_)
            if self.stop_training:  # a callback asked to stop now (mid-epoch)
                break
        logs = {"epoch": epoch + 1, **self.train_metrics_.compute(self._reduce)}  # one device read
        elapsed_s = time.perf_counter() - started
        last = self.history_.steps[-1] if self.history_.steps else {"batch_size": 0, "lr": 0.0}
        return {**logs, "batch_size": last["batch_size"], "lr": last["lr"], "time_s": elapsed_s,
                "samples_per_s": (batches.num_samples - start) / elapsed_s}

    def train_step(self, x: Tensor, y: Tensor, logical: int | None = None,
                   real: int | None = None) -> dict | None:
        """One optimizer step on one logical batch, accumulated over physical micro-batches.

        logical: the global batch (samples over all ranks; default len(y)); real: this rank's
        samples that count (0 for a rank padded into a global batch smaller than the world).
        Returns the step's record (None when a non-finite step stops training).
        """
        logical = len(y) if logical is None else logical
        real = len(y) if real is None else real
        # Coupled to the size the policy asked for, not to len(y): an epoch's short last batch is
        # not a change of batch size and must not change the learning rate.
        requested = self.requested_ if self.requested_ is not None else self.policy_.batch_size()
        self.requested_ = None
        lr = self.lr_control_.apply(requested, self._clock())
        started = time.perf_counter()
        physical = self._physical_batch(len(y))
        micro_batches = _micro_batches(x, y, physical)
        results, gradient_stats = self._forward_backward(micro_batches, logical, real > 0)
        finite = self._check_finite([loss for _, _, loss in results])
        if finite is None:
            return None
        if finite:
            self.optimizer_.step()
            if gradient_stats is not None:
                self.noise_.update(**gradient_stats)
        # After the step, not after backward: small ops right after backward run cold (~70 us more
        # at batch 8 on a CPU); the optimizer's elementwise ops warm the same code.
        for outputs, targets, loss in results:
            self.train_metrics_.update(outputs, targets, loss)
        self.step_time_s_ = time.perf_counter() - started
        self.step_ += 1
        self.samples_seen_ += logical
        self.run_samples_ += logical
        record = {"step": self.step_, "samples_seen": self.run_samples_, "batch_size": requested,
                  "samples": logical, "physical_batch": physical,
                  "accumulation_steps": len(micro_batches), "lr": lr}
        if not finite:
            record["skipped"] = True
        self.last_noise_ = self._noise_estimate()  # one estimate per step, for records and policy
        if self.last_noise_:
            record["noise_scale"] = self.last_noise_["noise_scale"]
        return record

    def _forward_backward(self, micro_batches: list, logical: int,
                          counts: bool = True) -> tuple[list[Counted], dict | None]:
        """Accumulate the gradient of the logical batch's mean loss over its micro-batches.

        Each micro-batch's mean loss is weighted by its share of the logical batch, so the summed
        gradient equals the gradient of the whole batch's mean loss: the same update as one step on
        it. Under DDP the share is multiplied by the world size (DDP averages over ranks) and only
        the last micro-batch's backward all-reduces (no_sync before it). With noise statistics,
        each micro-batch's (or, under DDP, each rank's) gradient norm is measured too.
        counts: False for a padding sample (weight 0). Returns ((outputs, targets, mean loss) of
        each micro-batch that counts, detached; gradient statistics).
        """
        world = self.dist_.world_size if self.dist_ is not None else 1
        # Adam's and RMSprop's noise is measured on preconditioned gradients, from their second step
        factors = self.preconditioner_.factors(self.parameters_) if self.noise_ is not None else None
        measure = self.noise_ is not None and (factors is not None or not self.preconditioner_.adaptive)
        collector = self.gradient_collector_ if measure and len(micro_batches) > 1 and world == 1 else None
        rank_stats = measure and world > 1  # local vs all-reduced gradient
        self.optimizer_.zero_grad(set_to_none=True)
        if collector is not None:
            collector.begin(factors)
        results = []
        for index, (inputs, targets) in enumerate(micro_batches):
            share = len(targets) * world / logical if counts else 0.0
            sync = world == 1 or (index == len(micro_batches) - 1 and not rank_stats)
            with nullcontext() if sync else self.network_.no_sync():
                outputs = self.network_(inputs)
                loss = self.task_.loss_fn(outputs, targets)
                (loss * share if share != 1.0 else loss).backward()
            if collector is not None:
                collector.after_micro_batch(len(targets), len(targets) / logical)
            if counts:
                results.append((outputs.detach(), targets, loss.detach()))
        if rank_stats:
            local = sum(len(targets) for _, targets in micro_batches) if counts else 0
            return results, all_reduce_with_stats(self.parameters_, self.dist_, local, logical, factors)
        return results, collector.finish(logical) if collector is not None else None

    def _physical_batch(self, logical: int) -> int:
        """The micro-batch size: the memory ceiling; at least two micro-batches when measuring noise
        in one process (under DDP the ranks' gradients serve as the micro-batches)."""
        if self.gradient_collector_ is not None and logical >= 2 and self.dist_ is None:
            return split_for_stats(logical, self.max_physical_batch_)
        return min(logical, self.max_physical_batch_)

    def _check_finite(self, losses: list[Tensor]) -> bool | None:
        """True if the step's losses and gradients are finite; else act on on_nonfinite:
        "skip" -> False (no update), "stop" -> None, "raise" -> NonFiniteError.

        One host synchronisation per step: the price of never applying a NaN update. The loss
        alone would not do: a finite loss can have a non-finite gradient (sqrt at 0, an overflow in
        backward), so every gradient element is checked too, in the same pass.
        """
        gradients = [parameter.grad for parameter in self.parameters_ if parameter.grad is not None]
        if step_is_finite(losses, gradients, self._reduce):
            return True
        message = (f"non-finite loss or gradients at step {self.step_ + 1} (epoch "
                   f"{self.run_samples_ // self.samples_per_epoch_ + 1}, {self.run_samples_} samples "
                   "seen)")
        if self.on_nonfinite == "skip":
            self.optimizer_.zero_grad(set_to_none=True)
            warnings.warn(f"{message}: step skipped", stacklevel=3)
            return False
        if self.on_nonfinite == "raise":
            raise NonFiniteError(f"{message}; lower the learning rate or check the data")
        # the trainer cannot know what a callback saved: the runner says what is on disk
        self.stop_reason_ = (f"{message}: training stopped before applying it; lower the "
                             "learning rate or check the data")
        self.stop_training = True
        warnings.warn(self.stop_reason_, stacklevel=3)
        return None

    def prepare(self, x: Any, y: Any = None) -> "Trainer":
        """Build the model, task and optimizer for this data without training (fit does it too)."""
        self._setup(as_source(x, y))
        return self

    def running_logs(self) -> dict[str, float]:
        """Loss and metrics over the current epoch so far (reads the device: call at intervals)."""
        return self.train_metrics_.compute()

    def evaluate(self, x: Any, y: Any = None, *, batch_size: int = EVAL_BATCH_SIZE) -> dict[str, float]:
        """Loss and metrics of the model on x, y (arrays/tensors or a Dataset of (x, y))."""
        check_batch_size(batch_size)
        source = as_source(x, y)
        self._setup(source)
        return self.run_eval(self._eval_batches(source, batch_size))

    def run_eval(self, batches: BatchIterator) -> dict[str, float]:
        metrics = MetricSet(self.task_, self.metric_names_, self.device_)
        self.model_.eval()
        with torch.inference_mode():
            for x, y in batches.epoch(0):
                outputs = self.model_(x)
                metrics.update(outputs, y, self.task_.loss_fn(outputs, y))
        return metrics.compute(self._reduce)

    def predict(self, x: Any, *, batch_size: int = EVAL_BATCH_SIZE) -> np.ndarray:
        """Class probabilities (classification) or values (regression), one row per sample."""
        check_batch_size(batch_size)
        if self.model_ is None:
            raise ConfigError("predict() needs a trained model: call fit() first, or "
                              "Trainer.load(run_dir)")
        source = as_source(x, None if _holds_targets(x) else np.zeros(len(x)))
        check_input_shape(self.input_shape_, source.sample_shape)
        self.model_.eval()
        chunks = []
        with torch.inference_mode():
            for inputs, _ in BatchIterator(source, batch_size, False, 0, self.device_).epoch(0):
                chunks.append(self.task_.predictions(self.model_(inputs)).float().cpu())
        return torch.cat(chunks).numpy()

    def save(self, run_dir: str | Path) -> None:
        """Write the trained model to run_dir (model.safetensors + model.json; no pickle)."""
        if self.model_ is None:
            raise ConfigError("nothing to save: call fit() first")
        save_model(self, run_dir)

    @classmethod
    def load(cls, run_dir: str | Path, model: nn.Module | str | ModelSpec | None = None,
             device: str = "auto", trust_model_code: bool = False, **options: Any) -> "Trainer":
        """A trainer holding the model saved in run_dir, ready to evaluate, predict or fit on.

        model: the nn.Module to load the weights into (needed for custom modules), or the model
        factory to rebuild ("mlp", "package.module:factory"). None rebuilds what model.json names;
        an import path there is code, followed only with trust_model_code=True (a run directory
        is data: whoever shared it could name any module). options: further Trainer arguments.
        """
        trainer = cls(model, device=device, **options)  # restore_trainer sets .model for named ones
        trainer.device_ = resolve_device(device)
        trainer.seed_ = trainer.seed if trainer.seed is not None else 0
        return restore_trainer(trainer, run_dir, model, trust_model_code)

    # -- set-up ---------------------------------------------------------------------------------

    def _begin_run(self, requested: BatchSizePolicy | str, train: Source, epochs: int) -> None:
        """Per-run state: memory ceiling, batch-size policy, learning-rate control, counters."""
        if self.max_physical_batch is not None:
            check_batch_size(self.max_physical_batch)
            self.memory_ = None
            self.max_physical_batch_ = int(self.max_physical_batch)
        else:
            self.memory_ = self._memory_ceiling(train)
            self.max_physical_batch_ = self.memory_.max_batch
        if self.dist_ is not None:  # every rank must split its batches alike
            self.max_physical_batch_ = self.dist_.broadcast_int(self.max_physical_batch_, self.device_)
        self.policy_ = resolve_policy(requested, self.max_physical_batch_)
        self.requested_ = None
        wants_stats = getattr(self.policy_, "wants_gradient_stats", False)
        self.parameters_ = list(self.model_.parameters())  # walking the module tree: ~50 us a step
        self.gradient_collector_ = (MicroBatchGradients(self.parameters_)
                                    if wants_stats else None)
        self.noise_ = NoiseScaleTracker() if wants_stats else None
        self.preconditioner_ = Preconditioner(self.optimizer_)
        self.lr_control_ = LearningRate(self.optimizer_, self.lr_scaling,
                                        as_lr_schedule(self.lr_schedule), self.policy_)
        self.samples_per_epoch_, self.total_samples_ = len(train), len(train) * epochs
        self.run_samples_, self.position_, self.last_step_ = 0, 0, None
        self.history_, self.stop_training, self.stop_reason_ = History(), False, None
        self.resumed_from_ = None
        if self.on_nonfinite not in NONFINITE_ACTIONS:
            raise ConfigError(f"on_nonfinite must be one of {', '.join(NONFINITE_ACTIONS)}, "
                              f"got {self.on_nonfinite!r}")
        self.policy_.observe(StepStats(0, 0, len(train), 0))  # where training stands

    def _next_batch_size(self) -> int:
        """The policy's next logical batch; under DDP a policy that reads local measurements
        (gradient noise, step times) is overruled by rank 0, so all ranks decide alike."""
        size = self.policy_.batch_size()
        if self.dist_ is not None and getattr(self.policy_, "wants_gradient_stats", False):
            size = self.dist_.broadcast_int(size, self.device_)
        self.requested_ = size
        return size

    @property
    def _reduce(self):
        return self.dist_.sum if getattr(self, "dist_", None) is not None else None

    def _noise_estimate(self) -> dict:
        estimate = self.noise_.estimate() if self.noise_ is not None else None
        return asdict(estimate) if estimate is not None else {}

    def _resume(self, location: str | Path) -> tuple[int, int]:
        """Restore the newest valid checkpoint at `location`; returns (epoch, position) to continue."""
        state, path = newest_checkpoint(location)
        self.resumed_from_ = path
        return restore_state(self, state, f"checkpoint {path}")

    def _memory_ceiling(self, train: Source) -> MemoryEstimate:
        if self.memory_ is not None:  # the model does not change between fit() calls
            return self.memory_
        sample_x, _ = next(BatchIterator(train, 16, False, 0, self.device_).epoch(0))
        budget = resolve_budget(self.memory_budget, self.device_)
        return memory_ceiling(self.model_, sample_x, self.device_, budget_bytes=budget,
                              optimizer=self.optimizer_)

    def _clock(self) -> SampleClock:
        return SampleClock(self.run_samples_, self.samples_per_epoch_, self.total_samples_)

    def _fit_info(self, batches: BatchIterator, epochs: int, val: Source | None) -> FitInfo:
        return FitInfo(epochs=epochs, steps_per_epoch=len(batches), num_samples=batches.num_samples,
                       batch_size=self.policy_.batch_size(),
                       validation_samples=len(val) if val is not None else 0,
                       policy=repr(self.policy_),
                       memory=self.memory_.describe() if self.memory_ else
                       f"physical batch at most {self.max_physical_batch_} (set by the user)",
                       lr=f"lr scaling {self.lr_control_.rule}, schedule "
                          f"{self.lr_control_.schedule.describe()}",
                       resumed_from=str(self.resumed_from_ or ""))

    def _setup(self, source: Source) -> None:
        """Build the model, task and optimizer from the first data seen; later calls only check."""
        if self.model_ is None:
            build_run(self, source)
        if self.optimizer_ is None:
            self.optimizer_ = make_optimizer(self.optimizer, self.model_, self.lr,
                                             **(self.optimizer_options or {}))
        check_input_shape(self.input_shape_, source.sample_shape)
        names = DEFAULT_METRICS[self.task_.kind] if self.metrics == "auto" else self.metrics
        self.metric_names_ = tuple([names] if isinstance(names, str) else names)
        self.train_metrics_ = MetricSet(self.task_, self.metric_names_, self.device_)

    def _with_targets(self, source: Source) -> Source:
        return source.map_targets(lambda y: prepare_targets(self.task_, y))

    def _eval_batches(self, source: Source, batch_size: int = EVAL_BATCH_SIZE) -> BatchIterator:
        check_input_shape(self.input_shape_, source.sample_shape)
        return BatchIterator(self._with_targets(source), batch_size, False, 0, self.device_,
                             shard=self.dist_, pad=False)


def _holds_targets(x: Any) -> bool:
    """Datasets and streams carry their own targets; arrays passed to predict() do not."""
    return isinstance(x, (torch.utils.data.Dataset, StreamSource, IterableSource))


def _micro_batches(x: Tensor, y: Tensor, physical: int) -> list[tuple[Tensor, Tensor]]:
    if physical >= len(y):  # one micro-batch: two split ops saved (~40 us of a batch-8 CPU step)
        return [(x, y)]
    return list(zip(x.split(physical), y.split(physical)))


def _check_epochs(epochs: object) -> None:
    if not is_count(epochs):
        raise ConfigError(f"epochs must be an integer >= 1, got {epochs!r}")

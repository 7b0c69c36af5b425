"""Trainer: fit / evaluate / predict, Keras-style, on any torch module.

fit -> run_epoch -> train_step; evaluate and predict -> _inference. What a step does is
training/step.py (micro-batches, accumulation, DDP, noise measurement, finiteness, precision);
which samples form each batch is data/iterator.py; the run's learned state is state.py.
"""
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from batchtrain.batching.base import BatchSizePolicy
from batchtrain.batching.memory import MemoryEstimate
from batchtrain.batching.spec import parse_batch_size
from batchtrain.callbacks.base import Callback, CallbackList, for_this_rank
from batchtrain.checkpointing.resume import restore_newest
from batchtrain.checkpointing.saved_model import SavedModel, load_saved_model, save_model
from batchtrain.data.iterator import Batch, BatchIterator, first_epoch_samples
from batchtrain.data.sources import Source, as_source, fit_sources, holds_targets
from batchtrain.distributed.policy import synced
from batchtrain.errors import ConfigError, TrainingInterrupted, check_batch_size, check_count
from batchtrain.models.build import Built, build_run, check_input_shape
from batchtrain.models.spec import ModelSpec
from batchtrain.optim.optimizers import OptimizerLike, make_optimizer
from batchtrain.optim.schedules import LRSchedule
from batchtrain.runtime.device import resolve_device
from batchtrain.runtime.precision import resolve_precision
from batchtrain.runtime.signals import stop_on_signals
from batchtrain.runtime.threads import check_threads, restored_threads, thread_callbacks
from batchtrain.state import History, RunState
from batchtrain.tasks.kinds import DEFAULT_METRICS, prepare_targets
from batchtrain.tasks.metrics import MetricSet
from batchtrain.training import (begin_run, check_action, fit_info, loaded, micro_batches,
                                 nonfinite_outcome, physical_cap, warn_stopped)

BatchSizeLike = int | str | BatchSizePolicy
EVAL_BATCH_SIZE = 1024  # evaluation keeps no activations for backward, so large batches are cheap


class Trainer:
    """Trains a model on mini-batches.

    model: an nn.Module, a built-in model name ("seed-cnn", "mlp"), "package.module:factory", or
        a ModelSpec (built at the first fit() from the data's shape; model_options its keywords).
    optimizer: "sgd", "adam", "adamw", "rmsprop" (Keras defaults, optim/optimizers.py), an
        Optimizer or a factory of one; lr overrides its rate; optimizer_options: {"momentum": 0.9}.
    loss, task, metrics: a name from tasks.LOSS_TASKS; "multiclass", "binary" or "regression"
        (both inferred from the targets by default); "auto" (accuracy, or mae, rmse, r2) or names.
    device: "auto" (cuda > mps > cpu) or a torch device. seed: initialisation, the torch RNG and
        the shuffle order (None draws one, recorded in seed_).
    lr_scaling: how the lr follows the logical batch, relative to the first: "auto" (linear for
        SGD, sqrt for Adam, AdamW, RMSprop, Adagrad), "none", "linear", "sqrt" or "adascale".
    lr_schedule: a sample-keyed schedule (optim/schedules.py) or its spec ("warmup:1e+cosine").
    memory_budget: memory for the physical batch: bytes, a fraction of available memory or
        "8GiB" (default half the available RAM, or the device's memory found by trial on CUDA);
        larger logical batches accumulate gradients. max_physical_batch: a cap that replaces it.
    on_nonfinite: a NaN or infinite loss or gradient "stop"s training (default: the step is not
        applied, fit() returns with stop_reason_ set), is "skip"ped, or "raise"s NonFiniteError.
    threads: torch's CPU threads during fit(): None keeps torch's (one per core), an int pins it,
        "auto" gives up one per core other processes keep busy (runtime/threads.py; results then
        agree to float rounding, not bit for bit); restored when fit() ends.
    precision: "32" (default), "bf16-mixed", "16-mixed" or "auto" (runtime/precision.py).
    compile: training steps go through torch.compile (runtime/compile.py); off by default.
    """

    def __init__(self, model: nn.Module | str | ModelSpec, optimizer: OptimizerLike = "adam",
                 loss: str | None = None, metrics: str | Sequence[str] = "auto",
                 lr: float | None = None, device: str | torch.device = "auto",
                 seed: int | None = None, task: str | None = None,
                 model_options: dict | None = None, optimizer_options: dict | None = None,
                 lr_scaling: str = "auto", lr_schedule: LRSchedule | str | None = None,
                 memory_budget: float | int | str | None = None,
                 max_physical_batch: int | None = None, on_nonfinite: str = "stop",
                 threads: int | str | None = None, precision: str | int = "32",
                 compile: bool = False):
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
        self.precision = precision
        self.compile = compile
        # Learned state, set by the first fit() (or Trainer.load), kept across fits; a run's own
        # state is state_ (state.py), made new by each fit().
        self.built_: Built | None = None  # device, process group, seed, task, model (properties)
        self.optimizer_: torch.optim.Optimizer | None = None
        self.memory_: MemoryEstimate | None = None
        self.state_: RunState | None = None
        self.stop_training = False  # a callback sets it to end fit() (Keras' model.stop_training)

    # -- the loop -------------------------------------------------------------------------------

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
            valid checkpoint (mid-epoch included), with the same data and arguments. Ctrl-C or
            SIGTERM finish the step, let callbacks checkpoint, then raise TrainingInterrupted.
        """
        requested = parse_batch_size(batch_size)
        check_count(epochs, "epochs")
        check_threads(self.threads)
        train, val = fit_sources(x, y, validation_split, validation_data)
        self._setup(train)
        with restored_threads(self.threads, self.device_):  # on_fit_end restores them too, but
            # an exception skips it; an int is pinned from here on, for the calibration too
            run = self.state_ = self._begin_run(requested, train, int(epochs), resume is None, shuffle)
            resumed_from = restore_newest(resume, self.model_, self.optimizer_, run,
                                          self.device_) if resume is not None else None
            batches = BatchIterator(self._with_targets(train), synced(run.policy, self.dist_,
                                    self.device_).batch_size, shuffle, run.seed, self.device_,
                                    shard=self.dist_)
            val_batches = self._eval_batches(val) if val is not None else None
            hooks = CallbackList([*thread_callbacks(self.threads, self.device_),
                                  *for_this_rank(callbacks, self.dist_)])
            hooks.on_fit_begin(self, fit_info(run, self.memory_, len(batches),
                                              len(val) if val is not None else 0,
                                              int(epochs), resumed_from))
            self.stop_training |= run.attach_callbacks(hooks)  # a resumed run's early stop
            with stop_on_signals() as run.stop_request:
                for epoch in range(run.epoch, int(epochs)):
                    if self.stop_training or not self._fit_epoch(batches, val_batches, epoch, hooks):
                        break
            hooks.on_fit_end(self, run.history)
        return run.history

    def _fit_epoch(self, batches: BatchIterator, val_batches: BatchIterator | None, epoch: int,
                   hooks: Callback) -> bool:
        """One epoch of fit(): training, validation, its record, on_epoch_end; False to stop."""
        logs = self.run_epoch(batches, epoch, hooks)
        if self.state_.stop_reason:  # a non-finite step: this epoch is not complete
            return False
        if val_batches is not None:
            logs.update({f"val_{key}": value for key, value in self.run_eval(val_batches).items()})
        self.state_.history.append(logs)
        hooks.on_epoch_end(self, epoch, logs)
        return not self.stop_training

    def run_epoch(self, batches: BatchIterator, epoch: int, hooks: Callback) -> dict:
        """One pass over the training batches (whatever sizes the policy picks), from the run's
        position in the epoch's order; returns the epoch's record."""
        run = self.state_
        start = run.position if epoch == run.epoch else 0
        run.epoch, run.position = epoch, start
        hooks.on_epoch_begin(self, epoch)
        if start == 0:  # a resumed epoch keeps the metric sums restored from its checkpoint
            run.metrics.reset()
        self.model_.train()
        started = time.perf_counter()
        for batch in batches.steps(epoch, start):
            record = self.train_step(batch)
            run.position = batch.position
            if record is None:  # non-finite, on_nonfinite="stop"
                break
            run.history.steps.append(record)
            run.observe(record, batches)  # the policy told, the branches it asks for run
            hooks.on_batch_end(self, record["samples"])
            if run.interrupt is not None:
                raise TrainingInterrupted(run.interrupt, run.step)
            if self.stop_training:  # a callback asked to stop now (mid-epoch)
                break
        return run.epoch_record(run.metrics.compute(self._reduce),  # one device read
                                time.perf_counter() - started, batches.num_samples - start)

    def train_step(self, batch: Batch) -> dict | None:
        """One optimizer step on one logical batch (training/step.py), and its accounting;
        returns the step's record (None when a non-finite step stops training)."""
        run, pipeline = self.state_, self.pipeline_
        # Coupled to the size the policy asked for, not to the batch: an epoch's short last batch
        # is not a change of batch size and must not change the learning rate.
        lr = run.lr_control.apply(batch.requested, run.clock())
        started = time.perf_counter()
        physical = pipeline.physical_batch(len(batch.targets), run.max_physical_batch, run.step)
        parts = micro_batches(batch.inputs, batch.targets, physical)
        outcome = pipeline.compute(parts, batch.global_size, batch.real_samples > 0)
        if outcome.finite:
            pipeline.apply(outcome)
        elif outcome.overflow:  # float16 past the scaler's scale: skipped, the scale lowered
            pipeline.skip_overflow()
        elif not self._nonfinite():
            return None
        # After the step, not after backward: small ops right after backward run cold (~70 us more
        # at batch 8 on a CPU); the optimizer's elementwise ops warm the same code.
        for outputs, targets, loss in outcome.results:
            run.metrics.update(outputs, targets, loss)
        run.step_time_s = time.perf_counter() - started
        return run.advance(batch.requested, batch.global_size, physical, len(parts), lr,
                           skipped=not outcome.finite)

    def _nonfinite(self) -> bool:
        """Act on a non-finite step (training/finite.py): True to go on without it ("skip")."""
        self.state_.stop_reason = nonfinite_outcome(self.on_nonfinite, self.state_)
        if self.state_.stop_reason is not None:
            self.stop_training, self.state_.last_step = True, None
            warn_stopped(self.state_.stop_reason)
            return False
        self.pipeline_.discard()
        return True

    def run_eval(self, batches: BatchIterator) -> dict[str, float]:
        """Loss and metrics over every batch of `batches`, without gradients."""
        metrics = MetricSet(self.task_, self.metric_names_, self.device_)
        for outputs, y in self._inference(batches):
            metrics.update(outputs, y, self.task_.loss_fn(outputs, y))
        return metrics.compute(self._reduce)

    def _inference(self, batches: BatchIterator) -> Iterator[tuple[Tensor, Tensor]]:
        """Each batch's (outputs in float32, targets): eval mode, no gradients, forward passes in
        the training's precision (evaluation and prediction alike)."""
        self.model_.eval()
        with torch.inference_mode():
            for x, y in batches.epoch(0):
                with self.precision_.autocast():
                    outputs = self.model_(x)
                yield outputs.float(), y

    # -- the rest of the API --------------------------------------------------------------------

    def prepare(self, x: Any, y: Any = None) -> "Trainer":
        """Build the model, task and optimizer for this data without training (fit does it too)."""
        self._setup(as_source(x, y))
        return self

    def running_logs(self) -> dict[str, float]:
        """Loss and metrics over the current epoch so far (reads the device: call at intervals)."""
        return self.state_.metrics.compute()

    def evaluate(self, x: Any, y: Any = None, *, batch_size: int = EVAL_BATCH_SIZE) -> dict[str, float]:
        """Loss and metrics of the model on x, y (arrays/tensors or a Dataset of (x, y))."""
        check_batch_size(batch_size)
        self._setup(source := as_source(x, y))
        return self.run_eval(self._eval_batches(source, batch_size))

    def predict(self, x: Any, *, batch_size: int = EVAL_BATCH_SIZE) -> np.ndarray:
        """Class probabilities (classification) or values (regression), one row per sample."""
        check_batch_size(batch_size)
        if self.model_ is None:
            raise ConfigError("predict() needs a trained model: call fit() first, or "
                              "Trainer.load(run_dir)")
        source = as_source(x, None if holds_targets(x) else np.zeros(len(x)))
        check_input_shape(self.input_shape_, source.sample_shape)
        batches = BatchIterator(source, batch_size, False, 0, self.device_)
        return torch.cat([self.task_.predictions(outputs).float().cpu()
                          for outputs, _ in self._inference(batches)]).numpy()

    def save(self, run_dir: str | Path) -> None:
        """Write the trained model to run_dir (model.safetensors + model.json; no pickle)."""
        if self.model_ is None:
            raise ConfigError("nothing to save: call fit() first")
        save_model(SavedModel(self.model_, self.built_.spec, self.task_, self.input_shape_,
                              self.metric_names_), run_dir)

    @classmethod
    def load(cls, run_dir: str | Path, model: nn.Module | str | ModelSpec | None = None,
             device: str = "auto", trust_model_code: bool = False, **options: Any) -> "Trainer":
        """A trainer holding the model saved in run_dir, ready to evaluate, predict or fit on.

        model: the nn.Module to load the weights into (needed for custom modules), or the model
        factory to rebuild ("mlp", "package.module:factory"). None rebuilds what model.json names;
        an import path there is code, followed only with trust_model_code=True (a run directory
        is data: whoever shared it could name any module). options: further Trainer arguments.
        """
        trainer = cls(model, device=device, **options)
        saved = load_saved_model(run_dir, model, resolve_device(device), trust_model_code)
        if saved.spec is not None:  # rebuilt: later fits and saves name the model
            trainer.model = saved.spec
        trainer.metrics = list(saved.metrics)
        trainer.built_ = loaded(saved.model, saved.spec, saved.task, saved.input_shape,
                                resolve_device(device), trainer.seed if trainer.seed is not None else 0)
        return trainer

    # -- set-up ---------------------------------------------------------------------------------

    def _setup(self, source: Source) -> None:
        """Build the model, task and optimizer from the first data seen; later calls only check."""
        if self.built_ is None:
            self.built_ = build_run(self.model, self.model_options, self.device, self.seed,
                                    self.loss, self.task, source)
        if self.optimizer_ is None:
            self.optimizer_ = make_optimizer(self.optimizer, self.model_, self.lr,
                                             **(self.optimizer_options or {}))
        check_input_shape(self.input_shape_, source.sample_shape)
        names = DEFAULT_METRICS[self.task_.kind] if self.metrics == "auto" else self.metrics
        self.metric_names_ = tuple([names] if isinstance(names, str) else names)

    def _begin_run(self, requested, train: Source, epochs: int, calibrate: bool, shuffle: bool):
        """A new run's state and step pipeline (training/run.py), under the memory ceiling; the
        policy calibrated if it asks (training/calibrate.py) and `calibrate` (not resuming)."""
        self.memory_, max_physical = physical_cap(
            self.max_physical_batch, self.memory_, self.memory_budget, self.built_, self.optimizer_,
            lambda: next(BatchIterator(train, 16, False, 0, self.device_).epoch(0))[0],
            self.precision_)
        run, self.pipeline_ = begin_run(
            requested, self.built_, self.optimizer_, self.metric_names_, len(train), epochs,
            max_physical, self.lr_scaling, self.lr_schedule, self.state_, self.precision_,
            self.compile, lambda *args: first_epoch_samples(self._with_targets(train), *args,
                                                            device=self.device_), calibrate, shuffle)
        self.stop_training = False
        check_action(self.on_nonfinite)
        return run

    _reduce = property(lambda self: self.dist_.sum if self.dist_ is not None else None)

    def _with_targets(self, source: Source) -> Source:
        return source.map_targets(lambda y: prepare_targets(self.task_, y))

    def _eval_batches(self, source: Source, batch_size: int = EVAL_BATCH_SIZE) -> BatchIterator:
        check_input_shape(self.input_shape_, source.sample_shape)
        return BatchIterator(self._with_targets(source), batch_size, False, 0, self.device_,
                             shard=self.dist_, pad=False)

    # What the first fit() built (models/build.py Built), and the run's counters (state.py).
    model_ = property(lambda self: self.built_.model if self.built_ else None)
    task_ = property(lambda self: self.built_.task if self.built_ else None)
    input_shape_ = property(lambda self: self.built_.input_shape if self.built_ else None)
    device_ = property(lambda self: self.built_.device if self.built_ else None)
    dist_ = property(lambda self: self.built_.group if self.built_ else None)  # under torchrun
    seed_ = property(lambda self: self.state_.seed if self.state_ else
                     self.built_.seed if self.built_ else None)  # a resumed run's: the checkpoint's
    precision_ = property(lambda self: resolve_precision(self.precision, self.device_)
                          if self.built_ else None)  # "auto" resolved for the device
    step_ = property(lambda self: self.state_.step if self.state_ else 0)  # over every fit()
    samples_seen_ = property(lambda self: self.state_.total_samples_seen if self.state_ else 0)
    history_ = property(lambda self: self.state_.history if self.state_ else None)
    last_step_ = property(lambda self: self.state_.last_step if self.state_ else None)
    stop_reason_ = property(lambda self: self.state_.stop_reason if self.state_ else None)
    max_physical_batch_ = property(lambda self: self.state_.max_physical_batch)
    noise_ = property(lambda self: self.state_.noise if self.state_ else None)

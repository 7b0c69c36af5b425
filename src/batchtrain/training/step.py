"""One optimizer step on one logical batch, as a pipeline of small pieces:

    micro-batches -> forward/backward, accumulated -> synchronisation (one process, DDP)
        -> measurement (gradient noise; optional) -> finiteness -> optimizer

The trainer's train_step runs it and keeps the accounting (learning rate, counters, records).
"""
from contextlib import nullcontext
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from batchtrain.training.finite import step_is_finite
from batchtrain.training.measure import NoiseMeasurement
from batchtrain.training.sync import DataParallel, SingleProcess

Counted = tuple[Tensor, Tensor, Tensor]  # a micro-batch's (outputs, targets, mean loss), detached


def micro_batches(x: Tensor, y: Tensor, physical: int) -> list[tuple[Tensor, Tensor]]:
    """The logical batch cut into physical micro-batches of at most `physical` samples."""
    if physical >= len(y):  # one micro-batch: two split ops saved (~40 us of a batch-8 CPU step)
        return [(x, y)]
    return list(zip(x.split(physical), y.split(physical)))


def accumulate(network: nn.Module, loss_fn, parts: list[tuple[Tensor, Tensor]], logical: int,
               counts: bool, sync: SingleProcess | DataParallel, all_reduce_last: bool,
               measurement: NoiseMeasurement | None, autocast=nullcontext,
               scaler: "torch.amp.GradScaler | None" = None) -> list[Counted]:
    """Accumulate the gradient of the logical batch's mean loss over its micro-batches.

    Each micro-batch's mean loss is weighted by its share of the logical batch, so the summed
    gradient equals the gradient of the whole batch's mean loss: the same update as one step on
    it. Under DDP the share is multiplied by the world size (DDP averages over ranks), and only the
    last backward all-reduces (none does when all_reduce_last is False: a caller that reduces).
    counts: False for a padding sample (weight 0). autocast: the context forward and loss run
    in (runtime/precision.py); backward runs outside it, as torch.amp recommends. scaler: float16's
    GradScaler, which scales each loss up before backward (the gradients are unscaled later).
    Returns each counted micro-batch's (outputs, targets, mean loss), detached.
    """
    results = []
    for index, (inputs, targets) in enumerate(parts):
        share = len(targets) * sync.world_size / logical if counts else 0.0
        sync.before_backward(all_reduce_last and index == len(parts) - 1)
        with autocast():
            outputs = network(inputs)
            loss = loss_fn(outputs, targets)
        weighted = loss * share if share != 1.0 else loss
        (scaler.scale(weighted) if scaler is not None else weighted).backward()
        if measurement is not None:
            measurement.after_micro_batch(len(targets), logical)
        if counts:
            results.append((outputs.detach(), targets, loss.detach()))
    return results


@dataclass
class StepOutcome:
    """What a step computed before its update: the counted micro-batches, the gradient-noise
    statistics (None when not measured), whether the losses and gradients are all finite, and
    whether a non-finite step is a float16 overflow (finite losses, gradients past the scale:
    the scaler skips it and lowers its scale; not a reason to stop)."""

    results: list[Counted]
    statistics: dict | None
    finite: bool
    overflow: bool = False


class TrainStep:
    """The pipeline for one run: network, loss, optimizer, synchronisation and measurement."""

    def __init__(self, network: nn.Module, loss_fn, optimizer: torch.optim.Optimizer,
                 parameters: list[Tensor], sync: SingleProcess | DataParallel,
                 measurement: NoiseMeasurement | None = None, autocast=nullcontext,
                 scaler: "torch.amp.GradScaler | None" = None):
        self.network = network
        self.loss_fn = loss_fn
        self.optimizer = optimizer
        self.parameters = parameters  # walking the module tree: ~50 us a step, so done once
        self.sync = sync
        self.measurement = measurement
        self.autocast = autocast  # runtime/precision.py Precision.autocast
        self.scaler = scaler  # "16-mixed" only

    def physical_batch(self, logical: int, cap: int, step: int = 0) -> int:
        """The micro-batch size for a logical batch under the memory ceiling `cap`, at step
        number `step` of the run (the measurement may be due)."""
        if self.measurement is not None:
            return self.measurement.physical_batch(logical, cap, step)
        return min(logical, cap)

    def compute(self, parts: list[tuple[Tensor, Tensor]], logical: int, counts: bool) -> StepOutcome:
        """Gradients of the logical batch (global: `logical` samples over all ranks), reduced and
        measured; one host synchronisation for the finiteness check. Nothing is applied yet."""
        measurement = self.measurement
        if measurement is not None:
            measurement.plan(len(parts))
        self.optimizer.zero_grad(set_to_none=True)
        if measurement is not None:
            measurement.begin()
        try:  # the last backward all-reduces, measured or not (measure.py: DDP's comm hook)
            results = accumulate(self.network, self.loss_fn, parts, logical, counts, self.sync,
                                 True, measurement, self.autocast, self.scaler)
        finally:
            self.sync.after_step()
        local = sum(len(targets) for _, targets in parts) if counts else 0
        statistics = measurement.finish(local, logical) if measurement is not None else None
        if self.scaler is not None:  # noise and finiteness are judged on the true gradients
            statistics = unscaled(statistics, self.scaler.get_scale())
            self.scaler.unscale_(self.optimizer)
        gradients = [parameter.grad for parameter in self.parameters if parameter.grad is not None]
        losses = [loss for _, _, loss in results]
        finite = step_is_finite(losses, gradients, self.sync.reduce)
        overflow = (not finite and self.scaler is not None
                    and step_is_finite(losses, [], self.sync.reduce))
        return StepOutcome(results, statistics, finite, overflow)

    def apply(self, outcome: StepOutcome) -> None:
        """The optimizer's update, then the statistics of the applied step recorded."""
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        if self.measurement is not None:
            self.measurement.record(outcome.statistics)

    def skip_overflow(self) -> None:
        """A float16 overflow: the scaler skips the update and lowers its scale."""
        self.scaler.step(self.optimizer)  # sees the infinities unscale_ found: no update
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)

    def discard(self) -> None:
        """A skipped step: its gradients are dropped, nothing is applied."""
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:  # unscale_ ran: the scaler expects an update before the next
            self.scaler.update()


def unscaled(statistics: dict | None, scale: float) -> dict | None:
    """Gradient-noise statistics measured on gradients scaled by `scale`, as if unscaled:
    squared norms divide by scale^2."""
    if statistics is None or scale == 1.0:
        return statistics
    factor = 1.0 / (scale * scale)
    return {**statistics, "micro_sq_norms": [norm * factor for norm in statistics["micro_sq_norms"]],
            "batch_sq_norm": statistics["batch_sq_norm"] * factor}

"""The batch-size policy protocol: what a policy is asked, and what it is told after each step.

A policy decides the logical batch: the samples behind one optimizer step. How that batch is cut
into physical micro-batches (memory ceiling, accumulation) is the trainer's business, not the
policy's, so every policy works under any memory limit.
"""
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from torch import Tensor


@dataclass(frozen=True)
class StepStats:
    """What happened in one optimizer step.

    samples_seen: training samples processed in the run, this step included.
    epoch: 0-based epoch of the step; samples_per_epoch: samples in one epoch.
    batch_size: the step's logical batch (the last batch of an epoch may be smaller than asked).
    loss: the step's mean loss as a tensor (reading it syncs the device: do so only when needed).
    gradient: gradient-noise statistics, for a policy with a true `wants_gradient_stats`
        attribute (empty until there is an estimate): {"noise_scale": B_simple, "grad_sq": |G|^2,
        "trace": tr(Sigma) per sample, "confidence": in [0, 1]} (stats/tracker.py).
    physical_batch: the micro-batch size used; time_s: the step's wall time in seconds
        (forward, backward and update of every micro-batch), for throughput models.
    """

    samples_seen: int
    epoch: int
    samples_per_epoch: int
    batch_size: int
    loss: Tensor | None = None
    gradient: dict = field(default_factory=dict)
    physical_batch: int = 0
    time_s: float = 0.0


@runtime_checkable
class BatchSizePolicy(Protocol):
    """Decides the logical batch size before each step, from what it observed so far."""

    def batch_size(self) -> int:
        """The logical batch (samples) for the next optimizer step."""
        ...

    def observe(self, step: StepStats) -> None:
        """Called after every optimizer step, and once when fit() begins (batch_size=0), so the
        policy knows where training stands (samples seen, epoch length) before its first answer."""
        ...

    def state_dict(self) -> dict:
        """Everything needed to continue deciding identically after a restore (JSON-safe)."""
        ...

    def load_state_dict(self, state: dict) -> None:
        ...

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
    gradient: gradient-noise statistics, for a policy whose `wants_gradient_stats` is True (empty until there is an estimate): {"noise_scale": B_simple, "grad_sq": |G|^2,
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
    """Decides the logical batch size before each step, from what it observed so far.

    These four methods make a policy. The optional capabilities have defaults in `Policy`, which
    the built-in policies subclass; a policy that does not is given them by `declared`.
    """

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


class Policy(BatchSizePolicy):
    """A BatchSizePolicy with every optional capability declared, and its default."""

    # True: the trainer measures the gradient noise and passes it in StepStats.gradient (and,
    # under DDP, rank 0 decides for every rank, since the measurements are local).
    wants_gradient_stats: bool = False
    # With wants_gradient_stats: the noise is measured on every stats_every-th step only (a
    # measured step costs more: training/measure.py; read at every step, 0 measures none);
    # StepStats.gradient keeps the latest estimate.
    stats_every: int = 1
    # The geometry of the measured gradients: "raw" (as they are), or "preconditioned" (Adam's and
    # RMSprop's divided by sqrt(v) + eps, the geometry they step in; stats/precondition.py).
    noise_geometry: str = "raw"
    # True: lr_scale gives AdaScale's gain (lr_scaling="adascale" needs such a policy).
    gives_lr_scale: bool = False

    def set_limit(self, max_batch: int) -> None:
        """Told the memory ceiling (samples) when fit() begins; ignored by default."""

    def lr_scale(self, reference_batch: int) -> float:
        """The AdaScale learning-rate gain over `reference_batch` (lr_scaling="adascale", for a
        policy that measures the gradient noise); 1 by default."""
        return 1.0

    # False: calibrate on every size calibration_sizes gives, without a time budget (a policy
    # whose decisions read no clock, so its runs start alike).
    calibration_timed: bool = True

    def calibration_sizes(self, samples: int) -> list[int]:
        """Physical batches to time before a new run's first step (training/calibrate.py), given
        the training samples there are; none by default (no calibration)."""
        return []

    def calibrate(self, calibration) -> None:
        """Told what those start-up passes measured (training/calibrate.py Calibration)."""

    def calibration_enough(self, seconds: dict[int, float], noise: dict | None) -> bool:
        """Asked after each size the start-up passes time, with the seconds per pass and the noise
        so far: True stops there. False by default: every size calibration_sizes gave."""
        return False

    def allow_branches(self) -> None:
        """Told when fit begins, in one process (not under DDP), that the trainer will run the
        branches this policy asks for (branch_sizes, branches_due); ignored by default."""

    def branch_sizes(self, samples: int) -> list[int]:
        """Logical batches to branch at after the calibration, from the initial weights
        (training/branch.py: short runs at each size, undone); none by default."""
        return []

    def branches_enough(self, branches) -> bool:
        """Asked after each of the start's branches (branch_sizes, run from the largest down)
        but the last: True leaves the smaller sizes out. False by default: every size runs."""
        return False

    def branches_due(self) -> tuple[list[int], int] | None:
        """Logical batches to branch at now, and the branches' length (a multiple of the
        trainer's default samples), asked after every step (one process only); None by default."""
        return None

    def observe_branches(self, branches) -> None:
        """Told what the branches it asked for measured (training/branch.py Branches)."""

    def branch_choice(self, branches) -> int | None:
        """The size whose branch the run should keep, from branches so far (training/branch.py
        branch's keep): the size observe_branches would then train at; None (default): undo all."""
        return None


def declared(policy: BatchSizePolicy) -> Policy:
    """The policy with every optional capability present: itself when it subclasses Policy,
    else a thin wrapper that adds the defaults it lacks."""
    return policy if isinstance(policy, Policy) else _Declared(policy)


class Wrapping(Policy):
    """A policy that wraps another and passes the four protocol methods (and repr) through;
    subclasses change what they wrap differently (declared capabilities, rank 0's decision)."""

    def __init__(self, policy: BatchSizePolicy):
        self.policy = policy

    def batch_size(self) -> int:
        return self.policy.batch_size()

    def observe(self, step: StepStats) -> None:
        self.policy.observe(step)

    def state_dict(self) -> dict:
        return self.policy.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.policy.load_state_dict(state)

    def __repr__(self) -> str:
        return repr(self.policy)


class _Declared(Wrapping):
    """A structural policy (the four methods, no subclassing) with the defaults added."""

    def __init__(self, policy: BatchSizePolicy):
        super().__init__(policy)
        self.wants_gradient_stats = bool(getattr(policy, "wants_gradient_stats", False))
        self.stats_every = int(getattr(policy, "stats_every", 1))
        self.noise_geometry = str(getattr(policy, "noise_geometry", "raw"))
        self.gives_lr_scale = hasattr(policy, "lr_scale")
        self.set_limit = getattr(policy, "set_limit", super().set_limit)
        self.lr_scale = getattr(policy, "lr_scale", super().lr_scale)
        self.calibration_sizes = getattr(policy, "calibration_sizes", super().calibration_sizes)
        self.calibration_timed = bool(getattr(policy, "calibration_timed", True))
        self.calibrate = getattr(policy, "calibrate", super().calibrate)
        for name in ("calibration_enough", "allow_branches", "branch_sizes", "branches_enough",
                     "branches_due", "observe_branches", "branch_choice"):
            setattr(self, name, getattr(policy, name, getattr(super(), name)))

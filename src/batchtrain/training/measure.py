"""The step's optional measurement hook: gradient-noise statistics, for a policy that wants them,
on every `every`-th step of the run (the policy's stats_every, asked at each step: 0 measures
none), and on every step until the first measurement (preconditioned, Adam's first step has none:
no second moments). A measured step costs more: in one process its batch is split in two
micro-batches; under DDP each gradient bucket's local norm is taken in DDP's communication hook,
and the ranks' norms are all-gathered after backward. The others run as without a measurement.

In one process each micro-batch's gradient norm is measured as backward accumulates (a logical
batch is split in two or more micro-batches for this: stats/collector.py); under DDP the ranks'
gradients serve as the small batches (distributed/ddp.py LocalNorms, statistics_after_reduce).
Gradients are measured raw; with the policy's noise_geometry "preconditioned", Adam's and
RMSprop's in the geometry they step in (stats/precondition.py), from their second step on.
"""
from collections.abc import Callable

from torch import Tensor, nn

from batchtrain.distributed.ddp import Distributed, measure_local_norms, statistics_after_reduce
from batchtrain.stats import MicroBatchGradients, NoiseScaleTracker, Preconditioner, split_for_stats


class NoiseMeasurement:
    """Measures each step's gradient noise into `tracker` (the run state's NoiseScaleTracker)."""

    def __init__(self, parameters: list[Tensor], optimizer, tracker: NoiseScaleTracker,
                 group: Distributed | None, every: "int | Callable[[], int]" = 1,
                 geometry: str = "raw", network: nn.Module | None = None):
        self.parameters = parameters
        self.collector = MicroBatchGradients(parameters)
        # "raw": gradients as they are, for every optimizer; "preconditioned": Adam's and
        # RMSprop's in the geometry they step in (batching/base.py Policy.noise_geometry)
        self.preconditioner = Preconditioner(optimizer if geometry == "preconditioned" else None)
        self.tracker = tracker
        self.group = group
        # under DDP (network: the DDP-wrapped model), the local norms come from its comm hook
        self.norms = (measure_local_norms(network, group) if network is not None
                      and group is not None and group.world_size > 1 else None)
        self.every = every if callable(every) else (lambda: every)  # asked each step; 0: none
        self.factors = None
        self.due = True
        self.by_micro_batch = self.by_rank = False

    def physical_batch(self, logical: int, cap: int, step: int = 0) -> int:
        """The micro-batch size of step number `step` (0-based over the run's steps): on a
        measured step, at least two micro-batches in one process (their norms are the small
        batches); none while `every` gives 0."""
        every = int(self.every())
        self.due = every > 0 and (step % every == 0 or self.tracker.updates == 0)  # until the first
        if self.due and logical >= 2 and self.group is None:
            return split_for_stats(logical, cap)
        return min(logical, cap)

    def plan(self, micro_batches: int) -> None:
        """Before the step: measure it when due, unless an adaptive optimizer has no second
        moments yet."""
        self.factors = self.preconditioner.factors(self.parameters) if self.due else None
        active = self.due and (self.factors is not None or not self.preconditioner.adaptive)
        world = self.group.world_size if self.group is not None else 1
        self.by_micro_batch = active and micro_batches > 1 and world == 1
        self.by_rank = active and world > 1 and self.norms is not None
        if self.by_rank:
            self.norms.begin(self.parameters, self.factors)

    def begin(self) -> None:
        """After the gradients were zeroed, before the first backward."""
        if self.by_micro_batch:
            self.collector.begin(self.factors)

    def after_micro_batch(self, samples: int, logical: int) -> None:
        if self.by_micro_batch:
            self.collector.after_micro_batch(samples, samples / logical)

    def finish(self, local_samples: int, logical: int) -> dict | None:
        """The step's statistics (None when not measured), after DDP's all-reduce by rank."""
        if self.by_rank:
            statistics = statistics_after_reduce(self.parameters, self.group, local_samples,
                                                 logical, self.norms.take(), self.factors)
            # a global batch smaller than the world leaves one rank's gradient: no estimate
            return statistics if len(statistics["micro_sizes"]) >= 2 else None
        return self.collector.finish(logical) if self.by_micro_batch else None

    def record(self, statistics: dict | None) -> None:
        """After an applied step: the statistics join the tracker's estimate."""
        if statistics is not None:
            self.tracker.update(**statistics)


"""MicroBatchGradients: each micro-batch's squared gradient norm, read off gradient accumulation.

The trainer accumulates micro-batch i's mean-loss gradient g_i into .grad with weight b_i / B, so
.grad after micro-batch i is acc_i = sum_{j<=i} (b_j / B) g_j and, after the last, G_B. One extra
parameter-sized buffer holds acc_{i-1}; then g_i = (acc_i - acc_{i-1}) / (b_i / B). No second
backward pass and no per-sample gradients: the statistics cost a few passes over the gradients.
"""
import math
from collections.abc import Iterable

import torch
from torch import Tensor

from batchtrain.errors import ConfigError


class MicroBatchGradients:
    """Squared norms |g_i|^2 of each micro-batch's gradient, and |G_B|^2 of the step's.

    parameters: the model's parameters (an iterable, kept as a list); frozen ones and those
        without a gradient count as zero.
    Use, in one optimizer step, after zero_grad():
        collector.begin()
        for each micro-batch of b_i samples: (loss_i * b_i / B).backward();
                                             collector.after_micro_batch(b_i, b_i / B)
        stats = collector.finish(B)   # -> NoiseScaleTracker.update(**stats)
    Cost: three fused passes over the gradients per micro-batch and no host synchronisation
    (tests/stats/test_collector.py::test_cost_is_three_fused_passes_over_the_gradients counts
    them: about 0.08 % of a seed-cnn micro-batch's forward + backward FLOPs). Timed once (seed-cnn,
    121 930 parameters, micro-batch 64, one CPU thread of a shared 2-core machine, fastest of
    repeats): after_micro_batch 0.11-0.16 ms against 20-25 ms for the micro-batch's forward +
    backward; finish about 0.25 ms once per step. Not measured on a GPU (none was available); there it is a handful of fused kernels per
    micro-batch plus the one synchronisation in finish.
    Precision: acc_i - acc_{i-1} loses about log10(k) digits to cancellation; fine in float32,
    too coarse for half-precision gradients.
    One process: under DistributedDataParallel, all-reducing with the last micro-batch only,
    the last backward averages .grad over ranks, so the last difference is not that micro-batch's
    gradient (a distributed version must gather per-rank norms instead).
    """

    def __init__(self, parameters: Iterable[Tensor]):
        self.parameters = list(parameters)
        self.accumulated_before: list[Tensor] = []  # acc_{i-1}, one tensor per parameter
        self.micro_sizes: list[int] = []
        self.micro_sq_norms: list[Tensor] = []  # on the device until finish()
        self.factors: list[Tensor] | None = None

    def begin(self, factors: list[Tensor] | None = None) -> None:
        """Start a step: the accumulated gradient before the first micro-batch is zero.
        factors: per-parameter elementwise factors applied before every norm (an adaptive
        optimizer's preconditioner, stats/precondition.py); None measures raw gradients."""
        if len(self.accumulated_before) != len(self.parameters):
            self.accumulated_before = [torch.zeros_like(p) for p in self.parameters]
        else:
            torch._foreach_zero_(self.accumulated_before)
        self.factors = factors
        self.micro_sizes, self.micro_sq_norms = [], []

    def after_micro_batch(self, size: int, weight: float) -> None:
        """Record the micro-batch just back-propagated: `size` samples, accumulated with
        `weight` = size / B. Reads .grad, never writes it; does not synchronise the device."""
        if not weight > 0.0:
            raise ConfigError(f"weight must be > 0 (the micro-batch's share size / B), got {weight}")
        grads, accumulated_before, factors = self._with_gradients()
        if grads:
            # accumulated_before <- acc_{i-1} - acc_i = -(b_i/B) g_i, in place: no second buffer.
            torch._foreach_sub_(accumulated_before, grads)
            if factors:
                torch._foreach_mul_(accumulated_before, factors)
            sq_norm = _sum_sq(accumulated_before) / (weight * weight)
            torch._foreach_copy_(accumulated_before, grads)  # <- acc_i, for the next micro-batch
        else:
            sq_norm = torch.zeros((), dtype=torch.float64)
        self.micro_sizes.append(int(size))
        self.micro_sq_norms.append(sq_norm)

    def finish(self, batch_size: int) -> dict:
        """The step's statistics as Python numbers, in one host synchronisation:
        {"micro_sizes": [b_i], "micro_sq_norms": [|g_i|^2], "batch_sq_norm": |G_B|^2}."""
        if sum(self.micro_sizes) != batch_size:
            raise ConfigError(f"the micro-batches hold {sum(self.micro_sizes)} samples, not "
                              f"batch_size={batch_size}; call after_micro_batch once per micro-batch")
        grads, scratch, factors = self._with_gradients()
        if factors:  # the buffer is free after the last micro-batch: P G_B goes there
            torch._foreach_copy_(scratch, grads)
            torch._foreach_mul_(scratch, factors)
            grads = scratch
        batch_sq = _sum_sq(grads) if grads else torch.zeros((), dtype=torch.float64)
        norms = [n.to(batch_sq.device) for n in self.micro_sq_norms] + [batch_sq]
        values = torch.stack(norms).tolist()  # the one host synchronisation
        return {"micro_sizes": list(self.micro_sizes), "micro_sq_norms": values[:-1],
                "batch_sq_norm": values[-1]}

    def _with_gradients(self) -> tuple[list[Tensor], list[Tensor], list[Tensor]]:
        """(.grad, buffer, factors) of the parameters that have a gradient: a parameter first
        reached by a later micro-batch has a zero buffer, which is right (it accumulated nothing
        before). factors is empty when gradients are measured raw."""
        if len(self.accumulated_before) != len(self.parameters):
            raise ConfigError("call begin() before the step's first micro-batch")
        with_grad = [index for index, p in enumerate(self.parameters) if p.grad is not None]
        return ([self.parameters[index].grad for index in with_grad],
                [self.accumulated_before[index] for index in with_grad],
                [self.factors[index] for index in with_grad] if self.factors else [])


def _sum_sq(tensors: list[Tensor]) -> Tensor:
    """sum_j |t_j|^2 as a float64 scalar tensor on the tensors' device (one fused norm pass)."""
    norms = torch._foreach_norm(tensors)
    if len({(n.dtype, n.device) for n in norms}) > 1:  # mixed precisions or devices: rare, slower
        norms = [n.to(norms[0].device, torch.float64) for n in norms]
    return torch.stack(norms).double().square().sum()


def split_for_stats(batch_size: int, physical_cap: int, k_min: int = 2) -> int:
    """The physical micro-batch size [samples] for a step that measures gradient noise.

    Cutting batch_size samples into pieces of the returned size (tensor.split) gives at least
    k_min micro-batches, none above physical_cap, and as even as tensor.split allows: the fewest
    micro-batches that satisfy both (each costs a forward and backward pass), then the smallest
    size that gives that many, so the short last micro-batch is as long as possible.
    Raises ConfigError when batch_size < k_min (no split exists).
    """
    if physical_cap < 1 or k_min < 1:
        raise ConfigError(f"physical_cap and k_min must be >= 1, got {physical_cap} and {k_min}")
    if batch_size < k_min:
        raise ConfigError(f"a batch of {batch_size} samples cannot be cut into k_min={k_min} "
                          "micro-batches; measure the noise on larger batches")
    count = max(k_min, math.ceil(batch_size / physical_cap))
    physical = math.ceil(batch_size / count)  # <= physical_cap, since count >= batch_size / cap
    while math.ceil(batch_size / physical) < k_min:  # e.g. 10 in pieces of ceil(10/6)=2 is 5 < 6
        physical -= 1
    return physical

"""The branched measurement of the batch size: short runs at several batch sizes from the same
weights, instead of trusting the gradient noise scale as a proxy (Merrill et al. 2025, "Critical
Batch Size Revisited": branch from a checkpoint at each batch size, train on the same tokens,
compare the losses).

From a snapshot of the model and the optimizer, each candidate batch B trains on the same N
samples, in the same order (only their grouping into steps differs), with the lr the caller's
lr_factor(B) gives (the run's coupling, or one value of an lr sweep); the loss on a fixed probe set
(eval mode, no gradients) before and after gives B's improvement, the branch's wall clock its
speed. The snapshot is put back after each branch (parameters, optimizer state, buffers, lrs;
dropout draws from a forked RNG, seeded alike in every branch), except for the one the caller
keeps (branch's keep: the size the policy then trains at), from which the run goes on.

Two readings of the improvements:
- critical_batch: McCandlish et al. 2018 (eq. 2.7-2.9): a step of B at its best lr improves the
  loss by dL_max / (1 + B_noise / B), so N samples (N / B steps, while the changes are small
  enough to add up) improve it by N dL_max / (B + B_noise): 1 / improvement is a line in B whose
  intercept / slope is the critical batch.
- fastest: the B with the largest improvement per second: the goodput (Qiao et al. 2021, Pollux)
  measured directly, with the machine's real step times in it.
"""
import copy
import math
import statistics
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from batchtrain.batching.branched import BRANCH_STEPS, PROBE_SAMPLES

PROBE_BATCH = 1024  # probe-loss evaluation batch (no activations kept: large is cheap)
# Each branch trains on at least BRANCH_STEPS x the largest size's samples (batching/branched.py,
# whose pacing predicts their cost); the probe loss is taken on up to PROBE_SAMPLES others


def probe_samples(training_samples: int, branch_samples: int) -> int:
    """The probe set's size: PROBE_SAMPLES, at most a quarter of the training samples and half a
    branch's. Why half: a forward pass costs about a third of a training step, so the evaluations
    (one before the branches, one after each) stay near a third of the branches' training, the
    same share for a slow model as for a fast one (the seed CNN's probe set of 512 on 3,000
    samples cost 40 % of its start branches' time)."""
    return max(1, min(PROBE_SAMPLES, training_samples // 4, branch_samples // 2))


@dataclass
class Branches:
    """What the branches measured. improvement[B]: probe loss before minus after N samples at
    batch B; seconds[B]: the branch's training time; samples: N; cost_s: everything, the probe
    evaluations and the restores included; kept: the size whose branch the run kept (None:
    every branch undone)."""

    sizes: list[int]
    loss_before: float
    improvement: dict[int, float]
    seconds: dict[int, float]
    samples: int
    cost_s: float
    kept: int | None = None
    from_run: bool = False  # the samples were the run's next ones (Brancher): a kept branch's
    # steps were the run's, and it skips them

    @property
    def kept_steps(self) -> int:
        """The optimizer steps of the kept branch (0 when every branch was undone)."""
        return -(-self.samples // self.kept) if self.kept is not None else 0

    @property
    def overhead_s(self) -> float:
        """What the branches cost beyond training: the kept branch's steps trained the run."""
        return self.cost_s - (self.seconds[self.kept] if self.kept is not None else 0.0)

    @property
    def critical_batch(self) -> float | None:
        return critical_batch(self.improvement)

    @property
    def per_second(self) -> dict[int, float]:
        """Each batch's improvement per second of its branch's own clock (timed branches only)."""
        return {size: gain / self.seconds[size] for size, gain in self.improvement.items()
                if self.seconds[size] > 0}

    @property
    def fastest(self) -> int | None:
        """The batch with the largest improvement per second (None when no branch improved)."""
        rates = {size: rate for size, rate in self.per_second.items() if rate > 0}
        return max(rates, key=rates.get) if rates else None


def critical_batch(improvement: dict[int, float]) -> float | None:
    """B_crit from improvements at equal samples: the least-squares line of 1 / improvement
    against B (module docstring), intercept / slope. None with fewer than two improving sizes;
    inf where the line does not rise (no size lost samples-efficiency: larger is as good); 0 where
    its intercept is not positive (every size past the smallest lost in proportion)."""
    points = [(size, 1.0 / gain) for size, gain in improvement.items() if gain > 0]
    if len(points) < 2:
        return None
    mean_b = statistics.fmean(size for size, _ in points)
    mean_y = statistics.fmean(y for _, y in points)
    spread = sum((size - mean_b) ** 2 for size, _ in points)
    slope = sum((size - mean_b) * (y - mean_y) for size, y in points) / spread
    intercept = mean_y - slope * mean_b
    if slope <= 0:
        return math.inf
    return max(0.0, intercept / slope)


def branch(model: nn.Module, loss_fn: Callable, optimizer: torch.optim.Optimizer,
           inputs: Tensor, targets: Tensor, probe_inputs: Tensor, probe_targets: Tensor,
           sizes: Sequence[int], lr_factor: Callable[[int], float] = lambda size: 1.0,
           autocast=nullcontext, seed: int = 0,
           keep: Callable[[Branches], int | None] | None = None,
           enough: Callable[[Branches], bool] | None = None) -> Branches:
    """Train a branch at each of `sizes` on inputs/targets (all N of them, in order, N / B steps
    of B; a last step of N mod B), each from the same snapshot, and measure the probe loss
    (module docstring). lr_factor(B): the multiplier of every param group's lr in B's branch.

    keep(results so far): the size whose branch the run goes on from, or None (without keep,
    every branch is undone). It is asked after each branch; a branch it names that lowered the
    probe loss (never a diverged or worsening one) is held (an extra copy of the model and
    optimizer per branch named; none for the last branch, whose state is the model's own). What
    it names after the last branch is kept if held: its steps are then training the run did, not
    thrown away. A keep whose answer after each branch is that branch or an earlier answer
    (batching/branched.py's choices are) always gets what it names. enough(results so far),
    asked after each branch but the last: True leaves the remaining sizes out (the result lists
    the sizes run)."""
    started = time.perf_counter()
    start_state = _snapshot(model, optimizer)  # the model's and the optimizer's
    lrs = [group["lr"] for group in optimizer.param_groups]
    was_training = model.training
    devices = [inputs.device] if inputs.is_cuda else []
    loss_before = _probe_loss(model, loss_fn, probe_inputs, probe_targets, autocast)
    improvement, seconds = {}, {}
    held, kept = {}, None  # held: size -> end state, of the branches keep named
    try:
        for index, size in enumerate(sizes):
            with torch.random.fork_rng(devices=devices):
                torch.manual_seed(seed)  # dropout draws alike in every branch
                for group, lr in zip(optimizer.param_groups, lrs):
                    group["lr"] = lr * lr_factor(size)
                seconds[size] = _train(model, loss_fn, optimizer, inputs, targets, size, autocast)
            improvement[size] = loss_before - _probe_loss(model, loss_fn, probe_inputs,
                                                          probe_targets, autocast)
            so_far = Branches(list(sizes[:index + 1]), loss_before, improvement, seconds,
                              len(inputs), time.perf_counter() - started)
            named = keep(so_far) if keep is not None else None
            keepable = named == size and improvement[size] > 0  # False for nan
            last = index == len(sizes) - 1 or (enough is not None and enough(so_far))
            if last:  # the last branch: its state is the model's own
                kept = size if keepable else (named if named in held else None)
                if kept is not None and kept != size:
                    _restore(model, optimizer, held[kept])
            elif keepable:
                held[size] = _snapshot(model, optimizer)
            if kept is None:
                _restore(model, optimizer, start_state)
            if last:
                break
    except BaseException:
        _restore(model, optimizer, start_state)
        raise
    finally:
        for group, lr in zip(optimizer.param_groups, lrs):
            group["lr"] = lr
        optimizer.zero_grad(set_to_none=True)
        model.train(was_training)
    return Branches(list(improvement), loss_before, improvement, seconds, len(inputs),
                    time.perf_counter() - started, kept)


def _snapshot(model: nn.Module, optimizer: torch.optim.Optimizer) -> tuple[dict, dict]:
    return ({name: value.detach().clone() for name, value in model.state_dict().items()},
            copy.deepcopy(optimizer.state_dict()))


def _restore(model: nn.Module, optimizer: torch.optim.Optimizer, state: tuple[dict, dict]) -> None:
    model.load_state_dict(state[0])
    optimizer.load_state_dict(copy.deepcopy(state[1]))  # a copy: the snapshot may be loaded again


def _train(model, loss_fn, optimizer, inputs, targets, size: int, autocast) -> float:
    """Steps of `size` over all of inputs; their wall-clock seconds (the device synchronised)."""
    model.train()
    if inputs.is_cuda:
        torch.cuda.synchronize(inputs.device)
    began = time.perf_counter()
    for start in range(0, len(inputs), size):
        optimizer.zero_grad(set_to_none=True)
        with autocast():
            loss = loss_fn(model(inputs[start:start + size]), targets[start:start + size])
        loss.backward()
        optimizer.step()
    if inputs.is_cuda:
        torch.cuda.synchronize(inputs.device)
    return time.perf_counter() - began


def _probe_loss(model, loss_fn, inputs, targets, autocast) -> float:
    """The mean loss over the probe set, in eval mode and without gradients."""
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(inputs), PROBE_BATCH):
            x, y = inputs[start:start + PROBE_BATCH], targets[start:start + PROBE_BATCH]
            with autocast():
                total += float(loss_fn(model(x), y).float()) * len(x)
            count += len(x)
    return total / count


class Brancher:
    """Runs the branches a policy asks for during training (Policy.branches_due, asked after
    every step), from the run's current weights, keeps the one it would choose
    (Policy.branch_choice), and tells the policy (observe_branches).

    Each branch trains on BRANCH_STEPS x the largest size's samples (times the length the policy
    asks for; at most half the training samples), at the lr the run would take at that size (its
    coupling `rule` relative to the current batch: what moving there does), and only at sizes up
    to max_physical_batch (a branch steps without accumulation). The samples are the run's next
    ones in its epoch (the batch iterator's upcoming), the probe set the ones after them, and the
    run skips a kept branch's (its steps were the run's: Branches.from_run); where the iterator
    has not enough of them left, or reads ahead, draw(n, seed) gives shuffled ones (samples: how
    many there are), and a kept branch's steps are training on top of the epoch's."""

    def __init__(self, model: nn.Module, loss_fn: Callable, optimizer: torch.optim.Optimizer,
                 draw: Callable[[int, int], tuple[Tensor, Tensor]], samples: int,
                 max_physical_batch: int, lr_factor: Callable[[int, int], float],
                 autocast=nullcontext):
        self.model, self.loss_fn, self.optimizer = model, loss_fn, optimizer
        self.draw, self.samples, self.max_physical_batch = draw, samples, max_physical_batch
        self.lr_factor, self.autocast = lr_factor, autocast

    def __call__(self, policy, seed: int, walk=None) -> Branches | None:
        """The branches `policy` asks for now, if any (None otherwise); walk: the batch iterator
        walking the run's epoch (data/iterator.py BatchIterator), `seed` the drawn samples."""
        due = policy.branches_due()
        sizes = [size for size in due[0] if size <= self.max_physical_batch] if due else []
        if len(sizes) < 2:
            return None
        current = policy.batch_size()
        # the current size last: when the policy keeps it, its branch's end state is the model's
        # own (training/branch.py branch: no copy)
        sizes.sort(key=lambda size: size == current)
        samples = min(BRANCH_STEPS * max(sizes) * max(1, due[1]), self.samples // 2)
        probe = probe_samples(self.samples, samples)
        upcoming = walk.upcoming(samples + probe) if walk is not None else None
        inputs, targets = upcoming if upcoming is not None else self.draw(samples + probe, seed)
        branches = branch(self.model, self.loss_fn, self.optimizer, inputs[:samples],
                          targets[:samples], inputs[samples:], targets[samples:], sizes,
                          lambda size: self.lr_factor(size, current), self.autocast, seed,
                          keep=getattr(policy, "branch_choice", None))
        branches.from_run = upcoming is not None
        if branches.from_run and branches.kept is not None:
            walk.skip(samples)
        policy.observe_branches(branches)
        return branches

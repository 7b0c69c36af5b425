"""Start-up calibration, for a policy that asks for it (Policy.calibration_sizes): before the
first step, forward and backward passes at a few physical batch sizes on training samples give
the throughput curve and the gradient noise at the initial weights, so the policy's first batch
comes from measurements instead of its lower bound (batching/adaptive.py Adaptive.calibrate).

The noise: a gradient of the mean loss over p samples has E|g_p|^2 = |G|^2 + tr(Sigma) / p
(McCandlish et al. 2018, appendix A.1), so a least-squares line of the passes' |g_p|^2 against
1 / p has intercept |G|^2 and slope tr(Sigma); B_simple = tr(Sigma) / |G|^2. The p samples are,
marginally, drawn without replacement from the training set of D (a slice of a shuffled pool of
it), which shrinks the variance term by (D - p) / (D - 1) (the finite-population correction), so
the line is fitted against (1/p - 1/D) D / (D - 1). These
are raw gradients: an adaptive optimizer has no second moments yet to precondition them with.

Nothing of the run changes: the parameters are not stepped and their gradients are cleared, the
buffers (BatchNorm statistics) are put back, and dropout draws from a forked RNG. The passes go
through the plain model, not a DDP or torch.compile wrapper: no all-reduce, no compilation per
shape; what they leave out (communication, the optimizer step) the policy learns from real steps.
"""
import math
import statistics
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from batchtrain.training.branch import BRANCH_STEPS, Branches, branch, probe_samples

REPEATS = 3  # timed passes per size, after one untimed warm-up pass (allocations, caches),
MIN_TIMED_S = 0.02  # fewer once they add up to 20 ms: a pass that long reads steadily on its own
RETIME_FACTOR = 1.5  # a size slower per sample than this x the next smaller is timed again
BUDGET_S = 2.0  # calibrating takes at most this long,
RUN_FRACTION = 0.02  # and at most 2 % of the run it may train for (at the fastest rate measured),
MIN_BUDGET_S = 0.1  # unless that is less than this
# The branches (a policy's branch_sizes): each trains on the same BRANCH_STEPS x the largest size
# samples (at least; more while within the budget), the probe loss on others (probe_samples)
BRANCH_BUDGET_S, BRANCH_RUN_FRACTION = 3.0, 0.02
BRANCH_MIN_BUDGET_S = 0.1  # always allowed (less than the start-up's other costs), but at most
BRANCH_MIN_RUN_FRACTION = 0.1  # this share of the run: a run of 0.3 s would pay a third for it
STEP_COST = 1.5  # a training step's time over its forward+backward pass (the optimizer, the copy)
# ... of which the run fraction is whole only where a size to branch at ran 30 % more samples a
# second than the smallest in the calibration, a share in proportion below that (_lead: why)
BRANCH_FULL_LEAD = 0.3


@dataclass
class Calibration:
    """What the start-up passes measured. seconds: median seconds of one forward and backward
    pass per physical batch; noise: {"trace", "grad_sq", "noise_scale"} at the initial weights, or
    None where the line gave no positive |G|^2; cost_s and samples: what calibrating cost."""
    seconds: dict[int, float]
    noise: dict[str, float] | None
    cost_s: float
    samples: int
    branches: Branches | None = None  # training/branch.py, when the policy asked for them
    climbs: list[Branches] = field(default_factory=list)  # the rounds after, while the top won
    trained: int = 0  # the first samples of the run's first epoch, which kept branches trained
    steps: int = 0  # on, in this many optimizer steps (calibrate_policy)

    def describe(self) -> str:
        phi = f"{self.noise['noise_scale']:.0f}" if self.noise else "unknown"
        rates = ", ".join(f"{size}: {size / seconds:.0f}/s" for size, seconds in self.seconds.items())
        line = (f"calibrated in {self.cost_s:.2f} s ({self.samples} samples, not trained on): "
                f"forward+backward {rates}; noise scale at start {phi}")
        if self.branches is not None:
            branches = self.branches
            line += (f"; branched at {', '.join(map(str, sorted(branches.sizes)))} on "
                     f"{branches.samples} samples each in {branches.cost_s:.2f} s: probe loss "
                     f"decrease per s {_rates(branches)}")
            if branches.kept is not None:
                line += f"; kept the branch at {branches.kept} (its steps trained the run)"
            for climb in self.climbs:
                line += (f"; the largest won, so branched again at "
                         f"{', '.join(map(str, sorted(climb.sizes)))} in {climb.cost_s:.2f} s: "
                         f"{_rates(climb)}"
                         + (f", kept {climb.kept}" if climb.kept is not None else ""))
        return line


def _rates(branches: Branches) -> str:
    """Each size's probe loss decrease per second, for the log line."""
    return ", ".join(f"{size}: {rate:.3g}" for size, rate in sorted(branches.per_second.items()))


def calibrate(model: nn.Module, loss_fn: Callable, inputs: Tensor, targets: Tensor,
              sizes: list[int], autocast=nullcontext, repeats: int = REPEATS,
              budget_s: float = BUDGET_S, run_samples: float = math.inf,
              population: float | None = None,
              enough: Callable[[dict[int, float], dict | None], bool] | None = None,
              min_timed_s: float = MIN_TIMED_S) -> Calibration:
    """Time forward+backward at each of `sizes` (physical batches, smallest first) on slices of
    inputs/targets (a shuffled pool of training samples) and estimate the noise (module
    docstring). A size is skipped, with all larger ones, when timing it (predicted from the last
    size, in proportion to samples) would take calibrating past `budget_s` or past RUN_FRACTION of
    the run's `run_samples` at the fastest rate measured (but MIN_BUDGET_S is always allowed): a
    slow model, or a short run. population: the training samples the pool was drawn from
    (default: the pool itself), for the noise's finite-population correction. The repeats at a
    size read disjoint slices of the pool where it holds them (a pool of (repeats + 1) x size);
    they stop once the timed ones add up to min_timed_s (a slow model: one or two readings of a
    long pass are steady), and every pass's gradient, the warm-up's too, counts for the noise.
    enough(seconds, noise), asked after each size with what is measured so far: True stops
    there (a policy that knows what it needs: Adaptive.calibration_enough)."""
    started = time.perf_counter()
    parameters = [p for p in model.parameters() if p.requires_grad]
    buffers = [buffer.detach().clone() for buffer in model.buffers()]
    was_training = model.training
    model.train()
    seconds, norms = {}, []
    pool = population if population is not None else len(inputs)
    devices = [inputs.device] if inputs.is_cuda else []
    try:
        with torch.random.fork_rng(devices=devices):
            for size in sorted(set(min(size, len(inputs)) for size in sizes)):
                if seconds and _over_budget(seconds, size, time.perf_counter() - started,
                                            min(budget_s, max(MIN_BUDGET_S, RUN_FRACTION * run_samples
                                                / max(p / t for p, t in seconds.items()))),
                                            repeats, min_timed_s):
                    break
                passes = (model, loss_fn, parameters, inputs, targets, size, autocast, repeats,
                          min_timed_s, norms)
                seconds[size] = _timed(*passes)
                if _implausible(seconds, size):  # timed again: the faster reading counts
                    seconds[size] = min(seconds[size], _timed(*passes))
                if enough is not None and enough(dict(seconds), noise_from_norms(norms, pool)):
                    break
    finally:
        for parameter in parameters:
            parameter.grad = None
        for buffer, saved in zip(model.buffers(), buffers):
            buffer.copy_(saved)
        model.train(was_training)
    noise = noise_from_norms(norms, pool)
    samples = sum(size for size, _ in norms)
    return Calibration(seconds, noise, time.perf_counter() - started, samples)


def _timed(model, loss_fn, parameters, inputs, targets, size: int, autocast, repeats: int,
           min_timed_s: float, norms: list[tuple[int, float]]) -> float:
    """The median seconds of the timed passes at size (calibrate), after one untimed warm-up
    pass; every pass's (size, squared gradient norm) is appended to norms."""
    times = []
    for repeat in range(repeats + 1):
        start = (repeat * size) % max(1, len(inputs) - size + 1)  # disjoint where there is room
        elapsed, sq_norm = _pass(model, loss_fn, parameters, inputs[start:start + size],
                                 targets[start:start + size], autocast)
        norms.append((size, sq_norm))
        if repeat > 0:  # the first pass at a shape pays one-off costs: not timed
            times.append(elapsed)
            if sum(times) >= min_timed_s:
                break
    return statistics.median(times)


def _implausible(seconds: dict[int, float], size: int) -> bool:
    """Whether size's pass took over RETIME_FACTOR x the time per sample of the largest smaller
    size timed: a batch's throughput does not normally fall that steeply, but a pass that other
    work on the machine delayed does (once, on a shared 2-core machine, 64's passes ran 6x
    slower per sample than 32's; the run then kept 32 for 15 s, where 128 took 1.5 s)."""
    smaller = [timed for timed in seconds if timed < size]
    if not smaller:
        return False
    below = max(smaller)
    return seconds[size] / size > RETIME_FACTOR * seconds[below] / below


def _over_budget(seconds: dict[int, float], size: int, elapsed_s: float, budget_s: float,
                 repeats: int, min_timed_s: float = MIN_TIMED_S) -> bool:
    """Would timing `size` (its passes predicted from the largest size timed) exceed the budget?"""
    last = max(seconds)
    pass_s = seconds[last] * size / last
    needed = min_timed_s / pass_s if pass_s > 0 else math.inf  # timed passes to min_timed_s
    timed = max(1, math.ceil(needed)) if needed < repeats else repeats
    return elapsed_s + (1 + timed) * pass_s > budget_s


def _pass(model, loss_fn, parameters, inputs, targets, autocast) -> tuple[float, float]:
    """One forward and backward pass: (seconds, squared norm of the gradient). The seconds include
    the norm's reduction (reading the device ends the pass), about the elementwise work of an
    optimizer step, which the pass itself leaves out."""
    for parameter in parameters:
        parameter.grad = None
    began = time.perf_counter()
    with autocast():
        loss = loss_fn(model(inputs), targets)
    loss.backward()
    sq_norm = torch.stack([p.grad.float().pow(2).sum() for p in parameters
                           if p.grad is not None]).sum() if parameters else torch.zeros(())
    value = float(sq_norm)  # reads the device: the pass is done
    return time.perf_counter() - began, value


def noise_from_norms(norms: list[tuple[int, float]], pool: float = math.inf
                     ) -> dict[str, float] | None:
    """tr(Sigma) and |G|^2 from (batch, |g_batch|^2) pairs of batches drawn from `pool` samples: the
    least-squares line of |g|^2 against the variance factor (module docstring). None without two
    batch sizes or without a positive intercept."""
    if len({size for size, _ in norms}) < 2:
        return None
    correction = 1.0 if math.isinf(pool) or pool <= 1 else pool / (pool - 1)
    xs = [(1.0 / size - 1.0 / pool) * correction for size, _ in norms]
    ys = [value for _, value in norms]
    mean_x, mean_y = statistics.fmean(xs), statistics.fmean(ys)
    spread = sum((x - mean_x) ** 2 for x in xs)
    trace = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys)) / spread
    grad_sq = mean_y - trace * mean_x
    if not (grad_sq > 0 and trace >= 0):
        return None
    return {"trace": trace, "grad_sq": grad_sq, "noise_scale": trace / grad_sq}


def calibrate_policy(policy, model: nn.Module, loss_fn: Callable,
                     draw: Callable[[int, int], tuple[Tensor, Tensor]], samples: int,
                     autocast=nullcontext, run_samples: float = math.inf,
                     optimizer: torch.optim.Optimizer | None = None,
                     max_physical_batch: float = math.inf, keep_branch: bool = True
                     ) -> Calibration | None:
    """Calibrate a policy that asks for it (Policy.calibration_sizes) before a new run: draw(n,
    start) gives the samples and targets at positions start .. start + n of the run's first
    epoch (its order: the ones it trains on first); `samples`: how many there are;
    run_samples: how many the run will train on (epochs x samples), which bounds the cost. A
    policy whose calibration_timed is False is calibrated on its sizes without a time budget
    (its decisions read no clock: the same sizes every run). Then, with an optimizer, the
    branches a policy asks for (branch_sizes, observe_branches; the one it chooses kept,
    branch_choice, when keep_branch: they train at the optimizer's lrs, so only where the run's
    first step takes those, not under a warm-up): within their own budget
    (BRANCH_*), or not at all; a branch steps without accumulation, so only at sizes up to
    max_physical_batch (the memory ceiling). Each round trains on the first epoch's next
    samples and takes its probe loss on the ones after them; a kept branch's samples are the
    run's first (Calibration.trained: the run's first epoch goes on after them, so a run that
    keeps B's branch has taken the steps a fixed batch of B would have), and the next round's
    samples follow; while nothing is kept, each round reads new ones."""
    sizes = policy.calibration_sizes(samples)
    if not sizes:
        return None
    inputs, targets = draw(min(samples, (REPEATS + 1) * max(sizes)), 0)
    timed = getattr(policy, "calibration_timed", True)
    calibration = calibrate(model, loss_fn, inputs, targets, sizes, autocast,
                            budget_s=BUDGET_S if timed else math.inf,
                            run_samples=run_samples if timed else math.inf, population=samples,
                            enough=policy.calibration_enough)
    policy.calibrate(calibration)
    branch_sizes = [size for size in policy.branch_sizes(samples) if size <= max_physical_batch]
    plan = _branch_plan(branch_sizes, calibration.seconds, samples, run_samples)
    if optimizer is not None and plan is None and len(branch_sizes) >= 2 and calibration.seconds:
        # over budget for this run: none run, recorded as such (the calibrated size stays; the
        # branches during training are paced by their own predicted cost, batching/branched.py)
        policy.observe_branches(Branches([], math.nan, {}, {}, 0, 0.0))
    rounds, spent_s, start = [], 0.0, 0  # start: where the next round's samples begin
    while optimizer is not None and plan is not None:
        branch_sizes, branch_samples = plan
        probe = probe_samples(samples, branch_samples)
        inputs, targets = draw(branch_samples + probe, start)
        # keeping needs the run's samples in order: a branch on later ones would skip some
        keep = policy.branch_choice if keep_branch and start == calibration.trained else None
        rounds.append(branch(model, loss_fn, optimizer, inputs[:branch_samples],
                             targets[:branch_samples], inputs[branch_samples:],
                             targets[branch_samples:], sorted(branch_sizes, reverse=True),
                             autocast=autocast, keep=keep, enough=policy.branches_enough))
        policy.observe_branches(rounds[-1])
        spent_s += rounds[-1].overhead_s  # a kept branch's steps trained the run: not overhead
        if rounds[-1].kept is not None:
            calibration.trained = start = start + branch_samples
            calibration.steps += rounds[-1].kept_steps
        else:
            start += branch_samples + probe
        # the climb: the policy asks again while the largest size wins (Adaptive.branch_sizes)
        plan = _branch_plan([size for size in policy.branch_sizes(samples)
                             if size <= max_physical_batch], calibration.seconds,
                            samples - start, run_samples, spent_s)
    calibration.branches, calibration.climbs = (rounds[0], rounds[1:]) if rounds else (None, [])
    return calibration


def _branch_plan(sizes: list[int], seconds: dict[int, float], samples: int,
                 run_samples: float, spent_s: float = 0.0) -> tuple[list[int], int] | None:
    """(sizes, samples per branch) that the branch budget allows: the most samples (a multiple of
    BRANCH_STEPS x the largest size, within half the `samples` left unread) whose predicted time (each
    size's steps at its calibrated pass time, x STEP_COST) fits in min(BRANCH_BUDGET_S,
    BRANCH_RUN_FRACTION of the run at the fastest calibrated rate, but at least
    BRANCH_MIN_BUDGET_S or BRANCH_MIN_RUN_FRACTION of the run, the less; the run fraction x
    min(1, _lead / BRANCH_FULL_LEAD)), less the spent_s
    earlier rounds cost beyond their kept steps; the largest sizes dropped while even the least
    does not fit; None under two sizes or without timings."""
    if not seconds:
        return None
    run_s = run_samples / max(size / elapsed for size, elapsed in seconds.items())

    def predicted_s(branch_sizes, branch_samples):
        return _predicted_s(seconds, branch_sizes, branch_samples)

    least_s = min(BRANCH_MIN_BUDGET_S, BRANCH_MIN_RUN_FRACTION * run_s)
    sizes = list(sizes)
    while len(sizes) >= 2:
        lead = _lead(seconds, sizes)
        share = 1.0 if lead >= BRANCH_FULL_LEAD else max(0.0, lead) / BRANCH_FULL_LEAD
        budget_s = min(BRANCH_BUDGET_S, max(least_s, share * BRANCH_RUN_FRACTION * run_s)) - spent_s
        unit = BRANCH_STEPS * max(sizes)
        if unit <= samples // 2 and predicted_s(sizes, unit) <= budget_s:
            branch_samples = unit
            while (branch_samples + unit <= samples // 2
                   and predicted_s(sizes, branch_samples + unit) <= budget_s / 2):
                branch_samples += unit  # more samples, less noise, within half the budget
            return sizes, branch_samples
        sizes.pop()
    return None


def _lead(seconds: dict[int, float], sizes: list[int]) -> float:
    """How many more samples a second the fastest of `sizes` ran in the calibration than the
    smallest of them, as a fraction (0.5: 1.5 x its rate); inf where one was not timed (the
    branches are what measures it). It bounds what the branches can gain: at its coupled lr a
    larger batch rarely makes more progress per sample than a smaller one (the samples to a
    given loss grow with the batch, E = E_min (1 + B / B_noise) in McCandlish et al. 2018's
    model), so it wins by its throughput or not at all; where the curve is flat the branches
    measure a difference within their noise, at a cost a short run feels (the seed CNN on 3,000
    images: 1.1 x the rate from 32 to 64, its start's branches 10 % of its time to target)."""
    if any(size not in seconds for size in sizes):
        return math.inf
    smallest = min(sizes)
    return max(seconds[smallest] / smallest * size / seconds[size] for size in sizes) - 1.0


def _predicted_s(seconds: dict[int, float], sizes: list[int], samples: int) -> float:
    """Branches of `samples` at each of `sizes`, predicted from the calibrated pass times (a size's
    own, or the nearest timed one's rate) x STEP_COST."""
    total = 0.0
    for size in sizes:
        nearest = min(seconds, key=lambda timed: abs(timed - size))
        total += samples * seconds[nearest] / nearest * STEP_COST
    return total

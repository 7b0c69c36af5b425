"""Batch-size decisions from branches during training (Adaptive under "goodput", one process).

A branch (training/branch.py) trains a few steps at a candidate batch from the run's current
weights and is undone; the size whose branch lowered a probe loss the most per second is the
goodput (Qiao et al. 2021, Pollux) measured directly, instead of predicted from the gradient
noise scale (Merrill et al. 2025 measure the critical batch this way). Here the candidates are
the current batch, its double and (down to the policy's floor) its half, and:
- pace: branches run again once the steps trained since the last ones took 1 / BRANCH_OVERHEAD
  times their cost beyond the kept branch's steps, the last ones' or the next ones' predicted
  (predicted_overhead: each size's samples at the throughput model's rate, and the probe
  evaluations), whichever is more, so they cost at most BRANCH_OVERHEAD (5 %) of the training
  time (they get rarer as they get longer). The start's branches were paid from the start's own
  budget (training/calibrate.py): the first ones during training wait for their own predicted
  cost alone, not for the start's (which can be several times dearer: 8 steps of the start's
  largest size, the climb's rounds, and on a short run it delayed the first decision to 80 %
  of the run); each decision in a row that keeps the size
  on a significant result halves that share, down to 1 / 2^MAX_BACKOFF of it (0.6 %), and a
  move restores it: the critical batch grows fast early and then plateaus (Merrill et al.
  2025), so a size the branches keep confirming is checked less and less often, and a settled
  run pays little.
- move: to the fastest size when it beats the current one by MIN_BRANCH_GAIN (no flapping
  between sizes whose rates differ by noise); the seconds are the throughput model's for the
  branches' samples (many step times, steadier than one branch's clock).
- significance: when no branch lowered the probe loss by SIGNIFICANT_IMPROVEMENT of it, the
  branches measured noise, not progress: nothing moves, and the next ones train on twice the
  samples (the loss falls more slowly as training goes on).
"""
from collections.abc import Callable

BRANCH_STEPS = 8  # a branch trains on (at least) 8 steps of the largest size's samples
BRANCH_OVERHEAD = 0.05  # branches take at most 5 % of the time trained between them
MIN_BRANCH_GAIN = 0.1  # a size must lower the probe loss 10 % faster than the current one
SIGNIFICANT_IMPROVEMENT = 0.01  # of the probe loss, by the best branch
MAX_LENGTH = 64  # the longest branches, in units of the trainer's default (training/branch.py)
MAX_BACKOFF = 3  # kept sizes in a row make branches at most 2^3 = 8 x rarer
# The probe loss is taken on up to PROBE_SAMPLES other training samples (training/branch.py
# probe_samples: at most half a branch's), once before the branches and once after each, in
# passes without gradients that cost about EVAL_COST of a training step per sample
PROBE_SAMPLES = 2048
EVAL_COST = 1 / 3
# The next branches' cost is predicted again after this many steps even when the last
# prediction is not yet reached: one made during a stall (a loaded machine's slow steps in the
# throughput model) would otherwise hold the branches back until its inflated cost is trained
REPREDICT_EVERY = 16


class BranchDecisions:
    """The pacing, length and outcome of branch decisions; its state is plain numbers."""

    def __init__(self):
        self.trained_s = 0.0  # step time since the last branches
        self.cost_s = 0.0  # what the last branches cost
        self.length = 1  # the next branches' samples, in units of the trainer's default
        self.kept = 0  # significant decisions in a row that kept the size (the pace's back-off)
        self.predicted_s: float | None = None  # the next branches' last predicted cost (not state)
        self.since_prediction = 0  # steps asked since (not state)

    def observe(self, time_s: float) -> None:
        self.trained_s += time_s

    def due(self, predicted_s: float = 0.0) -> bool:
        """predicted_s: what the next branches would cost (predicted_overhead)."""
        cost_s = max(self.cost_s, predicted_s)
        return self.trained_s * BRANCH_OVERHEAD >= cost_s * 2 ** min(self.kept, MAX_BACKOFF)

    def due_as_predicted(self, predict: Callable[[], float]) -> bool:
        """due(predict()), asked after every step: the prediction (the throughput model's rates,
        tens of us) is made again only once the last one would be due, or REPREDICT_EVERY steps
        after it, so most steps pay a comparison."""
        self.since_prediction += 1
        if (self.predicted_s is not None and self.since_prediction < REPREDICT_EVERY
                and not self.due(self.predicted_s)):
            return False
        self.predicted_s, self.since_prediction = predict(), 0
        return self.due(self.predicted_s)

    def sizes(self, current: int, floor: int, top: int) -> list[int]:
        """The candidates: current, its double up to top, its half down to floor."""
        return sorted({current, *(size for size in (2 * current, current // 2)
                                  if floor <= size <= top)})

    def started(self, cost_s: float) -> None:
        """Branches that cost cost_s just ran: pace the next ones (their sizes are new: no
        prediction yet)."""
        self.trained_s, self.cost_s, self.predicted_s = 0.0, cost_s, None
        self.since_prediction = 0

    def first(self, branches) -> int | None:
        """The first batch from the start's branches (Adaptive.branch_sizes: the calibrated size
        and its doublings): first_choice. Their cost came out of the start's budget: the next
        ones are paced by their own predicted cost (module docstring)."""
        self.started(0.0)
        return first_choice(branches)

    def decide(self, branches, current: int, samples_per_s: Callable[[int], float]
               ) -> tuple[int, dict]:
        """The size to train at after `branches` (training/branch.py Branches), and a record."""
        chosen, rates, significant = choice(branches, current, samples_per_s)
        move = chosen != current
        reason = ("branched" if move else "branched: current is fastest" if significant
                  else f"branched: improvements under {SIGNIFICANT_IMPROVEMENT:.0%}, longer next")
        if not significant:
            self.length = min(2 * self.length, MAX_LENGTH)
        if significant:  # an insignificant result confirms nothing: no back-off
            self.kept = 0 if move else self.kept + 1
        self.started(branches.overhead_s)
        record = {"improvement_per_s": [[size, rate] for size, rate in rates.items()],
                  "branch_samples": branches.samples, "reason": reason}
        if branches.kept is not None:
            record["kept"] = branches.kept  # its branch's steps trained the run
        return chosen, record

    def state_dict(self) -> dict:
        return {"trained_s": self.trained_s, "cost_s": self.cost_s, "length": self.length,
                "kept": self.kept}

    def load_state_dict(self, state: dict) -> None:
        self.trained_s = float(state["trained_s"])
        self.cost_s = float(state["cost_s"])
        self.length = int(state["length"])
        self.kept = int(state.get("kept", 0))  # absent: a run from before the back-off
        self.predicted_s, self.since_prediction = None, 0


def predicted_overhead(sizes: list[int], current: int, length: int,
                       samples_per_s: Callable[[int], float]) -> float:
    """Seconds that branches at `sizes` (training/branch.py Brancher: BRANCH_STEPS x the largest
    x length samples each) would take beyond the current size's, whose branch the run keeps when
    the size stays: each other size's samples at samples_per_s, and the probe evaluations (one
    per size and one before, of at most half a branch's samples, at EVAL_COST of the current
    size's rate); inf where a rate is not positive."""
    samples = BRANCH_STEPS * max(sizes) * max(1, length)
    work = [(samples, samples_per_s(size)) for size in sizes if size != current]
    evaluated = (len(sizes) + 1) * min(PROBE_SAMPLES, samples // 2) * EVAL_COST
    work.append((evaluated, samples_per_s(current)))
    return sum(count / rate if rate > 0 else float("inf") for count, rate in work)


def first_choice(branches) -> int | None:
    """The start's choice (BranchDecisions.first): from the smallest size up, a larger one
    replaces the choice only when it lowered the probe loss MIN_BRANCH_GAIN faster per second
    (the branches' own clock: no step times yet), as during training; None when none improved.
    Read in that order, the choice after each branch is either that branch or an earlier one."""
    return rates_choice(branches.per_second)


def rates_choice(per_second: dict[int, float]) -> int | None:
    """first_choice over {size: probe loss decrease per second}."""
    rates = {size: rate for size, rate in per_second.items() if rate > 0}
    chosen = None
    for size in sorted(rates):
        if chosen is None or rates[size] > (1 + MIN_BRANCH_GAIN) * rates[chosen]:
            chosen = size
    return chosen


def first_enough(branches) -> bool:
    """Whether the start's branches so far settle first_choice, when they run from the largest
    size down (training/calibrate.py): the one just run is the smallest yet and lost to its next
    larger by more than MIN_BRANCH_GAIN. The rate is taken as unimodal in the batch (a throughput
    that flattens times an efficiency that falls; the climb assumes it upward), so every smaller
    size would lose too, and the costliest branches, those at the smallest sizes, are spared."""
    rates = branches.per_second
    last, measured = branches.sizes[-1], sorted(rates)
    if len(measured) < 2 or last != measured[0]:
        return False
    above = measured[1]
    return rates[above] > 0 and rates[above] > (1 + MIN_BRANCH_GAIN) * rates[last]


def choice(branches, current: int, samples_per_s: Callable[[int], float]
           ) -> tuple[int, dict[int, float], bool]:
    """The decision during training (BranchDecisions.decide) without its bookkeeping: (the size
    to train at, each size's probe loss decrease per second, whether the result is significant).
    Over branches that leave out the current size, the best one counts as a move."""
    rates = {}
    for size, gain in branches.improvement.items():
        speed = samples_per_s(size)
        seconds = branches.samples / speed if speed > 0 else branches.seconds[size]
        if gain > 0 and seconds > 0:
            rates[size] = gain / seconds
    best = max(rates, key=rates.get) if rates else current
    significant = max(branches.improvement.values(), default=0.0) > (
        SIGNIFICANT_IMPROVEMENT * abs(branches.loss_before))
    move = significant and best != current and (
        rates[best] > (1 + MIN_BRANCH_GAIN) * rates.get(current, 0.0))
    return (best if move else current), rates, significant


def reread_start(record: dict, current: int, real_step_s: float | None
                 ) -> tuple[int | None, float]:
    """The start's choice read again (Adaptive._reread_start): a branch steps without the
    trainer's per-step work (its batches, metrics, lr), so on a fast model its clock favours the
    smaller sizes, which take more steps. That work, c = real_step_s (the run's step at
    `current`) - the branch step at current, is added to each branch's seconds, c per step it
    took, and first_choice's rule picks again. record: the start's last round (Adaptive
    calibration["branched"]); (None, 0.0) where it did not choose current or c is not positive."""
    seconds, improvement = dict(record.get("seconds", [])), dict(record.get("improvement", []))
    if record.get("chosen") != current or current not in seconds or not real_step_s:
        return None, 0.0
    steps = {size: -(-record["samples"] // size) for size in seconds}
    extra = real_step_s - seconds[current] / steps[current]
    if not extra > 0:
        return None, 0.0
    return rates_choice({size: improvement[size] / (seconds[size] + extra * steps[size])
                         for size in seconds if size in improvement}), extra

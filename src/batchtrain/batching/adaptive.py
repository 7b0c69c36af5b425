"""Adaptive(rule): the logical batch from measurements taken during training.

Rules:
- "goodput" (Pollux, Qiao et al. 2021; `auto`): the size with the most goodput, throughput T(B)
  (samples/s, ThroughputModel) times statistical efficiency. In one process the efficiency is
  measured directly, by branches (training/branch.py, batching/branched.py: short runs at a few
  sizes from the current weights, Merrill et al. 2025; the chosen size's kept, the others
  undone). Under DDP, where every rank would branch on its own clock, it is predicted from the
  gradient noise scale phi instead: E(B) = (phi + B0) / (phi + B), relative to the base batch B0.
- "noise-scale": B = noise_multiplier * phi, the critical batch B_crit ~ B_noise (McCandlish).
- "norm-test": B = phi / theta^2, the smallest batch whose gradient passes the norm test
  E|g_B - G|^2 <= theta^2 |G|^2 (Byrd et al. 2012; De et al. 2017), as tr(Sigma)/B = E|g_B - G|^2.
Every answer is clamped to [min_batch, max_batch].

phi is B_simple = tr(Sigma) / |G|^2 (McCandlish et al. 2018, eq. 2.8), estimated by the trainer
from micro-batches on every MEASURE_EVERY-th step (StepStats.gradient: "noise_scale", "grad_sq",
"trace", "confidence"), on raw gradients for Adam and RMSprop too: their preconditioned ones gave
a noise scale that falls with the batch it is measured at, which asks for a smaller batch: the
freeze at the smallest batch seen (README "Batch size"); `geometry="preconditioned"` keeps it,
for comparison. While branches decide, phi is not measured (stats_every 0) unless AdaScale's lr
rule reads it (lr_scale).

Start: unless the user gave `initial`, the trainer calibrates before the first step (training/
calibrate.py): forward and backward passes at powers of two from min_batch, up to START_SPAN x
the goodput choice they give, measure the throughput curve and phi at the initial weights; that
choice and its doublings are then branched, and the fastest is the first batch and the floor of
later decisions (the critical batch grows as training goes on: Merrill et al. 2025). On the
suite the noise scale's picks cost 1.25-1.74x the best fixed size's time to target, the branched
ones 1.00-1.04x (benchmarks/critical_batch.py). The start's cost is in `calibration` and the log.

Noise decisions (batching/noise_decisions.py: a robust estimate, bounded moves, a margin) come
every `update_every`, at least MIN_STEPS_PER_DECISION steps apart.
"""
import math
import numbers

from batchtrain.batching.base import Policy, StepStats
from batchtrain.batching.branched import (BranchDecisions, choice, first_choice, first_enough,
                                          predicted_overhead, rates_choice, reread_start)
from batchtrain.batching.goodput import (calibrated_choice, candidate_sizes, doublings,
                                         goodput_choice)
from batchtrain.batching.noise_decisions import LOW_CONFIDENCE_STEP, NoiseDecisions, rule_size
from batchtrain.batching.throughput import ThroughputModel
from batchtrain.errors import ConfigError, check_batch_size
from batchtrain.durations import Duration, to_samples
from batchtrain.stats.noise import adascale_gain

RULES = ("goodput", "noise-scale", "norm-test")
GEOMETRIES = ("raw", "preconditioned")  # of the measured gradients (module docstring)
MIN_STEPS_PER_DECISION = 10  # the noise estimate and the step times need steps at each size
TRUST_FACTOR = 2  # goodput trusts the throughput line up to 2x the largest measured micro-batch
UNBOUNDED_BATCH = 1 << 20  # the upper bound when neither max_batch nor set_limit gave one
CALIBRATION_MAX_BATCH = 2048  # the largest logical batch timed at start-up,
START_SPAN = 2  # or 2 x the size those timed so far choose (larger sizes: timed by the branches)
UNTIMED_SIZES = 8  # rules without a clock calibrate min_batch .. 8 x min_batch (4 sizes)
MEASURE_EVERY = 4  # the noise is measured on every 4th step: the others run unsplit (no overhead)


class Adaptive(Policy):
    """Chooses the logical batch from branches or the gradient noise scale (module docstring).

    rule: "goodput" (default), "noise-scale" or "norm-test" (module docstring).
    min_batch, max_batch: bounds in samples; max_batch None: the memory ceiling, which the
        trainer gives with set_limit() when fit begins.
    initial: the first batch, and the base batch B0 of the efficiency; None (default): B0 is
        min_batch and the first batch comes from the start-up calibration (module docstring).
    margin, update_every, min_confidence: of the noise decisions: the size changes only when the
        rule's answer differs by more than margin; update_every: a duration between decisions,
        samples (5000) or epochs ("0.1e", the default); below min_confidence (the estimator's
        own, in [0, 1]) a decision moves the batch by LOW_CONFIDENCE_STEP at most.
    noise_multiplier: c in B = c * phi ("noise-scale"). theta: in B = phi / theta^2 ("norm-test";
        0.5 asks for a gradient error at most half the gradient's norm, B = 4 phi).
    geometry: the gradients the noise is measured on: "raw" (default) or "preconditioned" (Adam's
        and RMSprop's, divided by sqrt(v) + eps; module docstring says why raw is the default).
    Under "goodput" the throughput curve (calibrated, or a second size, double the first) is
    trusted up to TRUST_FACTOR x the largest micro-batch timed; with no step times it is flat.
    """

    wants_gradient_stats = True
    gives_lr_scale = True  # the trainer then passes noise-scale estimates in StepStats

    def __init__(self, rule: str = "goodput", min_batch: int = 32, max_batch: int | None = None,
                 initial: int | None = None, margin: float = 0.2, noise_multiplier: float = 1.0,
                 theta: float = 0.5, update_every: Duration = "0.1e", min_confidence: float = 0.5,
                 geometry: str = "raw"):
        _check_options(rule, min_batch, max_batch, initial, margin, noise_multiplier, theta,
                       update_every, min_confidence, geometry)
        self.noise_geometry = geometry
        self.rule, self.min_batch, self.max_batch = rule, int(min_batch), max_batch
        self.calibrates = initial is None  # the user's initial is kept, not measured over
        self.initial = int(initial) if initial is not None else self.min_batch
        self.noise_multiplier, self.theta, self.update_every = noise_multiplier, theta, update_every
        self.noise_decisions = NoiseDecisions(margin, min_confidence)  # estimates reset per run
        self.measure_every = MEASURE_EVERY
        self.limit: int | None = None
        self._reset()

    def _reset(self) -> None:
        """The state of a new run (fit() calls observe with batch_size 0 when it begins)."""
        self.current = self._clamp(self.initial)
        self.samples_seen = self.samples_per_epoch = self.decided_at = self.steps_since_decision = 0
        self.decisions = 0  # _decide calls: at the same steps on every rank (distributed/policy.py)
        self.grad_sq = self.trace = None  # |G|^2, tr(Sigma) of the latest estimate (or None)
        self.throughput = ThroughputModel(min_micro_batches=1)  # 3 in 4 steps run unsplit
        self.noise_decisions.reset()
        self.last_decision: dict | None = None  # for logs and plots
        self.calibration: dict | None = None  # what the start-up calibration measured and cost
        self.floor = self.min_batch  # no decision goes below it: the branched start's size
        self.branching = False  # decisions come from branches (allow_branches)
        self.branches = BranchDecisions()
        self.lr_reads_noise = self.start_reread = False  # lr_scale asked (AdaScale); _reread_start ran

    @property
    def stats_every(self) -> int:
        """Measure the noise on every measure_every-th step (MEASURE_EVERY unless set); not at
        all (0) while branches decide and no lr rule reads it (measured steps cost more)."""
        return 0 if self.branching and not self.lr_reads_noise else self.measure_every

    @stats_every.setter
    def stats_every(self, every: int) -> None:
        self.measure_every = int(every)

    def set_limit(self, max_batch: int) -> None:
        """The memory ceiling (largest physical batch): the upper bound when max_batch is None."""
        check_batch_size(max_batch)
        self.limit = int(max_batch)
        self.current = self._clamp(self.current)

    def calibration_sizes(self, samples: int) -> list[int]:
        """Physical batches of the logical doublings of min_batch to _start_top (none: initial)."""
        if not self.calibrates:
            return []
        top = self._start_top(samples)
        if not self.calibration_timed:  # the noise line only: four small sizes, every run alike
            top = min(top, UNTIMED_SIZES * self.min_batch)
        return sorted({self._physical(size) for size in doublings(self.min_batch, top)})

    def _start_top(self, samples: int) -> int:  # the start's largest batch: an epoch of 4 steps
        return max(self.min_batch, min(self.upper, CALIBRATION_MAX_BATCH, samples // 4))

    @property
    def calibration_timed(self) -> bool:  # only goodput reads the clock; the others, the noise
        return self.rule == "goodput"

    def _physical(self, batch: int) -> int:
        return math.ceil(batch / self.throughput.micro_batches(batch, self.limit))

    def calibrate(self, calibration) -> None:
        """The first batch from the start-up passes (training/calibrate.py Calibration): the most
        goodput at the initial phi (min_batch if none), or another rule's size for that phi."""
        self.throughput.calibrate(calibration.seconds)
        noise = calibration.noise
        if noise is not None:
            self.trace, self.grad_sq = noise["trace"], noise["grad_sq"]
        phi = noise["noise_scale"] if noise is not None else float(self.min_batch)
        if self.rule != "goodput":  # no clock: a run starts alike every time
            self.current = self._target(phi, self.min_batch, self.upper)[0] if noise else self.current
        elif (chosen := self._calibrated_choice(calibration.seconds, noise)) is not None:
            self.current = chosen
        rates = [[size, size / seconds] for size, seconds in calibration.seconds.items()]
        self.calibration = {"cost_s": calibration.cost_s, "samples": calibration.samples,
                            "phi": phi, "chosen": self.current, "samples_per_s": rates}
        self.last_decision = {"samples_seen": 0, "rule": self.rule, "phi": phi, "reason":
                              "calibrated", "current": self.initial, "chosen": self.current}

    def calibration_enough(self, seconds: dict[int, float], noise: dict | None) -> bool:
        """Whether the start-up passes so far suffice (training/calibrate.py): under "goodput",
        once the largest is START_SPAN x their choice (real steps time larger sizes later)."""
        chosen = self._calibrated_choice(seconds, noise) if self.rule == "goodput" else None
        return chosen is not None and max(seconds) >= START_SPAN * self._physical(chosen)

    def _calibrated_choice(self, seconds: dict[int, float], noise: dict | None) -> int | None:
        phi = noise["noise_scale"] if noise is not None else float(self.min_batch)
        sizes = candidate_sizes(self.min_batch, self.upper)
        return calibrated_choice(seconds, phi, self.initial, sizes, self._physical, self._cap)

    def allow_branches(self) -> None:
        """The trainer can branch (one process): under "goodput", decisions come from branches
        (branches_due) instead of the noise scale, which is then not measured (stats_every)."""
        self.branching = self.rule == "goodput"

    def branch_sizes(self, samples: int) -> list[int]:
        """The start's branches (training/branch.py): the calibrated choice and its doublings up
        to _start_top; again from the choice while the largest wins (the climb); or none."""
        done = (self.calibration or {}).get("branched")
        if self.rule != "goodput" or not self.calibrates or (
                done is not None and done["chosen"] != max(done["sizes"], default=0)):
            return []
        sizes = doublings(self.current, self._start_top(samples))
        return sizes if len(sizes) > 1 else []

    def observe_branches(self, branches) -> None:
        """The first batch, and the floor of later decisions, from the start's branches (first_
        choice; unchanged when none improved or none ran); later ones decide (branches_due)."""
        if self.samples_seen > 0:
            return self._decide_from_branches(branches)
        chosen = self.branches.first(branches)
        rounds = (self.calibration or {}).get("branched", {}).get("rounds", 0) + 1
        record = {"sizes": sorted(branches.sizes), "samples": branches.samples, "rounds": rounds,
                  "cost_s": branches.cost_s, "fastest": branches.fastest, "chosen": chosen,
                  "improvement": [[size, gain] for size, gain in branches.improvement.items()],
                  "seconds": [[size, seconds] for size, seconds in branches.seconds.items()]}
        if self.calibration is not None:
            self.calibration["branched"] = record
        if chosen is None:
            return
        previous, self.current = self.current, self._clamp(chosen)
        self.floor = self.current
        self.last_decision = {"samples_seen": 0, "rule": self.rule, "current": previous,
                              "chosen": self.current, "reason": "branched"}

    def branch_choice(self, branches) -> int | None:
        """The size observe_branches would train at after `branches`: the run keeps its branch."""
        if self.samples_seen == 0:
            return first_choice(branches)
        return choice(branches, self.current, self._samples_per_s)[0]

    branches_enough = staticmethod(first_enough)  # the start's: smaller sizes that would lose

    def branches_due(self) -> tuple[list[int], int] | None:
        """While branches decide: the sizes to branch at now (current, double, half down to the
        floor) and the length; None until due (branched.py) and MIN_STEPS_PER_DECISION apart."""
        if not self.branching or self.steps_since_decision < MIN_STEPS_PER_DECISION:
            return None
        top = min(self.upper, self._cap) if self._cap is not None else self.upper
        sizes, length = self.branches.sizes(self.current, self.floor, top), self.branches.length
        due = len(sizes) > 1 and self.branches.due_as_predicted(
            lambda: predicted_overhead(sizes, self.current, length, self._samples_per_s))
        return (sizes, length) if due else None

    def _reread_start(self) -> None:
        """The start read again with the run's step time, once (branched.py reread_start)."""
        self.start_reread, physical = True, self._physical(self.current)
        measured = self.throughput.sizes.get(physical)
        chosen, extra = reread_start((self.calibration or {}).get("branched") or {}, self.current,
                                     measured and measured[2] * math.ceil(self.current / physical))
        if chosen is None or chosen == self.current:
            return
        previous, self.current = self.current, max(self._clamp(chosen), self.floor)
        self.last_decision = {"samples_seen": self.samples_seen, "rule": self.rule, "chosen":
                              self.current, "current": previous, "step_overhead_s": extra,
                              "reason": "start re-read"}
        self.decided_at, self.steps_since_decision = self.samples_seen, 0

    def _decide_from_branches(self, branches) -> None:
        """The size the branches (training/branch.py Branches) show fastest (batching/branched.py)."""
        previous = self.current
        chosen, details = self.branches.decide(branches, self.current, self._samples_per_s)
        self.current = self._clamp(chosen)
        self.last_decision = {"samples_seen": self.samples_seen, "rule": self.rule,
                              "current": previous, "chosen": self.current, **details}
        self.decided_at, self.steps_since_decision = self.samples_seen, 0

    @property
    def upper(self) -> int:
        bound = self.max_batch if self.max_batch is not None else self.limit
        return max(self.min_batch, bound if bound is not None else UNBOUNDED_BATCH)

    def _clamp(self, size: float) -> int:
        return int(min(max(round(size), self.min_batch), self.upper))

    def batch_size(self) -> int:
        return self.current

    def observe(self, step: StepStats) -> None:
        if step.batch_size == 0:  # fit() begins: a new run
            self._reset()
        self.samples_seen, self.samples_per_epoch = step.samples_seen, step.samples_per_epoch
        if step.batch_size == 0:
            return
        trace, grad_sq = _finite(step.gradient.get("trace")), _finite(step.gradient.get("grad_sq"))
        if trace is not None and grad_sq is not None:
            self.trace, self.grad_sq = trace, grad_sq
        self.throughput.observe(step.batch_size, step.physical_batch, step.time_s)
        self.steps_since_decision += 1
        if self.branching:  # decisions come from the branches (branches_due)
            self.branches.observe(step.time_s)
            if not self.start_reread and self.steps_since_decision >= MIN_STEPS_PER_DECISION:
                self._reread_start()
            return
        every = to_samples(self.update_every, max(self.samples_per_epoch, 1))
        if (self.steps_since_decision >= MIN_STEPS_PER_DECISION
                and self.samples_seen - self.decided_at >= every):
            self._decide(step.gradient)

    def _decide(self, gradient: dict) -> None:
        """Apply the rule to the robust estimate (module docstring); without an estimate, retried
        at the next step."""
        self.decisions += 1
        phi = _finite(gradient.get("noise_scale"))
        confidence = _finite(gradient.get("confidence")) or 0.0  # missing: not confident
        record = {"samples_seen": self.samples_seen, "rule": self.rule, "phi": phi,
                  "confidence": confidence, "current": self.current}
        if phi is None or phi < 0:
            self.last_decision = {**record, "chosen": self.current, "reason": "no estimate"}
            return
        robust = self.noise_decisions.robust(phi)
        step = self.noise_decisions.step(confidence)
        lowest = max(self._clamp(self.current / step), self.floor)
        highest = self._clamp(self.current * step)
        target, details = self._target(robust, lowest, highest)
        move, reason = self.noise_decisions.worth_moving(self.current, target, details)
        self.current = target if move else self.current
        if move and step == LOW_CONFIDENCE_STEP:
            reason = "changed (low confidence: a small step)"
        self.last_decision = {**record, "robust_phi": robust, **details, "target": target,
                              "chosen": self.current, "reason": reason}
        self.decided_at, self.steps_since_decision = self.samples_seen, 0

    def _target(self, phi: float, lowest: int, highest: int) -> tuple[int, dict]:
        """The rule's size for noise scale phi within [lowest, highest], and what it weighed."""
        if self.rule in ("noise-scale", "norm-test"):
            size = rule_size(self.rule, phi, self.noise_multiplier, self.theta)
            return min(max(self._clamp(size), lowest), highest), {}
        if self.throughput.fit() is None and self.throughput.observed_sizes:
            return self._exploration_size(), {"exploring": True}
        candidates = [size for size in self._trusted_sizes(self._cap) if lowest <= size <= highest]
        return goodput_choice(phi, self.initial, [*candidates, self.current], self._samples_per_s)

    @property
    def _cap(self) -> int | None:
        """The largest physical batch: the memory ceiling, else max_batch."""
        return self.limit if self.limit is not None else self.max_batch

    def _samples_per_s(self, batch: int) -> float:
        return self.throughput.samples_per_s(batch, self._cap)

    def _exploration_size(self) -> int:
        """A second size to time, so the throughput line can be fitted: double, or else halve."""
        larger = self._clamp(2 * self.current)
        return larger if larger > self.current else max(self._clamp(self.current // 2), self.floor)

    def _trusted_sizes(self, cap: int | None) -> list[int]:
        """Candidates whose micro-batches are within TRUST_FACTOR of the largest one measured."""
        measured = max(self.throughput.observed_sizes, default=0)
        return [size for size in candidate_sizes(self.min_batch, self.upper)
                if measured == 0 or math.ceil(size / self.throughput.micro_batches(size, cap))
                <= TRUST_FACTOR * measured]

    def lr_scale(self, base_batch: int) -> float:
        """AdaScale's lr gain of the current batch over base_batch; sqrt before any estimate."""
        self.lr_reads_noise = True
        if self.trace is None or self.grad_sq is None or max(self.trace, 0) + max(self.grad_sq, 0) == 0:
            return math.sqrt(self.current / base_batch)
        return adascale_gain(self.trace, self.grad_sq, self.current / base_batch,
                             base_batch=base_batch)

    def state_dict(self) -> dict:
        return {"current": self.current, "samples_seen": self.samples_seen,
                "samples_per_epoch": self.samples_per_epoch, "decided_at": self.decided_at,
                "steps_since_decision": self.steps_since_decision, "grad_sq": self.grad_sq,
                "trace": self.trace, "throughput": self.throughput.state_dict(),
                **self.noise_decisions.state_dict(), "calibration": self.calibration,
                "floor": self.floor, "branching": self.branching,
                "branches": self.branches.state_dict(), "start_reread": self.start_reread}

    def load_state_dict(self, state: dict) -> None:
        """Restores a run; the memory ceiling is not state (set_limit gives this machine's)."""
        self.current = self._clamp(state["current"])
        self.samples_seen = int(state["samples_seen"])
        self.samples_per_epoch = int(state["samples_per_epoch"])
        self.decided_at = int(state["decided_at"])
        self.steps_since_decision = int(state["steps_since_decision"])
        self.grad_sq, self.trace = state["grad_sq"], state["trace"]
        self.throughput = ThroughputModel(min_micro_batches=1)
        self.throughput.load_state_dict(state["throughput"])
        self.noise_decisions.load_state_dict(state)
        self.calibration = state.get("calibration")
        self.floor = int(state.get("floor", self.min_batch))  # absent: runs before branching
        self.branching = bool(state.get("branching", False))  # absent: noise-driven decisions
        self.start_reread = bool(state.get("start_reread", True))  # absent: not read again
        self.branches = BranchDecisions()  # its state absent: a run from before branching
        self.branches.load_state_dict(state.get("branches", self.branches.state_dict()))

    def __repr__(self) -> str:
        return (f"Adaptive({self.rule!r}, min_batch={self.min_batch}, max_batch={self.max_batch}, "
                f"initial={self.initial})")


def _finite(value: object) -> float | None:
    """value as a float when it is a finite number, else None (missing, inf, nan)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    return float(value) if math.isfinite(value) else None


def _check_options(rule, min_batch, max_batch, initial, margin, noise_multiplier, theta,
                   update_every, min_confidence, geometry) -> None:
    if rule not in RULES:
        raise ConfigError(f"unknown adaptive rule {rule!r}; choose one of {', '.join(RULES)}")
    if geometry not in GEOMETRIES:
        raise ConfigError(f"unknown noise geometry {geometry!r}; choose {' or '.join(GEOMETRIES)}")
    for size in (min_batch, *(value for value in (max_batch, initial) if value is not None)):
        check_batch_size(size)
    if max_batch is not None and max_batch < min_batch:
        raise ConfigError(f"max_batch ({max_batch}) must be >= min_batch ({min_batch})")
    if not (margin >= 0 and noise_multiplier > 0 and 0 < theta and 0 <= min_confidence <= 1):
        raise ConfigError(f"need margin >= 0, noise_multiplier > 0, theta > 0 and min_confidence "
                          f"in [0, 1]; got {margin}, {noise_multiplier}, {theta}, {min_confidence}")
    to_samples(update_every, 1)  # raises ConfigError for a malformed duration

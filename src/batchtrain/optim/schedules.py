"""Learning-rate schedules keyed to samples seen, not to optimizer steps.

A schedule's factor (the multiplier of the base lr) is a pure function of a SampleClock, the
samples processed before this step: when the batch size changes mid-run (batch-size schedules,
adaptive batches) the number of steps changes and a step-keyed schedule is cut short or bent; a
sample-keyed one is not. Schedules hold no state (no state_dict): resume needs only the clock.

Spec grammar (the CLI's --lr-schedule, read by parse_schedule):

    spec      := schedule | "warmup:" DURATION [":start_factor=" X] ["+" spec]
    schedule  := "constant"
               | "cosine" [":" FINAL_FACTOR]                  cosine:0.01
               | "step:" DURATION {"," DURATION} [":gamma=" X]  step:2e,4e:gamma=0.5
               | "onecycle" {":" KEY "=" X}                   onecycle:pct_start=0.25
                 (KEY: pct_start, div_factor, final_div_factor)
    DURATION  := INTEGER ["s"]   samples: 30000 or 30000s
               | NUMBER "e"      epochs: 2e, 0.5e (times samples_per_epoch, rounded)

Options are the constructors' keyword arguments; warmup:1e alone is followed by constant.
Examples: constant, cosine, cosine:0.01, step:2e,4e, step:2e,4e:gamma=0.5, onecycle,
onecycle:pct_start=0.25, warmup:1e+cosine, warmup:5000+step:3e,4e.

Off-by-one: at one sample per step (torch's step k <-> samples_seen = k) each schedule equals its
torch counterpart exactly: Cosine = CosineAnnealingLR(T_max=total_samples), Step = MultiStepLR,
Warmup = LinearLR(total_iters=duration), OneCycle = OneCycleLR (see OneCycle). Past the end of
its span a schedule holds its final value.
"""
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from batchtrain.durations import Duration, describe_duration, parse_duration, to_samples
from batchtrain.errors import ConfigError



@dataclass(frozen=True)
class SampleClock:
    """Where a run stands, in samples: training samples processed before this step, samples per
    epoch (converts "2e" to samples) and total_samples (samples_per_epoch * epochs: the end)."""

    samples_seen: int
    samples_per_epoch: int
    total_samples: int

    def __post_init__(self) -> None:
        if self.samples_seen < 0 or self.samples_per_epoch < 1 or self.total_samples < 0:
            raise ConfigError(f"invalid {self}: samples_seen and total_samples must be >= 0 and "
                              "samples_per_epoch >= 1")


@runtime_checkable
class LRSchedule(Protocol):
    def factor(self, clock: SampleClock) -> float: ...  # multiplier of the base learning rate
    def describe(self) -> str: ...                       # e.g. "warmup 6000 samples, then cosine to 0"


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def _progress(position: float, span: float) -> float:
    """position / span clamped to [0, 1]; an empty span counts as done."""
    return 1.0 if span <= 0 else min(max(position / span, 0.0), 1.0)


def _cosine_between(start: float, end: float, progress: float) -> float:
    """Half a cosine from start (progress 0) to end (progress 1): torch's _annealing_cos."""
    return end + (start - end) * (1 + math.cos(math.pi * progress)) / 2


@dataclass(frozen=True)
class Constant:
    """Factor 1 throughout: the base learning rate, unchanged."""

    def factor(self, clock: SampleClock) -> float:
        return 1.0

    def describe(self) -> str:
        return "constant"


@dataclass(frozen=True)
class Step:
    """Multiply by gamma (> 0, default 0.1) at each milestone (Durations), as MultiStepLR: a
    milestone applies from the step whose samples_seen reaches it."""

    milestones: Sequence[Duration]
    gamma: float = 0.1

    def __post_init__(self) -> None:
        _require(not isinstance(self.milestones, str | bytes) and len(self.milestones) > 0,
                 f"Step needs a list of milestones, e.g. Step(['2e', '4e']), got {self.milestones!r}")
        object.__setattr__(self, "milestones", tuple(self.milestones))  # frozen and hashable
        for milestone in self.milestones:
            parse_duration(milestone)
        _require(self.gamma > 0 and math.isfinite(self.gamma),
                 f"gamma must be a number > 0 (0.1 divides the lr by 10), got {self.gamma}")

    def factor(self, clock: SampleClock) -> float:
        passed = sum(clock.samples_seen >= to_samples(milestone, clock.samples_per_epoch)
                     for milestone in self.milestones)
        return self.gamma ** passed

    def describe(self) -> str:
        at = ", ".join(describe_duration(milestone) for milestone in self.milestones)
        return f"step x{self.gamma:g} at {at}"


@dataclass(frozen=True)
class Cosine:
    """Cosine from 1 to final_factor over total_samples (Loshchilov & Hutter 2017, SGDR without
    restarts; torch's CosineAnnealingLR). final_factor: >= 0, default 0."""

    final_factor: float = 0.0

    def __post_init__(self) -> None:
        _require(self.final_factor >= 0 and math.isfinite(self.final_factor),
                 f"final_factor must be a number >= 0 (e.g. 0.01), got {self.final_factor}")

    def factor(self, clock: SampleClock) -> float:
        return _cosine_between(1.0, self.final_factor,
                               _progress(clock.samples_seen, clock.total_samples))

    def describe(self) -> str:
        return f"cosine to {self.final_factor:g}"


@dataclass(frozen=True)
class Warmup:
    """Linear from start_factor to 1 over duration (Goyal et al. 2017, gradual warm-up), then `then`.

    `then` sees a clock that starts at 0 at the end of the warm-up and spans the remaining
    total_samples - duration (as SequentialLR restarts its next scheduler), so warmup+cosine starts
    its decay at 1 and still ends at final_factor at the end of the run; so too Step milestones
    count from the end of the warm-up (warmup:1e+step:3e drops at epoch 4). start_factor in [0, 1].
    """

    duration: Duration
    then: LRSchedule = Constant()
    start_factor: float = 0.0

    def __post_init__(self) -> None:
        parse_duration(self.duration)
        _require(isinstance(self.then, LRSchedule),
                 f"then must be a schedule such as Cosine(), got {self.then!r}")
        _require(0 <= self.start_factor <= 1,
                 f"start_factor must be in [0, 1] (a fraction of the base lr), got {self.start_factor}")

    def factor(self, clock: SampleClock) -> float:
        warmup_samples = to_samples(self.duration, clock.samples_per_epoch)
        if clock.samples_seen < warmup_samples:
            return self.start_factor + (1 - self.start_factor) * clock.samples_seen / warmup_samples
        rest = SampleClock(clock.samples_seen - warmup_samples, clock.samples_per_epoch,
                           max(clock.total_samples - warmup_samples, 0))
        return self.then.factor(rest)

    def describe(self) -> str:
        start = f" from {self.start_factor:g}" if self.start_factor else ""
        return f"warmup {describe_duration(self.duration)}{start}, then {self.then.describe()}"


@dataclass(frozen=True)
class OneCycle:
    """One-cycle policy (Smith & Topin 2017/2018) as torch's OneCycleLR with anneal_strategy="cos",
    three_phase=False: the base learning rate is the PEAK (OneCycleLR's max_lr).

    The factor rises by half a cosine from 1/div_factor to 1 over pct_start of total_samples, then
    falls to 1/(div_factor * final_div_factor). OneCycleLR ends its phases at steps
    pct_start * total_steps - 1 and total_steps - 1; we keep those ends in samples (peak at
    samples_seen = pct_start * total_samples - 1, minimum on the last sample): one sample off a
    continuous curve, and exactly torch's factor at one sample per step.
    """

    pct_start: float = 0.3
    div_factor: float = 25.0
    final_div_factor: float = 1e4

    def __post_init__(self) -> None:
        _require(0 < self.pct_start < 1,
                 f"pct_start must be in (0, 1) (the rising fraction of the run), got {self.pct_start}")
        for name in ("div_factor", "final_div_factor"):
            value = getattr(self, name)
            _require(value > 0 and math.isfinite(value), f"{name} must be a number > 0, got {value}")

    def factor(self, clock: SampleClock) -> float:
        start = 1 / self.div_factor
        end = start / self.final_div_factor
        peak_at = self.pct_start * clock.total_samples - 1  # OneCycleLR's first phase end
        end_at = clock.total_samples - 1
        if clock.samples_seen <= peak_at:
            return _cosine_between(start, 1.0, _progress(clock.samples_seen, peak_at))
        return _cosine_between(1.0, end, _progress(clock.samples_seen - peak_at, end_at - peak_at))

    def describe(self) -> str:
        return (f"one-cycle: cosine from 1/{self.div_factor:g} up to 1 over {self.pct_start:.0%} "
                f"of the run, then down to 1/{self.div_factor * self.final_div_factor:g}")


def lr_at(schedule: LRSchedule, base_lr: float, clock: SampleClock) -> float:
    """The learning rate of the step that starts at clock: base_lr * schedule.factor(clock)."""
    return base_lr * schedule.factor(clock)


def as_lr_schedule(schedule: LRSchedule | str | None) -> LRSchedule:
    """A schedule from a schedule, a spec string (parse_schedule) or None (Constant)."""
    if schedule is None:
        return Constant()
    if isinstance(schedule, str):
        return parse_schedule(schedule)
    _require(isinstance(schedule, LRSchedule), f"lr_schedule must be a spec such as "
             f"'warmup:1e+cosine' or an LRSchedule, got {type(schedule).__name__}")
    return schedule


VALID_FORMS = ("constant, cosine, cosine:0.01, step:2e,4e, step:2e,4e:gamma=0.5, onecycle, "
               "onecycle:pct_start=0.25, warmup:1e+cosine, warmup:5000+step:3e,4e "
               "(durations: 30000 or 30000s samples, 2e or 0.5e epochs)")
# name -> (class, the argument a bare value fills, an example when it is required, options)
_GRAMMAR = {
    "constant": (Constant, None, None, ()),
    "cosine": (Cosine, "final_factor", None, ("final_factor",)),
    "step": (Step, "milestones", "step:2e,4e", ("gamma",)),
    "onecycle": (OneCycle, None, None, ("pct_start", "div_factor", "final_div_factor")),
    "warmup": (Warmup, "duration", "warmup:1e+cosine", ("start_factor",)),
}


def parse_schedule(spec: str) -> LRSchedule:
    """The schedule a --lr-schedule spec names (grammar in the module docstring)."""
    try:
        return _parse(str(spec))
    except ConfigError as error:
        raise ConfigError(f"bad learning-rate schedule {spec!r}: {error}. "
                          f"Valid forms: {VALID_FORMS}") from None


def _parse(spec: str) -> LRSchedule:
    head, plus, tail = spec.partition("+")
    name, *fields = [field.strip() for field in head.split(":")]
    name = name.lower()
    _require(name in _GRAMMAR, f"unknown schedule {name!r}; choose one of {', '.join(_GRAMMAR)}")
    _require(not plus or name == "warmup", "'+' may only follow a warm-up, as in warmup:1e+cosine")
    _require(not plus or tail.strip() != "", "nothing follows '+'; add a schedule: warmup:1e+cosine")
    cls, bare_argument, example, keys = _GRAMMAR[name]
    bare = [field for field in fields if "=" not in field]
    _require(len(bare) <= (bare_argument is not None),
             f"{name} takes {'no' if bare_argument is None else 'one'} bare value, got {bare}")
    _require(bool(bare) or example is None, f"{name} needs a value, e.g. {example}")
    arguments: dict = {}
    for field in fields:
        key, value = (part.strip() for part in field.split("=", 1)) if "=" in field else (
            bare_argument, field)
        _require(key in keys or key == bare_argument,
                 f"{name} has no option {key!r}; its options: {', '.join(keys) or 'none'}")
        arguments[key] = value.split(",") if key == "milestones" else (
            value if key == "duration" else _number(value, key))
    if name == "warmup":
        arguments["then"] = _parse(tail) if plus else Constant()
    return cls(**arguments)


def _number(text: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"{what} must be a number, got {text!r}") from None
    _require(math.isfinite(value), f"{what} must be finite, got {text!r}")
    return value

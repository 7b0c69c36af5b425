"""Scheduled batch sizes: piecewise by epoch or samples, a linear ramp, doubling up to a cap.

All of them are functions of progress (samples seen, hence epochs done), so a restored run
continues with the same sizes: the state is just the progress.
"""
from collections.abc import Sequence

from batchtrain.batching.base import Policy, StepStats
from batchtrain.errors import ConfigError, check_batch_size
from batchtrain.durations import Duration, to_samples


class Schedule(Policy):
    """Base of scheduled policies: the size is size_at(samples_seen, samples_per_epoch)."""

    def __init__(self):
        self.samples_seen = 0
        self.samples_per_epoch = 0

    def size_at(self, samples_seen: int, samples_per_epoch: int) -> int:
        raise NotImplementedError

    def batch_size(self) -> int:
        return self.size_at(self.samples_seen, self.samples_per_epoch)

    def observe(self, step: StepStats) -> None:
        self.samples_seen = step.samples_seen
        self.samples_per_epoch = step.samples_per_epoch

    def state_dict(self) -> dict:
        return {"samples_seen": self.samples_seen, "samples_per_epoch": self.samples_per_epoch}

    def load_state_dict(self, state: dict) -> None:
        self.samples_seen = int(state["samples_seen"])
        self.samples_per_epoch = int(state["samples_per_epoch"])


class Piecewise(Schedule):
    """sizes[0] until boundaries[0], sizes[1] until boundaries[1], ..., then sizes[-1].

    boundaries: durations ("2e" = after 2 epochs, 30000 = after 30,000 samples), increasing.
    Example: Piecewise([128, 256, 512], ["2e", "4e"]): 128 for epochs 0-1, 256 for 2-3, then 512.
    """

    def __init__(self, sizes: Sequence[int], boundaries: Sequence[Duration]):
        super().__init__()
        if len(sizes) != len(boundaries) + 1:
            raise ConfigError(f"a piecewise batch schedule needs one more size than boundaries, "
                              f"got {len(sizes)} sizes and {len(boundaries)} boundaries")
        for size in sizes:
            check_batch_size(size)
        self.sizes = [int(size) for size in sizes]
        self.boundaries = list(boundaries)
        units = {_in_epochs(boundary) for boundary in self.boundaries}
        if len(units) == 1:  # mixed epochs and samples are compared once the epoch is known
            self._check_increasing(1)

    def observe(self, step: StepStats) -> None:
        if step.samples_per_epoch != self.samples_per_epoch:
            self._check_increasing(step.samples_per_epoch)
        super().observe(step)

    def _check_increasing(self, samples_per_epoch: int) -> None:
        starts = [to_samples(boundary, samples_per_epoch) for boundary in self.boundaries]
        if any(later <= earlier for earlier, later in zip(starts, starts[1:])) or (
                starts and starts[0] <= 0):
            raise ConfigError(f"the switch points of a piecewise batch schedule must be positive "
                              f"and increasing, got {', '.join(map(str, self.boundaries))}; "
                              "write them in order, e.g. 128,256@2e,512@4e")

    def size_at(self, samples_seen: int, samples_per_epoch: int) -> int:
        passed = sum(samples_seen >= to_samples(boundary, samples_per_epoch)
                     for boundary in self.boundaries)
        return self.sizes[passed]

    def __repr__(self) -> str:
        return f"Piecewise({self.sizes}, {self.boundaries})"


class Ramp(Schedule):
    """Linear from `start` to `end` samples per batch over `duration` (then `end`)."""

    def __init__(self, start: int, end: int, duration: Duration):
        super().__init__()
        check_batch_size(start)
        check_batch_size(end)
        _check_positive(duration, "a ramp's duration")
        self.start, self.end, self.duration = int(start), int(end), duration

    def size_at(self, samples_seen: int, samples_per_epoch: int) -> int:
        span = max(to_samples(self.duration, samples_per_epoch), 1)
        fraction = min(samples_seen / span, 1.0)
        return max(1, round(self.start + (self.end - self.start) * fraction))

    def __repr__(self) -> str:
        return f"Ramp({self.start}, {self.end}, {self.duration!r})"


class Doubling(Schedule):
    """`start`, doubled after every `every` (default one epoch), never above `cap`.

    Smith et al. 2017, "Don't decay the learning rate, increase the batch size": growing the batch
    by a factor plays the role of decaying the learning rate by that factor.
    """

    def __init__(self, start: int, every: Duration = "1e", cap: int = 1 << 20):
        super().__init__()
        check_batch_size(start)
        check_batch_size(cap)
        _check_positive(every, "the doubling period")
        if int(cap) < int(start):
            raise ConfigError(f"the cap {cap} of a doubling batch size is below its start {start}; "
                              "give a cap >= the start, e.g. double:64,1e,1024")
        self.start, self.every, self.cap = int(start), every, int(cap)

    def size_at(self, samples_seen: int, samples_per_epoch: int) -> int:
        period = max(to_samples(self.every, samples_per_epoch), 1)
        doublings = min(samples_seen // period, 40)  # 2**40 is past any cap
        return min(self.start * 2 ** doublings, self.cap)

    def __repr__(self) -> str:
        return f"Doubling({self.start}, every={self.every!r}, cap={self.cap})"


def _in_epochs(duration: Duration) -> bool:
    return str(duration).strip().lower().endswith("e")


def _check_positive(duration: Duration, what: str) -> None:
    """A duration that must last: 0e, 0 samples or a negative one is refused."""
    if to_samples(duration, 1 << 30) <= 0:  # epochs of any size: only a zero amount gives 0
        raise ConfigError(f"{what} must be longer than zero, got {duration!r}; e.g. 1e (an epoch) "
                          "or 10000 (samples)")

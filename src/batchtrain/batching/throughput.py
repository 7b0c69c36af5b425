"""Throughput model: the samples per second a logical batch will run at, from measured step times.

One optimizer step on B samples, cut into k micro-batches, takes

    time_s(B, k) = k * alpha + beta * B

alpha: seconds per micro-batch that do not grow with its size (kernel launches, Python, and the
step's fixed costs: optimizer update, gradient statistics, spread over its micro-batches); beta:
seconds per sample. Put per micro-batch, a micro-batch of x = B / k samples (the mean; an uneven
split such as 64 + 36 is exact in this form) takes t(x) = alpha + beta * x: the line Pollux fits
(Qiao et al. 2021, T_grad = alpha + beta * m; with accumulation the step is k such passes). A
per-step cost outside the micro-batches would be a third term; folding it into alpha is exact while
k stays fixed (1 below the memory ceiling, 2 on a step that measures the noise) and
overestimates accumulated steps a little beyond it.

Nothing about the device is assumed: on a CPU throughput is nearly flat in the batch (alpha ~ 0),
on a GPU it rises steeply until the device is busy (alpha >> beta * x). Before two physical sizes
have been measured the line cannot be fitted and throughput is taken as flat (time proportional to
samples): the measured rate at the one size seen, or 1.0 sample/s (an arbitrary unit: only ratios
between sizes matter) before any measurement. `observed_sizes` tells a policy which sizes it has
measured, so it can try a new one to learn the curve.

A line cannot bend: a CPU whose throughput falls past the cache sizes, or rises then saturates,
is fitted badly by it. So where the line misses a measured size by more than LINE_TOLERANCE, a
micro-batch's time is read off the measured sizes instead:
exactly at a measured size, and between two measured sizes by interpolation in log-log (a power
law between neighbours); the line only extrapolates beyond them. Sizes can be measured by real
steps or by start-up calibration passes (`calibrated`: forward and backward alone, timed before
training; training/calibrate.py). A real step also pays the optimizer update and the noise
statistics, so calibrated times are scaled by the ratio real / calibrated measured at the sizes
that have both (1 until there is one).
"""
import math

from batchtrain.errors import ConfigError

FULL_WEIGHT_STEPS = 10  # a size's weight in the fit grows with its steps up to this many
LINE_TOLERANCE = 0.1  # the line is used while it is within 10 % of every measured size


class ThroughputModel:
    """Per-micro-batch time t(x) = alpha + beta * x, fitted online from (batch, physical, time_s).

    min_micro_batches: the fewest micro-batches the trainer cuts a logical batch into (2 when it
        collects gradient statistics, which need two micro-batches to compare).
    smoothing: weight of the past in each size's running mean of times (0.9: about the last 10
        steps at that size count, so the model follows a device that speeds up or slows down).
    """

    def __init__(self, min_micro_batches: int = 2, smoothing: float = 0.9):
        if min_micro_batches < 1 or not 0 <= smoothing < 1:
            raise ConfigError(f"min_micro_batches must be >= 1 and smoothing in [0, 1), got "
                              f"{min_micro_batches} and {smoothing}")
        self.min_micro_batches = int(min_micro_batches)
        self.smoothing = float(smoothing)
        # physical batch -> [steps used, mean micro-batch samples, mean micro-batch time_s]
        self.sizes: dict[int, list[float]] = {}
        self.warmed: set[int] = set()  # physical batches whose first (warm-up) step has passed
        self.calibrated: dict[int, float] = {}  # physical batch -> seconds of one calibration pass

    def calibrate(self, seconds: dict[int, float]) -> None:
        """The start-up passes' seconds per physical batch (forward and backward, no update)."""
        self.calibrated = {int(size): float(value) for size, value in seconds.items()
                           if size >= 1 and math.isfinite(value) and value > 0}

    def observe(self, batch: int, physical_batch: int, time_s: float) -> None:
        """Record a step of `batch` samples in micro-batches of <= `physical_batch`, in time_s."""
        if batch < 1 or physical_batch < 1 or not (math.isfinite(time_s) and time_s > 0):
            return  # fit()'s opening call (batch 0), or a trainer that does not time its steps
        if physical_batch not in self.warmed:
            # The first step at a new shape pays one-off costs (cuDNN autotuning, allocator
            # growth) that can be 100x a normal step: it would bend the line for a long time.
            self.warmed.add(physical_batch)
            return
        micro_batches = math.ceil(batch / physical_batch)
        samples, seconds = batch / micro_batches, time_s / micro_batches
        entry = self.sizes.get(physical_batch)
        if entry is None:
            self.sizes[physical_batch] = [1, samples, seconds]
            return
        entry[0] += 1
        keep = min(self.smoothing, 1 - 1 / entry[0])  # a plain mean until the average settles
        entry[1] = keep * entry[1] + (1 - keep) * samples
        entry[2] = keep * entry[2] + (1 - keep) * seconds

    @property
    def observed_sizes(self) -> list[int]:
        """Physical batches with measured times, ascending."""
        return sorted(self.sizes)

    def points(self) -> list[tuple[float, float, float]]:
        """(weight, mean micro-batch samples, seconds) of every measured size: real steps as they
        are, calibrated sizes without real steps scaled by the overhead ratio."""
        points = [(min(steps, FULL_WEIGHT_STEPS), x, y) for steps, x, y in self.sizes.values()]
        overhead = self.overhead()
        points += [(1.0, float(size), seconds * overhead) for size, seconds in
                   self.calibrated.items() if size not in self.sizes]
        return points

    def overhead(self) -> float:
        """Real step time over calibrated pass time, at the sizes measured both ways (1 before)."""
        both = [(min(self.sizes[size][0], FULL_WEIGHT_STEPS), self.sizes[size][2] / seconds)
                for size, seconds in self.calibrated.items()
                if size in self.sizes and abs(self.sizes[size][1] - size) < 0.5]
        if not both:
            return 1.0
        return sum(w * ratio for w, ratio in both) / sum(w for w, _ in both)

    def fit(self) -> tuple[float, float] | None:
        """(alpha seconds, beta seconds per sample), or None before two distinct sizes are measured.

        Weighted least squares over sizes (each size's running means, weighted by its steps up to
        FULL_WEIGHT_STEPS), so the size trained at most recently does not drown the others. Both
        coefficients are kept >= 0: a negative one is noise, and would predict infinite speed.
        """
        points = self.points()
        if len(points) < 2:
            return None
        total = sum(w for w, _, _ in points)
        mean_x = sum(w * x for w, x, _ in points) / total
        mean_y = sum(w * y for w, _, y in points) / total
        spread = sum(w * (x - mean_x) ** 2 for w, x, _ in points)
        if spread <= 1e-12 * total * mean_x ** 2:
            return None  # sizes whose mean micro-batches coincide: no slope to see
        beta = sum(w * (x - mean_x) * (y - mean_y) for w, x, y in points) / spread
        alpha = mean_y - beta * mean_x
        if beta < 0:  # time falls with size: within noise of a flat time, i.e. launch-bound
            return mean_y, 0.0
        if alpha < 0:  # a line through the origin: time proportional to samples
            return 0.0, (sum(w * x * y for w, x, y in points)
                         / sum(w * x * x for w, x, _ in points))
        return alpha, beta

    def micro_batches(self, batch: int, physical_cap: int | None = None) -> int:
        """How many micro-batches the trainer cuts `batch` into under the memory ceiling."""
        needed = 1 if physical_cap is None else math.ceil(batch / physical_cap)
        return max(1, min(max(self.min_micro_batches, needed), batch))

    def samples_per_s(self, batch: int, physical_cap: int | None = None) -> float:
        """Predicted throughput of steps of `batch` samples, micro-batches at most physical_cap."""
        micro_batches = self.micro_batches(batch, physical_cap)
        seconds = self.micro_batch_seconds(batch / micro_batches)
        if seconds is None:
            return self._flat_rate()
        time_s = micro_batches * seconds
        return batch / time_s if time_s > 0 else self._flat_rate()

    def micro_batch_seconds(self, samples: float) -> float | None:
        """Seconds of one micro-batch of `samples`: the line where it fits every measured size
        within LINE_TOLERANCE; else measured, interpolated between the measured sizes around it
        (log-log) and the line beyond them (module docstring). None before anything can be fitted."""
        fitted = self.fit()
        measured = sorted((x, y) for _, x, y in self.points())
        line = (lambda x: fitted[0] + fitted[1] * x) if fitted is not None else None
        if line is None or all(abs(line(x) - y) <= LINE_TOLERANCE * y for x, y in measured):
            return line(samples) if line is not None else None
        for x, y in measured:
            if abs(x - samples) < 0.5:
                return y
        below = [(x, y) for x, y in measured if x < samples]
        above = [(x, y) for x, y in measured if x > samples]
        if not (below and above):
            return line(samples)
        (x0, y0), (x1, y1) = below[-1], above[0]
        return y0 * (samples / x0) ** (math.log(y1 / y0) / math.log(x1 / x0))

    def _flat_rate(self) -> float:
        """Samples per second measured over all sizes together; 1.0 before any measurement."""
        weights = self.points()
        if not weights:
            return 1.0
        return sum(w * x for w, x, _ in weights) / sum(w * y for w, _, y in weights)

    def state_dict(self) -> dict:
        return {"sizes": [[size, *entry] for size, entry in sorted(self.sizes.items())],
                "warmed": sorted(self.warmed),
                "calibrated": [[size, seconds] for size, seconds in sorted(self.calibrated.items())]}

    def load_state_dict(self, state: dict) -> None:
        self.sizes = {int(size): [int(steps), float(x), float(y)]
                      for size, steps, x, y in state["sizes"]}
        self.warmed = {int(size) for size in state["warmed"]}
        self.calibrate(dict(state.get("calibrated", [])))  # absent in checkpoints before calibration

    def __repr__(self) -> str:
        fitted = self.fit()
        line = "flat" if fitted is None else f"alpha={fitted[0]:.3g}s, beta={fitted[1]:.3g}s/sample"
        return f"ThroughputModel({line}, sizes={self.observed_sizes})"

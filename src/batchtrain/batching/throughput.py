"""Throughput model: the samples per second a logical batch will run at, from measured step times.

One optimizer step on B samples, cut into k micro-batches, takes

    time_s(B, k) = k * alpha + beta * B

alpha: seconds per micro-batch that do not grow with its size (kernel launches, Python, and the
step's fixed costs: optimizer update, gradient statistics, spread over its micro-batches); beta:
seconds per sample. Put per micro-batch, a micro-batch of x = B / k samples (the mean; an uneven
split such as 64 + 36 is exact in this form) takes t(x) = alpha + beta * x: the line Pollux fits
(Qiao et al. 2021, T_grad = alpha + beta * m; with accumulation the step is k such passes). A
per-step cost outside the micro-batches would be a third term; folding it into alpha is exact while
k stays fixed (2 below the memory ceiling) and overestimates accumulated steps a little beyond it.

Nothing about the device is assumed: on a CPU throughput is nearly flat in the batch (alpha ~ 0),
on a GPU it rises steeply until the device is busy (alpha >> beta * x). Before two physical sizes
have been measured the line cannot be fitted and throughput is taken as flat (time proportional to
samples): the measured rate at the one size seen, or 1.0 sample/s (an arbitrary unit: only ratios
between sizes matter) before any measurement. `observed_sizes` tells a policy which sizes it has
measured, so it can try a new one to learn the curve.
"""
import math

from batchtrain.errors import ConfigError

FULL_WEIGHT_STEPS = 10  # a size's weight in the fit grows with its steps up to this many


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

    def fit(self) -> tuple[float, float] | None:
        """(alpha seconds, beta seconds per sample), or None before two distinct sizes are measured.

        Weighted least squares over sizes (each size's running means, weighted by its steps up to
        FULL_WEIGHT_STEPS), so the size trained at most recently does not drown the others. Both
        coefficients are kept >= 0: a negative one is noise, and would predict infinite speed.
        """
        points = [(min(steps, FULL_WEIGHT_STEPS), x, y) for steps, x, y in self.sizes.values()]
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
        fitted = self.fit()
        if fitted is None:
            return self._flat_rate()
        alpha, beta = fitted
        time_s = self.micro_batches(batch, physical_cap) * alpha + beta * batch
        return batch / time_s if time_s > 0 else self._flat_rate()

    def _flat_rate(self) -> float:
        """Samples per second measured over all sizes together; 1.0 before any measurement."""
        if not self.sizes:
            return 1.0
        weights = [(min(steps, FULL_WEIGHT_STEPS), x, y) for steps, x, y in self.sizes.values()]
        return sum(w * x for w, x, _ in weights) / sum(w * y for w, _, y in weights)

    def state_dict(self) -> dict:
        return {"sizes": [[size, *entry] for size, entry in sorted(self.sizes.items())],
                "warmed": sorted(self.warmed)}

    def load_state_dict(self, state: dict) -> None:
        self.sizes = {int(size): [int(steps), float(x), float(y)]
                      for size, steps, x, y in state["sizes"]}
        self.warmed = {int(size) for size in state["warmed"]}

    def __repr__(self) -> str:
        fitted = self.fit()
        line = "flat" if fitted is None else f"alpha={fitted[0]:.3g}s, beta={fitted[1]:.3g}s/sample"
        return f"ThroughputModel({line}, sizes={self.observed_sizes})"

"""NoiseScaleTracker: the simple noise scale B_simple smoothed over optimizer steps.

Each step gives unbiased but very noisy estimates of |G|^2 and tr(Sigma) (noise.step_estimates).
McCandlish et al. 2018, appendix A.1: average each with an exponential moving average first, then
take the ratio. The ratio of the averages is consistent; the average of per-step ratios is not
(E[X/Y] != E[X]/E[Y]), and per-step |G|^2 estimates are often near zero or negative.
"""
import math
from dataclasses import asdict, dataclass

from batchtrain.errors import ConfigError
from batchtrain.stats.noise import noise_scale, step_estimates

# The exponential moving averages kept, by state_dict key: the two estimates, and the second
# moments that measure their spread (for the estimate's standard error).
_MOMENTS = ("grad_sq", "trace", "grad_sq_sq", "trace_sq", "grad_sq_trace")


@dataclass(frozen=True)
class NoiseEstimate:
    """The smoothed gradient-noise statistics after `updates` steps.

    grad_sq: |G|^2 [squared gradient norm]; may be <= 0 when the gradient is lost in the noise.
    trace: tr(Sigma), the per-sample gradient covariance's trace [squared norm x samples].
    noise_scale: B_simple = trace / grad_sq [samples] (McCandlish et al. 2018, eq. 2.8);
        +inf when grad_sq <= 0 (every batch is below the critical batch).
    relative_error: the relative standard error of noise_scale, by the delta method from the
        spread of the per-step estimates (inf until two steps, or when grad_sq <= 0).
    confidence: 1 - relative_error, clipped to [0, 1]: 0.9 means B_simple is known to +-10 %
        (one standard error); 0 after a single update or when noise_scale is infinite.
    updates: the steps averaged so far.
    """

    grad_sq: float
    trace: float
    noise_scale: float
    relative_error: float
    confidence: float
    updates: int


class NoiseScaleTracker:
    """Bias-corrected exponential moving averages of |G|^2 and tr(Sigma), as Adam corrects its
    moments (Kingma & Ba 2015, section 3): the average after t steps is divided by 1 - decay^t,
    so early estimates are not pulled towards 0.

    decay: the averages' decay per step, in [0, 1); default 0.95 averages over about
        (1 + decay) / (1 - decay) = 39 steps.
    """

    def __init__(self, decay: float = 0.95):
        if not 0.0 <= decay < 1.0:
            raise ConfigError(f"decay must be in [0, 1), got {decay}")
        self.decay = float(decay)
        self.reset()

    def reset(self) -> None:
        """Forget every step seen."""
        self.updates = 0
        self.moments = dict.fromkeys(_MOMENTS, 0.0)

    def update(self, micro_sizes: list[int], micro_sq_norms: list[float],
               batch_sq_norm: float) -> bool:
        """Fold in one step's micro-batch statistics (MicroBatchGradients.finish's dict).

        Returns False, and changes nothing, when the step's estimates are not finite (a step
        with NaN or inf gradients, which the trainer skips too).
        """
        grad_sq, trace = step_estimates(micro_sizes, micro_sq_norms, batch_sq_norm)
        if not (math.isfinite(grad_sq) and math.isfinite(trace)):
            return False
        observed = {"grad_sq": grad_sq, "trace": trace, "grad_sq_sq": grad_sq * grad_sq,
                    "trace_sq": trace * trace, "grad_sq_trace": grad_sq * trace}
        for key, value in observed.items():
            self.moments[key] = self.decay * self.moments[key] + (1.0 - self.decay) * value
        self.updates += 1
        return True

    def estimate(self) -> NoiseEstimate | None:
        """The current estimate; None before the first update."""
        if self.updates == 0:
            return None
        correction = 1.0 - self.decay ** self.updates
        mean = {key: value / correction for key, value in self.moments.items()}
        grad_sq, trace = mean["grad_sq"], mean["trace"]
        scale = noise_scale(trace, grad_sq)
        error = _ratio_relative_error(mean, _effective_count(self.decay, self.updates), scale)
        return NoiseEstimate(grad_sq=grad_sq, trace=trace, noise_scale=scale,
                             relative_error=error, confidence=max(0.0, 1.0 - min(error, 1.0)),
                             updates=self.updates)

    def state_dict(self) -> dict:
        """The decay, the step count and the raw (uncorrected) averages: JSON-safe numbers."""
        return {"decay": self.decay, "updates": self.updates, **self.moments}

    def load_state_dict(self, state: dict) -> None:
        self.decay = float(state["decay"])
        self.updates = int(state["updates"])
        self.moments = {key: float(state[key]) for key in _MOMENTS}

    def __repr__(self) -> str:
        return f"NoiseScaleTracker(decay={self.decay})"


def _effective_count(decay: float, updates: int) -> float:
    """Kish's effective sample size (sum w)^2 / sum w^2 of the weights decay^(t-j), j = 1..t.

    1 after one update, tending to (1 + decay) / (1 - decay) as updates grow.
    """
    if decay == 0.0:
        return 1.0
    total = (1.0 - decay ** updates) / (1.0 - decay)
    total_sq = (1.0 - decay ** (2 * updates)) / (1.0 - decay ** 2)
    return total * total / total_sq


def _ratio_relative_error(mean: dict, effective_count: float, ratio: float) -> float:
    """Relative standard error of ratio = trace / grad_sq from the averaged moments.

    Delta method: var(ratio) ~ (var_t + ratio^2 var_g - 2 ratio cov_tg) / grad_sq^2, with each
    (co)variance of an average of n_eff per-step estimates = weighted spread / (n_eff - 1)
    (the unbiased weighted variance divided by n_eff). Steps are treated as independent: a
    gradient that drifts during training widens the spread, so the error errs on the large side.
    """
    grad_sq = mean["grad_sq"]
    if effective_count <= 1.0 or grad_sq <= 0.0 or math.isinf(ratio):
        return math.inf
    var_g = mean["grad_sq_sq"] - grad_sq ** 2
    var_t = mean["trace_sq"] - mean["trace"] ** 2
    cov = mean["grad_sq_trace"] - grad_sq * mean["trace"]
    ratio_var = (var_t + ratio ** 2 * var_g - 2.0 * ratio * cov) / grad_sq ** 2
    standard_error = math.sqrt(max(ratio_var, 0.0) / (effective_count - 1.0))
    if ratio == 0.0:
        return 0.0 if standard_error == 0.0 else math.inf
    return standard_error / ratio


def noise_estimate(tracker: "NoiseScaleTracker | None") -> dict:
    """The tracker's current estimate as a dict (stats/tracker.py NoiseEstimate); empty when
    there is none yet, or no tracker."""
    estimate = tracker.estimate() if tracker is not None else None
    return asdict(estimate) if estimate is not None else {}

"""Gradient-noise estimators: pure functions of squared gradient norms measured at two batch sizes.

Notation (units in brackets):
  G          the true gradient, the mean of the per-sample gradients over the data distribution.
  Sigma      the per-sample gradient covariance; tr(Sigma) [squared gradient norm x samples].
  G_b        the mean gradient of a batch of b [samples] drawn i.i.d.; |G_b|^2 [squared norm].
  B_simple   tr(Sigma) / |G|^2 [samples]: the simple noise scale of McCandlish et al. 2018,
             "An Empirical Model of Large-Batch Training", eq. 2.8, which predicts the critical
             batch size.

Everything rests on one identity (McCandlish et al. 2018, appendix A.1):

    E|G_b|^2 = |G|^2 + tr(Sigma) / b                                                  (1)

which holds when a batch's samples are independent draws (sampling with replacement). Batches cut
from a shuffled epoch are drawn without replacement from N samples; then (1) holds with
tr(Sigma) N/(N-1) in place of tr(Sigma) and |G|^2 - tr(Sigma)/(N-1) in place of |G|^2, so the
estimated B_simple reads high by a factor of about 1 + B_simple/N: negligible unless the noise
scale approaches the dataset size.

The estimates are noisy and can be negative; average them over steps (tracker.py) before taking
a ratio: the ratio of means is consistent, the mean of per-step ratios is biased.
"""
import math

from batchtrain.errors import ConfigError


def grad_sq_estimate(small_batch: float, small_sq: float, big_batch: float, big_sq: float) -> float:
    """Unbiased estimate of |G|^2 [squared gradient norm] from |G_b|^2 and |G_B|^2, b < B [samples].

    McCandlish et al. 2018, appendix A.1: |G|^2 ~ (B |G_B|^2 - b |G_b|^2) / (B - b).
    Solving (1) at b and B for |G|^2; it may be negative when the gradient is lost in the noise.
    """
    _check_sizes(small_batch, big_batch)
    return (big_batch * big_sq - small_batch * small_sq) / (big_batch - small_batch)


def trace_estimate(small_batch: float, small_sq: float, big_batch: float, big_sq: float) -> float:
    """Unbiased estimate of tr(Sigma) [squared gradient norm x samples] from |G_b|^2 and |G_B|^2.

    McCandlish et al. 2018, appendix A.1: tr(Sigma) ~ (|G_b|^2 - |G_B|^2) / (1/b - 1/B).
    """
    _check_sizes(small_batch, big_batch)
    return (small_sq - big_sq) / (1.0 / small_batch - 1.0 / big_batch)


def step_estimates(micro_sizes: list[int], micro_sq_norms: list[float],
                   batch_sq_norm: float) -> tuple[float, float]:
    """(|G|^2, tr(Sigma)) estimated from one optimizer step's micro-batches; both unbiased.

    micro_sizes: b_1..b_k [samples], k >= 2, any sizes; B = sum(b_i) is the logical batch.
    micro_sq_norms: |g_i|^2, the squared norm of micro-batch i's mean-loss gradient.
    batch_sq_norm: |G_B|^2, the squared norm of the logical batch's mean gradient
        G_B = sum_i (b_i / B) g_i (what the trainer's weighted accumulation leaves in .grad).

    Unequal sizes. For weights w_i summing to 1, (1) gives
        E[sum_i w_i |g_i|^2] = |G|^2 + tr(Sigma) sum_i w_i / b_i,
    so sum_i w_i |g_i|^2 is an unbiased "small batch" norm at the effective size
    b_eff = 1 / sum_i (w_i / b_i). We take w_i = b_i / B, which gives b_eff = B / k (the mean
    micro-batch size; w_i = 1/k would give the harmonic mean of the b_i, equally unbiased).
    With b = B/k the two-size formulas above simplify, since sum_i w_i g_i = G_B, to
        tr(Sigma) ~ sum_i b_i |g_i - G_B|^2 / (k - 1)     (the ANOVA between-group estimator)
        |G|^2     ~ |G_B|^2 - tr(Sigma) / B
    and the trace estimate is a weighted sum of squares: never negative, unlike the equal-weight
    choice. Check: E[sum_i b_i |g_i|^2 - B |G_B|^2] = (B|G|^2 + k tr) - (B|G|^2 + tr) = (k-1) tr.
    """
    if len(micro_sizes) != len(micro_sq_norms):
        raise ConfigError(f"got {len(micro_sizes)} micro-batch sizes but {len(micro_sq_norms)} "
                          "squared norms; pass one norm per micro-batch")
    if len(micro_sizes) < 2:
        raise ConfigError(f"a noise estimate needs at least 2 micro-batches per step, got "
                          f"{len(micro_sizes)}; split the batch with split_for_stats()")
    if min(micro_sizes) < 1:
        raise ConfigError(f"micro-batch sizes must be >= 1 sample, got {list(micro_sizes)}")
    batch_size = float(sum(micro_sizes))
    weighted_sq = sum(size * sq for size, sq in zip(micro_sizes, micro_sq_norms)) / batch_size
    effective_small = batch_size / len(micro_sizes)
    trace = trace_estimate(effective_small, weighted_sq, batch_size, batch_sq_norm)
    grad_sq = grad_sq_estimate(effective_small, weighted_sq, batch_size, batch_sq_norm)
    return grad_sq, trace


def noise_scale(trace: float, grad_sq: float) -> float:
    """B_simple = tr(Sigma) / |G|^2 [samples] (McCandlish et al. 2018, eq. 2.8).

    +inf when grad_sq <= 0: the true gradient is indistinguishable from the noise, so every batch
    is below the critical batch (a policy should cap it at its largest batch).
    """
    if grad_sq <= 0.0:
        return math.inf
    return max(trace, 0.0) / grad_sq


def norm_test_batch(noise_scale: float, theta: float) -> float:
    """The smallest batch [samples] that passes the norm test, B_simple / theta^2.

    Norm test (Byrd et al. 2012, "Sample size selection in optimization methods for machine
    learning", section 3; De et al. 2017, "Automated inference with adaptive batches"):
        tr(Sigma) / B <= theta^2 |G|^2   <=>   B >= B_simple / theta^2.
    theta: the tolerated ratio of the batch gradient's noise to the gradient's norm, > 0
    (theta = 1: noise as large as the signal; smaller theta asks for larger batches).
    """
    if not theta > 0.0:
        raise ConfigError(f"theta must be > 0, got {theta}")
    return noise_scale / theta ** 2


def adascale_gain(trace: float, grad_sq: float, scale: float, *, base_batch: float) -> float:
    """AdaScale's gain ratio r in [1, scale] (Johnson et al. 2020, "AdaScale SGD: A User-Friendly
    Algorithm for Distributed Training", section 3).

    r = (var + sqr) / (var / S + sqr), with
      var = tr(Sigma) / base_batch: the variance E|g - G|^2 of a gradient g over base_batch
            samples, i.e. AdaScale's sigma^2 at the batch the learning rate was tuned for
            (NOT the per-sample trace the tracker reports: that is why base_batch is required);
      sqr = |G|^2;
      S   = scale = (batch used) / base_batch, > 0 (below 1 the gain is below 1 too).
    trace: per-sample tr(Sigma) [squared norm x samples]; grad_sq: |G|^2 [squared norm];
    base_batch [samples]. Negative estimates are clipped to 0 (our choice, so r stays between 1
    and scale): r = scale when grad_sq <= 0 (pure noise), r = 1 when there is no noise or nothing
    was measured.
    """
    if not scale > 0.0:
        raise ConfigError(f"scale must be > 0 (batch / base_batch), got {scale}")
    if not base_batch > 0:
        raise ConfigError(f"base_batch must be > 0 samples, got {base_batch}")
    var = max(trace, 0.0) / base_batch
    sqr = max(grad_sq, 0.0)
    if var + sqr == 0.0:
        return 1.0
    return (var + sqr) / (var / scale + sqr)


def _check_sizes(small_batch: float, big_batch: float) -> None:
    if not 0 < small_batch < big_batch:
        raise ConfigError(f"need 0 < small_batch < big_batch, got {small_batch} and {big_batch}; "
                          "the two batch sizes must differ")

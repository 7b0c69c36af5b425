"""The estimators of noise.py: exact algebra, unbiasedness against analytic truth, known values."""
import math

import pytest
import torch

from batchtrain.errors import ConfigError
from batchtrain.stats import (adascale_gain, grad_sq_estimate, noise_scale, norm_test_batch,
                              step_estimates, trace_estimate)


def test_analytic_truth_matches_monte_carlo(regression):
    """The closed-form |G|^2 and tr(Sigma) of conftest.py, checked by brute force (guards the
    derivation every other ground-truth test relies on)."""
    gradients = regression.per_sample_gradients((400_000,), torch.Generator().manual_seed(0))
    mean = gradients.mean(dim=0)
    trace = (gradients - mean).square().sum(dim=1).mean()
    assert mean.square().sum().item() == pytest.approx(regression.grad_sq, rel=0.02)
    assert trace.item() == pytest.approx(regression.trace, rel=0.01)


def test_two_size_estimators_invert_the_expectations():
    """Fed the exact expectations E|G_b|^2 = |G|^2 + tr/b, both estimators return |G|^2 and tr."""
    grad_sq, trace = 2.5, 40.0
    small_sq, big_sq = grad_sq + trace / 8, grad_sq + trace / 32
    assert grad_sq_estimate(8, small_sq, 32, big_sq) == pytest.approx(grad_sq)
    assert trace_estimate(8, small_sq, 32, big_sq) == pytest.approx(trace)


@pytest.mark.parametrize("sizes", [[8, 8, 8, 8], [20, 20, 20, 4], [5, 27, 32], [1, 63]])
def test_step_estimates_invert_the_expectations(sizes):
    """Unequal sizes too: with |g_i|^2 = |G|^2 + tr/b_i and |G_B|^2 = |G|^2 + tr/B exactly."""
    grad_sq, trace, batch = 0.7, 12.0, sum(sizes)
    micro_sq = [grad_sq + trace / size for size in sizes]
    assert step_estimates(sizes, micro_sq, grad_sq + trace / batch) == pytest.approx((grad_sq, trace))


def test_step_trace_is_the_between_group_sum_of_squares():
    """tr ~ sum_i b_i |g_i - G_B|^2 / (k - 1) and |G|^2 ~ |G_B|^2 - tr / B (noise.py's derivation),
    on random vectors; hence the trace estimate is never negative."""
    generator = torch.Generator().manual_seed(1)
    sizes = [7, 7, 7, 3]
    micro = torch.randn(len(sizes), 5, generator=generator, dtype=torch.float64)
    weights = torch.tensor(sizes, dtype=torch.float64) / sum(sizes)
    batch_mean = weights @ micro
    grad_sq, trace = step_estimates(sizes, micro.square().sum(1).tolist(), batch_mean.square().sum().item())
    between = (torch.tensor(sizes) * (micro - batch_mean).square().sum(1)).sum().item() / (len(sizes) - 1)
    assert trace == pytest.approx(between)
    assert grad_sq == pytest.approx(batch_mean.square().sum().item() - between / sum(sizes))
    assert trace >= 0


# (micro-batch sizes of one step): equal splits at (b, B) = (8, 32), (16, 64), (32, 256), and
# unequal ones, including a short last micro-batch as the trainer's tensor.split leaves it.
SPLITS = [[8] * 4, [16] * 4, [32] * 8, [20, 20, 20, 4], [5, 27, 32], [48, 16]]


@pytest.mark.parametrize("sizes", SPLITS, ids=lambda sizes: "-".join(map(str, sizes)))
def test_step_estimates_are_unbiased(regression, micro_batch_norms, sizes):
    """Averaged over many steps of fresh Gaussian samples, both estimates equal the analytic truth
    (within 4 standard errors of the average), whatever the micro-batch sizes; so they agree with
    each other across (b, B)."""
    steps = 3000
    per_sample = regression.per_sample_gradients((steps, sum(sizes)), torch.Generator().manual_seed(2))
    micro_sq, batch_sq = micro_batch_norms(per_sample, sizes)
    estimates = torch.tensor([step_estimates(sizes, m.tolist(), b.item())
                              for m, b in zip(micro_sq, batch_sq)])
    means, standard_errors = estimates.mean(0), estimates.std(0) / steps ** 0.5
    truth = torch.tensor([regression.grad_sq, regression.trace], dtype=torch.float64)
    assert torch.all((means - truth).abs() < 4 * standard_errors), (means, truth, standard_errors)
    assert torch.all(standard_errors < 0.03 * truth)  # the test is sharp enough to see a bias


def test_ignoring_unequal_sizes_is_biased(regression, micro_batch_norms):
    """The test above has the power to catch the natural mistake: averaging |g_i|^2 with equal
    weights as if every micro-batch held B/k samples overestimates tr(Sigma) by ~1.8x here."""
    sizes, steps = [20, 20, 20, 4], 3000
    per_sample = regression.per_sample_gradients((steps, sum(sizes)), torch.Generator().manual_seed(2))
    micro_sq, batch_sq = micro_batch_norms(per_sample, sizes)
    naive = trace_estimate(sum(sizes) / len(sizes), micro_sq.mean(1), sum(sizes), batch_sq)
    assert naive.mean().item() > 1.5 * regression.trace


def test_ratio_of_means_not_mean_of_ratios(regression, micro_batch_norms):
    """Why the tracker averages before dividing: at B close to B_simple the per-step |G|^2
    estimate is noisy, sometimes <= 0, and the mean of the per-step ratios (2x here) is far from
    B_simple while the ratio of the means is right."""
    sizes, steps = [8, 8, 8, 8], 3000
    per_sample = regression.per_sample_gradients((steps, sum(sizes)), torch.Generator().manual_seed(3))
    micro_sq, batch_sq = micro_batch_norms(per_sample, sizes)
    estimates = torch.tensor([step_estimates(sizes, m.tolist(), b.item())
                              for m, b in zip(micro_sq, batch_sq)])
    grad_sq, trace = estimates[:, 0], estimates[:, 1]
    assert (grad_sq <= 0).any()
    assert noise_scale(trace.mean().item(), grad_sq.mean().item()) == pytest.approx(
        regression.noise_scale, rel=0.1)
    positive = grad_sq > 0
    mean_of_ratios = (trace[positive] / grad_sq[positive]).mean().item()
    assert abs(mean_of_ratios / regression.noise_scale - 1) > 0.5


def test_noise_scale_values():
    assert noise_scale(30.0, 1.5) == 20.0
    assert noise_scale(0.0, 2.0) == 0.0
    assert noise_scale(5.0, 0.0) == math.inf
    assert noise_scale(5.0, -1.0) == math.inf


def test_norm_test_batch():
    """B >= B_simple / theta^2: tr/B <= theta^2 |G|^2 holds with equality at the returned B."""
    trace, grad_sq, theta = 50.0, 0.5, 0.5
    batch = norm_test_batch(noise_scale(trace, grad_sq), theta)
    assert batch == 400.0
    assert trace / batch == pytest.approx(theta ** 2 * grad_sq)
    assert norm_test_batch(math.inf, 1.0) == math.inf
    with pytest.raises(ConfigError, match="theta must be > 0"):
        norm_test_batch(10.0, 0.0)


def test_adascale_gain():
    """r = (var + sqr) / (var / S + sqr) with var = tr / base_batch (Johnson et al. 2020)."""
    # tr = 64 per sample at base batch 16 -> var 4; |G|^2 = 1; S = 4: (4 + 1) / (1 + 1).
    assert adascale_gain(64.0, 1.0, 4.0, base_batch=16) == pytest.approx(2.5)
    assert adascale_gain(0.0, 1.0, 8.0, base_batch=16) == 1.0   # no noise: no gain
    assert adascale_gain(64.0, 0.0, 8.0, base_batch=16) == 8.0  # pure noise: linear scaling
    assert adascale_gain(64.0, -0.3, 8.0, base_batch=16) == 8.0  # negative estimate clipped
    assert adascale_gain(64.0, 1.0, 1.0, base_batch=16) == 1.0
    assert adascale_gain(0.0, 0.0, 4.0, base_batch=16) == 1.0
    assert adascale_gain(64.0, 0.0, 0.5, base_batch=16) == 0.5  # a smaller batch: a smaller lr
    with pytest.raises(ConfigError, match="scale must be > 0"):
        adascale_gain(1.0, 1.0, 0.0, base_batch=16)


@pytest.mark.parametrize("call, message", [
    (lambda: step_estimates([32], [1.0], 1.0), "at least 2 micro-batches"),
    (lambda: step_estimates([16, 16], [1.0], 1.0), "one norm per micro-batch"),
    (lambda: step_estimates([16, 0], [1.0, 1.0], 1.0), ">= 1 sample"),
    (lambda: trace_estimate(32, 1.0, 32, 1.0), "must differ"),
    (lambda: grad_sq_estimate(64, 1.0, 32, 1.0), "small_batch < big_batch"),
])
def test_bad_input_names_the_fix(call, message):
    with pytest.raises(ConfigError, match=message):
        call()

"""NoiseScaleTracker driven directly with synthetic step statistics."""
import json
import math

import pytest
import torch

from batchtrain.errors import ConfigError
from batchtrain.stats import NoiseScaleTracker, step_estimates

SIZES = [16, 16, 16, 16]


def regression_steps(regression, micro_batch_norms, steps: int, seed: int, sizes=SIZES):
    """`steps` finish()-style dicts from fresh samples of the linear-regression problem."""
    per_sample = regression.per_sample_gradients((steps, sum(sizes)), torch.Generator().manual_seed(seed))
    micro_sq, batch_sq = micro_batch_norms(per_sample, sizes)
    return [{"micro_sizes": sizes, "micro_sq_norms": m.tolist(), "batch_sq_norm": b.item()}
            for m, b in zip(micro_sq, batch_sq)]


def test_no_estimate_before_the_first_update():
    assert NoiseScaleTracker().estimate() is None


def test_first_update_is_bias_corrected():
    """After one step the average is that step's estimate, not (1 - decay) times it (Adam's
    correction), and there is no spread yet to trust it by."""
    step = {"micro_sizes": [8, 8, 8, 2], "micro_sq_norms": [3.0, 2.5, 4.0, 9.0], "batch_sq_norm": 1.5}
    tracker = NoiseScaleTracker(decay=0.9)
    tracker.update(**step)
    grad_sq, trace = step_estimates(**step)
    estimate = tracker.estimate()
    assert (estimate.grad_sq, estimate.trace) == pytest.approx((grad_sq, trace))
    assert estimate.noise_scale == pytest.approx(trace / grad_sq)
    assert estimate.confidence == 0.0 and estimate.relative_error == math.inf
    assert estimate.updates == 1


def test_identical_steps_give_full_confidence():
    tracker = NoiseScaleTracker()
    for _ in range(5):
        tracker.update([10, 10], [1.3, 1.1], 1.0)
    estimate = tracker.estimate()
    assert estimate.noise_scale == pytest.approx(estimate.trace / estimate.grad_sq)
    assert estimate.relative_error == pytest.approx(0.0, abs=1e-6)
    assert estimate.confidence == pytest.approx(1.0)


def test_gradient_lost_in_noise_gives_infinite_scale():
    """|G|^2 estimate <= 0 (micro-batch norms barely above the batch norm's share): +inf, and no
    confidence in an infinite value."""
    tracker = NoiseScaleTracker()
    for micro_sq in ([2.0, 2.2], [2.1, 1.9], [2.0, 2.0]):
        tracker.update([8, 8], micro_sq, 1.0)
    estimate = tracker.estimate()
    assert estimate.grad_sq < 0 < estimate.trace
    assert estimate.noise_scale == math.inf
    assert estimate.confidence == 0.0


def test_non_finite_step_is_skipped():
    tracker = NoiseScaleTracker()
    tracker.update([8, 8], [2.0, 3.0], 1.0)
    before = tracker.state_dict()
    assert tracker.update([8, 8], [math.nan, 3.0], 1.0) is False
    assert tracker.update([8, 8], [2.0, 3.0], math.inf) is False
    assert tracker.state_dict() == before


def test_relative_error_is_calibrated(regression, micro_batch_norms):
    """Across independent runs, the spread of noise_scale around the truth matches the reported
    relative_error (ratio within [0.6, 1.5]; 30 runs estimate a spread to about +-13 %), and the
    estimate is unbiased to within that spread. decay 0.95 over 150 steps averages about 39
    steps, not 150: an error computed from the step count would read 2x too small and fail."""
    errors, reported = [], []
    for seed in range(30):
        tracker = NoiseScaleTracker(decay=0.95)
        for step in regression_steps(regression, micro_batch_norms, steps=150, seed=100 + seed):
            tracker.update(**step)
        estimate = tracker.estimate()
        errors.append(estimate.noise_scale / regression.noise_scale - 1)
        reported.append(estimate.relative_error)
    errors = torch.tensor(errors)
    spread = errors.square().mean().sqrt().item()
    mean_reported = sum(reported) / len(reported)
    assert 0.6 < spread / mean_reported < 1.5, (spread, mean_reported)
    assert abs(errors.mean().item()) < 3 * spread / len(errors) ** 0.5 + 0.02


def test_state_dict_round_trip_continues_identically(regression, micro_batch_norms):
    steps = regression_steps(regression, micro_batch_norms, steps=40, seed=7)
    original = NoiseScaleTracker(decay=0.9)
    for step in steps[:20]:
        original.update(**step)
    saved = json.loads(json.dumps(original.state_dict(), allow_nan=False))
    restored = NoiseScaleTracker()  # a different decay: the state's wins
    restored.load_state_dict(saved)
    assert restored.estimate() == original.estimate()
    for step in steps[20:]:
        original.update(**step)
        restored.update(**step)
        assert restored.estimate() == original.estimate()


def test_reset_forgets():
    tracker = NoiseScaleTracker()
    tracker.update([8, 8], [2.0, 3.0], 1.0)
    tracker.reset()
    assert tracker.estimate() is None and tracker.updates == 0


@pytest.mark.parametrize("decay", [-0.1, 1.0, 1.5])
def test_bad_decay_names_the_range(decay):
    with pytest.raises(ConfigError, match=r"decay must be in \[0, 1\)"):
        NoiseScaleTracker(decay=decay)

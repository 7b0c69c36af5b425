"""Adaptive batch sizes: goodput against analytic optima, rules, hysteresis, gating, throughput."""
import json
import math

import numpy as np
import pytest

from batchtrain.batching import adaptive, noise_decisions
from batchtrain.batching.adaptive import Adaptive
from batchtrain.batching.goodput import candidate_sizes, goodput_choice, statistical_efficiency
from batchtrain.stats import adascale_gain
from batchtrain.batching.base import BatchSizePolicy, StepStats
from batchtrain.batching.throughput import ThroughputModel
from batchtrain.errors import ConfigError

EPOCH = 1_000_000  # samples per epoch: decisions are spaced by MIN_STEPS_PER_DECISION steps
CAP = 512  # memory ceiling (largest physical batch) in the simulated runs
GPU = (0.05, 0.001)  # (alpha s per micro-batch, beta s per sample): T rises until B ~ 100
CPU = (0.0, 1 / 2000)  # time proportional to samples: flat throughput


def gradient_stats(phi: float, confidence: float = 1.0) -> dict:
    return {"noise_scale": phi, "grad_sq": 1.0, "trace": phi, "confidence": confidence}


def drive(policy: Adaptive, phis, confidence: float = 1.0, timing=GPU,
          seen: int | None = None) -> list[int]:
    """One step per phi, as the trainer drives the policy: split in two micro-batches on the
    measured steps (every stats_every-th), timed by `timing`; samples are counted on from `seen`
    (default: where the policy stands)."""
    alpha, beta = timing
    seen = policy.samples_seen if seen is None else seen
    sizes = []
    for step, phi in enumerate(phis):
        size = policy.batch_size()
        measured = policy.stats_every and step % policy.stats_every == 0  # 0: none measured
        micro_batches = max(2 if measured else 1, math.ceil(size / CAP))
        seen += size
        policy.observe(StepStats(seen, seen // EPOCH, EPOCH, size,
                                 gradient=gradient_stats(phi, confidence),
                                 physical_batch=math.ceil(size / micro_batches),
                                 time_s=micro_batches * alpha + beta * size))
        sizes.append(size)
    return sizes


def changes(sizes: list[int]) -> int:
    return sum(a != b for a, b in zip(sizes, sizes[1:]))


def noisy(center: float, steps: int, spread: float, seed: int = 0) -> np.ndarray:
    return center * (1 + spread * np.random.default_rng(seed).uniform(-1, 1, steps))


# -- goodput, analytically: T(B) = B / (a + b B) makes goodput ~ B / ((a + b B)(phi + B)), whose
# maximum is at B* = sqrt(a phi / b); between candidates c1 < c2 it prefers c2 iff
# phi > b c1 c2 / a.

def saturating(a: float, b: float):
    return lambda size: size / (a + b * size)


@pytest.mark.parametrize("phi", [1.0, 50.0, 400.0, 3000.0, 1e5])
def test_goodput_picks_the_candidate_next_to_the_analytic_optimum(phi):
    a, b = 1.0, 0.01
    candidates = candidate_sizes(16, 4096)
    best, info = goodput_choice(phi, 16, candidates, saturating(a, b))
    optimum = math.sqrt(a * phi / b)
    below = max([size for size in candidates if size <= optimum], default=candidates[0])
    above = min([size for size in candidates if size >= optimum], default=candidates[-1])
    assert best == (above if phi > b * below * above / a else below)
    assert set(info["goodput"]) == set(candidates)
    dense, _ = goodput_choice(phi, 16, range(1, 40_001), saturating(a, b))
    assert abs(dense - optimum) <= 1


@pytest.mark.parametrize("throughput, phi, expected", [
    (saturating(1.0, 0.01), 0.0, 16),  # no noise: every sample counts at B0; the fastest steps win
    (saturating(1.0, 0.01), math.inf, 4096),  # all noise: efficiency 1, the fastest samples win
    (lambda size: 2000.0, 1e6, 16),  # flat throughput: efficiency falls with B, nothing to gain
    (lambda size: 2000.0, math.inf, 16),  # flat and all noise: every size ties, the smaller wins
    (lambda size: float(size), 10.0, 4096),  # throughput proportional to B beats efficiency
    (lambda size: float(size), 0.0, 16),  # ... except with no noise at all: a tie
], ids=["no-noise", "all-noise", "flat", "flat-all-noise", "linear", "linear-no-noise"])
def test_goodput_limits(throughput, phi, expected):
    assert goodput_choice(phi, 16, candidate_sizes(16, 4096), throughput)[0] == expected


def test_candidate_sizes_and_efficiency():
    assert candidate_sizes(32, 1000) == [32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1000]
    assert statistical_efficiency(32, 100.0, 32) == 1.0
    assert statistical_efficiency(132, 100.0, 32) == pytest.approx(132 / 232)
    assert statistical_efficiency(4096, math.inf, 32) == 1.0


# -- the rules through the policy ---------------------------------------------------------------

@pytest.mark.parametrize("options, phi, expected", [
    ({"rule": "noise-scale", "noise_multiplier": 2.0}, 100.0, 200),
    ({"rule": "noise-scale"}, 3.0, 32),  # clamped to min_batch
    ({"rule": "noise-scale"}, 1e5, 1024),  # clamped to max_batch
    ({"rule": "norm-test"}, 100.0, 400),  # phi / 0.5^2
    ({"rule": "norm-test", "theta": 0.25}, 10.0, 160),
    ({"rule": "norm-test"}, 1e4, 1024),
])
def test_noise_scale_and_norm_test_rules(options, phi, expected):
    policy = Adaptive(min_batch=32, max_batch=1024, update_every=1, **options)
    sizes = drive(policy, [phi] * 100)
    assert policy.batch_size() == expected
    assert all(b <= noise_decisions.MAX_STEP * a for a, b in zip(sizes, sizes[1:]))  # bounded moves
    assert policy.last_decision["target"] == expected
    assert policy.last_decision["rule"] == options["rule"]


def test_bounds_come_from_set_limit_when_max_batch_is_none():
    policy = Adaptive("noise-scale", min_batch=32, initial=1000, update_every=1)
    assert policy.batch_size() == 1000 and policy.upper == adaptive.UNBOUNDED_BATCH
    policy.set_limit(256)  # the trainer, at fit start
    assert policy.batch_size() == 256
    assert max(drive(policy, [1e6] * 30)) == 256
    assert drive(policy, [1.0] * 100)[-1] == 32
    explicit = Adaptive("noise-scale", max_batch=2048, update_every=1)
    explicit.set_limit(256)  # the memory ceiling only splits batches: 2048 uses accumulation
    assert drive(explicit, [1e6] * 100)[-1] == 2048


def test_low_confidence_moves_in_small_steps_and_never_freezes():
    policy = Adaptive("noise-scale", min_batch=32, max_batch=1024, initial=64, update_every=1)
    sizes = drive(policy, [500.0] * 100, confidence=0.3)  # an estimate that never gets confident
    assert abs(sizes[-1] - 500) <= 0.2 * 500 and sizes == sorted(sizes)  # it still arrives
    assert all(b <= noise_decisions.LOW_CONFIDENCE_STEP * a for a, b in zip(sizes, sizes[1:]))
    assert changes(sizes) >= 5  # 64 -> 96 -> 144 -> 216 -> 324 -> 486 -> 500
    confident = Adaptive("noise-scale", min_batch=32, max_batch=1024, initial=64, update_every=1)
    assert changes(drive(confident, [500.0] * 100)) == 3  # 64 -> 128 -> 256 -> 500
    for missing in ({}, {"noise_scale": math.inf, "confidence": 1.0}):  # no usable estimate
        for step in range(2 * adaptive.MIN_STEPS_PER_DECISION):
            policy.observe(StepStats(policy.samples_seen + 64, 0, EPOCH, 64, gradient=missing))
        assert policy.batch_size() == sizes[-1]
        assert policy.last_decision["reason"] == "no estimate"


def test_one_wild_estimate_moves_nothing():
    # the median of the last ROBUST_WINDOW estimates: Adam-geometry swings (114,671 -> 7,003 in
    # the measurement) come one at a time
    policy = Adaptive("noise-scale", min_batch=32, max_batch=4096, initial=200, update_every=1)
    phis = [200.0] * 200
    phis[100:110] = [50_000.0] * 10  # one decision's worth of steps at a wild value
    sizes = drive(policy, phis)
    assert set(sizes) == {200}
    assert policy.last_decision["robust_phi"] == 200.0


def test_no_flapping_on_noise_but_follows_a_trend():
    # margin 0.2 tolerates phi wandering +-e around its level when 2e / (1 - e) <= 0.2: e <= 9 %
    policy = Adaptive("noise-scale", min_batch=32, max_batch=4096, initial=32, update_every=1)
    settled = drive(policy, noisy(200.0, 2000, 0.08))
    assert changes(settled) == 3 and abs(settled[-1] - 200) <= 0.08 * 200  # 32 -> 64 -> 128 -> ~200
    assert len(set(settled[100:])) == 1  # and there it stays
    trend = drive(policy, np.geomspace(200, 1600, 2000) * noisy(1.0, 2000, 0.08, seed=1))
    assert changes(trend) >= 4 and trend == sorted(trend)
    assert abs(policy.batch_size() - 1600) <= 0.2 * 1600
    loose = Adaptive("noise-scale", min_batch=32, max_batch=4096, initial=32, margin=0.0,
                     update_every=1)
    assert changes(drive(loose, noisy(200.0, 2000, 0.08))) > 50  # the test can fail


def test_goodput_does_not_flap_between_neighbours(monkeypatch):
    # GPU timing, steps mostly unsplit: a = alpha = 0.05, b = beta = 0.001; 64 and 96 tie at
    # phi = b 64 96 / a.
    boundary = 0.001 * 64 * 96 / 0.05
    phis = noisy(boundary, 2000, 0.1, seed=2)
    policy = Adaptive(min_batch=32, max_batch=1024, initial=64, update_every=1)
    sizes = drive(policy, phis)
    assert sizes[0] == 64
    assert changes(sizes) <= 3 and sizes[-1] in (64, 96)
    monkeypatch.setattr(noise_decisions, "MIN_GOODPUT_GAIN", 0.0)
    policy = Adaptive(min_batch=32, max_batch=1024, initial=64, update_every=1)
    assert changes(drive(policy, phis)) > 10  # without the gain threshold it flaps


@pytest.mark.parametrize("timing, phi, expected", [
    (CPU, 500.0, {32}),  # flat measured throughput: back to the smallest after exploring
    # B* = sqrt(0.05 * 6000 / 0.001) = 548; from 256 on goodput is within MIN_GOODPUT_GAIN of it
    (GPU, 6000.0, {256, 384, 512, 768}),
    ((0.05, 1e-5), 1e4, {1024}),  # steep GPU curve, lots of noise: the ceiling
], ids=["flat", "rising", "steep"])  # no "gpu" in ids: conftest skips those
def test_goodput_policy_learns_throughput_from_step_times(timing, phi, expected):
    policy = Adaptive(min_batch=32, max_batch=1024, update_every=1)
    sizes = drive(policy, [phi] * 600, timing=timing)
    assert sizes[-1] in expected and max(sizes) <= 1024
    decision = policy.last_decision
    assert decision["rule"] == "goodput" and decision["phi"] == phi
    json.dumps(decision)  # loggable as it is


def test_adascale_gain_is_scale_times_statistical_efficiency():
    phi = 100.0  # trace / grad_sq: r = S * E(B)
    assert adascale_gain(phi * 2.0, 2.0, 256 / 32, base_batch=32) == pytest.approx(
        256 / 32 * statistical_efficiency(256, phi, 32))
    policy = Adaptive("noise-scale", initial=128)
    assert policy.lr_scale(32) == pytest.approx(2.0)  # no estimate yet: the sqrt rule
    drive(policy, [64.0])
    assert policy.lr_scale(32) == pytest.approx(adascale_gain(64.0, 1.0, 128 / 32, base_batch=32))


# -- the throughput model -----------------------------------------------------------------------

def test_throughput_model_recovers_alpha_and_beta_from_noisy_times():
    alpha, beta = 0.02, 4e-4
    rng = np.random.default_rng(3)
    model = ThroughputModel()
    model.observe(64, 32, 100.0)  # a warm-up step (autotuning) at a new size is not measured
    for _ in range(40):
        for physical in rng.permutation([16, 32, 64, 128, 256]):
            batch = int(rng.choice([2 * physical, 3 * physical - 5]))  # even and uneven splits
            steps = math.ceil(batch / physical)
            model.observe(batch, physical, (steps * alpha + beta * batch) * rng.normal(1, 0.03))
    fitted_alpha, fitted_beta = model.fit()
    assert fitted_alpha == pytest.approx(alpha, rel=0.1)
    assert fitted_beta == pytest.approx(beta, rel=0.05)
    assert model.observed_sizes == [16, 32, 64, 128, 256]
    assert model.micro_batches(1000, 256) == 4
    predicted = 1000 / (4 * alpha + 1000 * beta)
    assert model.samples_per_s(1000, 256) == pytest.approx(predicted, rel=0.05)


def test_throughput_is_flat_before_two_sizes_are_measured():
    model = ThroughputModel()
    assert {model.samples_per_s(size) for size in (1, 32, 4096)} == {1.0}
    for _ in range(5):
        model.observe(128, 64, 0.2)  # 640 samples/s, the first step being warm-up
    assert model.fit() is None and model.observed_sizes == [64]
    assert [model.samples_per_s(size, 512) for size in (1, 32, 4096)] == [pytest.approx(640.0)] * 3


def test_throughput_fit_never_predicts_negative_costs():
    model = ThroughputModel()
    for physical, time_s in ((32, 0.1), (64, 0.09), (32, 0.1), (64, 0.09)):  # faster when larger
        model.observe(2 * physical, physical, time_s)
    assert model.fit() == (pytest.approx(0.0475), 0.0)
    model = ThroughputModel()
    for physical, time_s in ((10, 0.009), (20, 0.021), (10, 0.009), (20, 0.021)):
        model.observe(2 * physical, physical, time_s)  # the line's intercept would be -0.003 s
    fitted_alpha, fitted_beta = model.fit()
    assert fitted_alpha == 0.0 and fitted_beta > 0


# -- contract -----------------------------------------------------------------------------------

@pytest.mark.parametrize("rule", adaptive.RULES)
def test_restored_policy_continues_identically(rule):
    phis = noisy(300.0, 400, 0.3, seed=4) * np.geomspace(1, 4, 400)
    uninterrupted = drive(Adaptive(rule, update_every=700), phis)
    original = Adaptive(rule, update_every=700)
    original.observe(StepStats(0, 0, EPOCH, 0))
    before = drive(original, phis[:137])
    restored = Adaptive(rule, update_every=700)
    restored.load_state_dict(json.loads(json.dumps(original.state_dict())))
    after = drive(restored, phis[137:], seen=sum(before))
    assert before + after == uninterrupted
    assert changes(uninterrupted) >= 2  # the run did decide something
    assert restored.state_dict() == json.loads(json.dumps(restored.state_dict()))


def test_policy_contract_and_new_run_reset():
    policy = Adaptive(initial=64, update_every=1)
    assert isinstance(policy, BatchSizePolicy) and policy.wants_gradient_stats
    drive(policy, [5000.0] * 300)
    assert policy.batch_size() != 64 and policy.throughput.observed_sizes
    policy.observe(StepStats(0, 0, EPOCH, 0))  # fit() begins again
    assert policy.batch_size() == 64 and not policy.throughput.observed_sizes
    assert policy.last_decision is None
    assert repr(policy) == "Adaptive('goodput', min_batch=32, max_batch=None, initial=64)"
    assert policy.samples_seen == 0


@pytest.mark.parametrize("options, message", [
    ({"rule": "largest"}, "choose one of goodput, noise-scale, norm-test"),
    ({"min_batch": 0}, "batch_size must be an integer >= 1"),
    ({"min_batch": 64, "max_batch": 32}, "must be >= min_batch"),
    ({"margin": -0.1}, "margin >= 0"),
    ({"theta": 0.0}, "theta > 0"),
    ({"min_confidence": 1.5}, "min_confidence"),
    ({"update_every": "often"}, "often"),
])
def test_bad_options_name_the_fix(options, message):
    with pytest.raises(ConfigError, match=message):
        Adaptive(**options)


# -- the start-up choice (Adaptive.calibrate) on synthetic throughput curves: passes timed at the
# logical powers of two (3 in 4 steps run unsplit), the noise scale measured at the start.

def calibrated(rate_of, phi: float | None, **options) -> Adaptive:
    """A policy calibrated on passes whose samples/s at physical size p is rate_of(p)."""
    from batchtrain.training.calibrate import Calibration
    policy = Adaptive(min_batch=32, max_batch=1024, **options)
    policy.set_limit(CAP)
    policy.observe(StepStats(0, 0, EPOCH, 0))
    sizes = policy.calibration_sizes(EPOCH)
    noise = None if phi is None else {"noise_scale": phi, "trace": phi, "grad_sq": 1.0}
    policy.calibrate(Calibration({p: p / rate_of(p) for p in sizes}, noise, 0.1, sum(sizes)))
    return policy


RISING = lambda p: p / (0.05 + 0.001 * p)  # noqa: E731  GPU-like: samples/s rises with the batch
FLAT = lambda p: 2000.0  # noqa: E731  a CPU whose time is proportional to the samples
FALLING = lambda p: 4000.0 / (1 + p / 256)  # noqa: E731  samples/s falls as the batch grows
PEAKED = {32: 1000.0, 64: 2000.0, 128: 4000.0, 256: 8000.0, 512: 3000.0, 1024: 2000.0}.get


@pytest.mark.parametrize("rate_of, phi, expected", [
    (RISING, 6000.0, {512, 1024}),  # B* = sqrt(a phi / b) = sqrt(0.05 * 6000 / 0.001) = 548
    (RISING, 80.0, {64}),  # B* = sqrt(0.05 * 80 / 0.001) = 63: little noise, a small batch
    (FLAT, 6000.0, {32}),  # nothing to gain from a larger batch: the smallest
    (FALLING, 6000.0, {32}),  # a larger batch is slower and needs more samples: the smallest
    (FALLING, None, {32}),
    (PEAKED, 1e5, {256}),  # throughput peaks at 256 (caches), then falls
    (PEAKED, None, {256}),  # no noise estimate: phi = min_batch, the peak still wins (4x rate)
], ids=["rising-noisy", "rising-quiet", "flat", "falling", "falling-no-noise", "peaked",
        "peaked-no-noise"])
def test_the_first_batch_comes_from_the_calibration(rate_of, phi, expected):
    policy = calibrated(rate_of, phi)
    assert policy.batch_size() in expected
    assert policy.last_decision["reason"] == "calibrated"
    assert policy.calibration["chosen"] == policy.batch_size()
    json.dumps(policy.state_dict())  # the calibration is part of the checkpointed state


def test_calibrated_sizes_are_scaled_by_the_overhead_real_steps_show():
    # a real step at physical 128 takes 2x its calibration pass (optimizer, statistics): the
    # other calibrated sizes, not yet stepped at, count at 2x too
    model = ThroughputModel()
    model.calibrate({64: 0.01, 128: 0.02, 256: 0.04})
    for _ in range(3):  # the first is the warm-up, not counted
        model.observe(256, 128, 2 * 2 * 0.02)
    assert model.overhead() == pytest.approx(2.0)
    assert model.samples_per_s(512, 256) == pytest.approx(512 / (2 * 2 * 0.04))


def test_a_user_given_initial_batch_is_not_calibrated():
    assert Adaptive(initial=64).calibration_sizes(EPOCH) == []
    assert Adaptive(min_batch=32, max_batch=256).calibration_sizes(EPOCH) == [32, 64, 128, 256]
    assert Adaptive(min_batch=32, max_batch=4096).calibration_sizes(100) == [32]  # 100 samples
    # up to a quarter of the samples: a batch of 1024 or 2048 would be an epoch of 1 or 2 steps
    assert Adaptive(min_batch=32).calibration_sizes(2400) == [32, 64, 128, 256, 512]


def test_the_noise_is_measured_on_raw_gradients_unless_asked():
    assert Adaptive().noise_geometry == "raw"
    assert Adaptive(geometry="preconditioned").noise_geometry == "preconditioned"
    with pytest.raises(ConfigError, match="unknown noise geometry 'adam'; choose raw or preconditioned"):
        Adaptive(geometry="adam")


# -- the branched start (Adaptive.branch_sizes, observe_branches): after the calibration, the
# trainer branches at the calibrated size and its doublings; the fastest becomes the first batch
# and the floor of every later decision.

def branched(policy: Adaptive, improvement: dict, seconds: dict) -> Adaptive:
    from batchtrain.training.branch import Branches
    policy.observe_branches(Branches(sorted(improvement), 2.0, improvement, seconds, 4096, 0.3))
    return policy


def test_branch_sizes_are_the_calibrated_size_and_its_doublings():
    policy = calibrated(RISING, 80.0)  # calibrated at 64
    assert policy.branch_sizes(EPOCH) == [64, 128, 256, 512, 1024]
    assert policy.branch_sizes(1000) == [64, 128]  # at most a quarter of the samples
    assert calibrated(RISING, 80.0, rule="noise-scale").branch_sizes(EPOCH) == []  # no clock
    assert Adaptive(initial=64).branch_sizes(EPOCH) == []  # the user's start is kept


def test_the_fastest_branch_is_the_first_batch_and_the_floor_of_later_decisions():
    policy = branched(calibrated(RISING, 80.0), {64: 0.30, 128: 0.28, 256: 0.25},
                      {64: 1.0, 128: 0.6, 256: 0.4})  # per second: 0.30, 0.47, 0.625
    assert policy.batch_size() == 256 and policy.floor == 256
    assert policy.last_decision["reason"] == "branched"
    assert policy.calibration["branched"]["fastest"] == 256
    sizes = drive(policy, [5.0] * 200)  # a tiny noise scale asks for the smallest batch
    assert min(sizes) == 256  # never below the branched start
    restored = Adaptive(min_batch=32, max_batch=1024)
    restored.load_state_dict(json.loads(json.dumps(policy.state_dict())))
    assert restored.floor == 256


def test_the_start_climbs_while_the_largest_size_branched_wins():
    policy = branched(calibrated(RISING, 80.0), {64: 0.30, 128: 0.35}, {64: 1.0, 128: 0.6})
    assert policy.batch_size() == 128  # the largest branched size won: branch again from it
    assert policy.branch_sizes(EPOCH) == [128, 256, 512, 1024]
    assert policy.calibration["branched"]["rounds"] == 1
    branched(policy, {128: 0.35, 256: 0.30}, {128: 1.0, 256: 1.0})  # 128 wins: the climb ends
    assert policy.batch_size() == policy.floor == 128 and policy.branch_sizes(EPOCH) == []
    assert policy.calibration["branched"]["rounds"] == 2
    from batchtrain.training.branch import Branches
    over_budget = calibrated(RISING, 80.0)
    over_budget.observe_branches(Branches([], math.nan, {}, {}, 0, 0.2))  # none ran
    assert over_budget.branch_sizes(EPOCH) == []


def test_no_branch_improved_keeps_the_calibrated_start():
    policy = branched(calibrated(RISING, 80.0), {64: -0.1, 128: -0.2}, {64: 1.0, 128: 0.5})
    assert policy.batch_size() == 64 and policy.floor == 32
    assert policy.calibration["branched"]["fastest"] is None


def steps_at(policy: Adaptive, step_s: float, count: int) -> None:
    """count steps at the policy's size, each taking step_s."""
    for _ in range(count):
        seen = policy.samples_seen + policy.batch_size()
        policy.observe(StepStats(seen, 0, EPOCH, policy.batch_size(),
                                 physical_batch=policy.batch_size(), time_s=step_s))


@pytest.mark.parametrize("real_step_s, expected", [(0.09 / 32, 128), (2 * 0.09 / 32, 256)])
def test_the_start_is_read_again_with_the_runs_own_step_time(real_step_s, expected):
    """A branch steps without the trainer's per-step work: once real steps show it, each branch's
    seconds gain it per step taken, and the start's rule picks again (the smaller sizes, with
    more steps, lose the most)."""
    policy = calibrated(RISING, 80.0)
    policy.allow_branches()
    # 4096 samples: 64, 32 and 16 steps; per second 3.0, 3.67, 3.75: 128 (256 within 10 %)
    branched(policy, {64: 0.30, 128: 0.33, 256: 0.30}, {64: 0.10, 128: 0.09, 256: 0.08})
    assert policy.batch_size() == 128
    steps_at(policy, real_step_s, adaptive.MIN_STEPS_PER_DECISION - 1)  # the first: a warm-up
    assert policy.batch_size() == 128 and not policy.start_reread
    # the branch's 2.8 ms a step: no gap, 128 stays; twice that: seconds 0.28, 0.18, 0.125, per
    # second 1.07, 1.83, 2.4: 256
    steps_at(policy, real_step_s, 1)
    assert policy.start_reread and policy.batch_size() == expected
    assert policy.floor == 128  # the branched start's floor stays
    if expected != 128:
        assert policy.last_decision["reason"] == "start re-read"
        assert policy.last_decision["step_overhead_s"] == pytest.approx(0.09 / 32)
    steps_at(policy, 10 * real_step_s, 2 * adaptive.MIN_STEPS_PER_DECISION)
    assert policy.batch_size() == expected  # once only: later steps move nothing by it
    restored = Adaptive(min_batch=32, max_batch=1024)
    restored.load_state_dict(json.loads(json.dumps(policy.state_dict())))
    assert restored.start_reread


# -- decisions from branches during training (allow_branches: one process): the noise is then
# neither measured nor read, and branches_due paces the branches (batching/branched.py).

def branching(rate_of=RISING, phi: float = 80.0) -> Adaptive:
    """A calibrated policy whose trainer branches, after its branched start at 128."""
    policy = calibrated(rate_of, phi)
    policy.allow_branches()
    return branched(policy, {64: 0.30, 128: 0.30}, {64: 1.0, 128: 0.6})


def test_while_branches_decide_the_noise_is_neither_measured_nor_read():
    policy = branching()
    assert policy.batch_size() == 128 and policy.stats_every == 0
    sizes = drive(policy, [1e5] * 300)  # a huge noise scale would ask for the largest batch
    assert set(sizes) == {128}
    assert Adaptive(rule="noise-scale").stats_every == adaptive.MEASURE_EVERY
    noise_rule = Adaptive(rule="noise-scale")
    noise_rule.allow_branches()
    assert noise_rule.stats_every == adaptive.MEASURE_EVERY and noise_rule.branching is False


def test_an_lr_rule_that_reads_the_noise_keeps_it_measured():
    policy = branching()
    policy.lr_scale(32)  # lr_scaling="adascale" asks at every step
    assert policy.stats_every == adaptive.MEASURE_EVERY


def test_branches_are_due_at_the_paced_steps_with_the_current_size_its_double_and_half():
    from batchtrain.batching.branched import BRANCH_OVERHEAD, predicted_overhead
    policy = branching()  # the start's branches cost 0.3 s, paid from the start's budget
    assert policy.branches_due() is None
    per_sample = 1e-5  # fast steps: the next branches cost far less than the start's 0.3 s
    drive(policy, [80.0] * 20, timing=(0.0, per_sample))
    predicted = predicted_overhead([128, 256], 128, 1, policy._samples_per_s)
    assert 0 < predicted < 0.3 / 4
    trained = 20 * 128 * per_sample
    while policy.branches_due() is None:
        drive(policy, [80.0], timing=(0.0, per_sample))
        trained += 128 * per_sample
        assert trained < 0.3 / BRANCH_OVERHEAD  # not paced by the start's cost
    assert trained == pytest.approx(predicted / BRANCH_OVERHEAD, abs=128 * per_sample)
    assert policy.branches_due() == ([128, 256], 1)  # 64 is under the floor (the start's 128)


def test_branches_that_would_cost_more_than_the_last_ones_wait_for_their_own_cost():
    """The branches during training are paced by what they will cost, not only by the last
    ones: slow steps make 8 steps of 256 dearer than the last branches' 0.3 s."""
    from batchtrain.batching.branched import BRANCH_OVERHEAD, predicted_overhead
    policy = branching()
    step_s = 0.5  # a step of 128: 256 samples/s
    drive(policy, [80.0] * 13, timing=(0.0, step_s / 128))
    policy.branches.started(0.3)  # as after branches during training that cost 0.3 s
    drive(policy, [80.0] * 13, timing=(0.0, step_s / 128))  # 6.5 s: past 0.3 s / 5 %
    predicted = predicted_overhead([128, 256], 128, 1, policy._samples_per_s)
    assert predicted > 0.3 and policy.branches_due() is None
    trained = 13 * step_s
    while policy.branches_due() is None:
        drive(policy, [80.0], timing=(0.0, step_s / 128))
        trained += step_s
        assert trained < 1000
    predicted = predicted_overhead([128, 256], 128, 1, policy._samples_per_s)
    assert predicted / BRANCH_OVERHEAD <= trained < predicted / BRANCH_OVERHEAD + step_s


def test_the_next_branches_cost_is_predicted_again_only_when_reached_or_every_few_steps(
        monkeypatch):
    """branches_due is asked after every step: the prediction (the throughput model's rates) is
    made again when the training since the last branches would pay for it, or REPREDICT_EVERY
    steps after the last one."""
    from batchtrain.batching.branched import BRANCH_OVERHEAD, REPREDICT_EVERY
    policy = branching()
    calls = []
    original = adaptive.predicted_overhead
    monkeypatch.setattr(adaptive, "predicted_overhead",
                        lambda *args: calls.append(args) or original(*args))
    per_sample = 1e-5
    steps = 0
    while policy.branches_due() is None:
        drive(policy, [80.0], timing=(0.0, per_sample))
        steps += 1
        assert steps < 100_000
    predicted = original([128, 256], 128, 1, policy._samples_per_s)
    assert steps * 128 * per_sample == pytest.approx(predicted / BRANCH_OVERHEAD,
                                                     abs=2 * 128 * per_sample)
    assert steps > 100 and len(calls) <= steps // REPREDICT_EVERY + 3
    policy.branches.started(0.0)  # new branches ran: the next ones predicted anew
    assert policy.branches.predicted_s is None


def test_a_prediction_inflated_by_a_stall_is_corrected_within_a_few_steps():
    """A loaded machine's slow steps can inflate one prediction far past the cost the next
    branches will have; the steps after the stall must not wait for that cost to be trained
    (before REPREDICT_EVERY, a 2-epoch test run never branched once under load)."""
    from batchtrain.batching.branched import BRANCH_OVERHEAD, REPREDICT_EVERY, predicted_overhead
    policy = branching()
    per_sample = 1e-5
    drive(policy, [80.0] * 12, timing=(0.0, per_sample))
    normal = predicted_overhead([128, 256], 128, 1, policy._samples_per_s)
    policy.branches.predicted_s = 100 * normal  # what a stall's step times predicted
    policy.branches.since_prediction = 0
    steps = 0
    while policy.branches_due() is None:
        drive(policy, [80.0], timing=(0.0, per_sample))
        steps += 1
        assert steps < 10_000
    trained = policy.branches.trained_s
    assert trained < normal / BRANCH_OVERHEAD + REPREDICT_EVERY * 128 * per_sample


def until_due(policy: Adaptive, timing=(0.0, 1e-5)) -> list[int]:
    """Steps until branches are due; their sizes."""
    for _ in range(100_000):
        if (due := policy.branches_due()) is not None:
            return due[0]
        drive(policy, [80.0] * 100, timing=timing)
    raise AssertionError("branches never due")


def test_branches_during_training_move_the_batch_and_pace_the_next():
    from batchtrain.training.branch import Branches
    policy = branching()
    sizes = until_due(policy)
    # 256 improves as much as 128 on the same samples, at a higher rate (RISING): taken
    policy.observe_branches(Branches(sizes, 1.0, {128: 0.2, 256: 0.2}, {128: 1.0, 256: 0.7},
                                     4096, 0.5))
    assert policy.batch_size() == 256 and policy.last_decision["reason"] == "branched"
    assert policy.branches_due() is None  # paced again by these branches' 0.5 s
    assert policy.calibration["branched"]["sizes"] == [64, 128]  # the start's record is kept
    restored = Adaptive(min_batch=32, max_batch=1024)
    restored.load_state_dict(json.loads(json.dumps(policy.state_dict())))
    assert restored.branching and restored.stats_every == 0
    assert restored.branches.state_dict() == policy.branches.state_dict()


@pytest.mark.parametrize("improvement", [{128: 0.2, 256: 0.2}, {128: 0.2, 256: 0.05},
                                         {128: 0.001, 256: 0.001}])
def test_the_branch_the_run_keeps_is_the_size_the_policy_then_trains_at(improvement):
    """branch_choice (what training/branch.py keeps) agrees with observe_branches, at the start
    and during training."""
    from batchtrain.training.branch import Branches
    start = calibrated(RISING, 80.0)
    start_branches = Branches([64, 128], 2.0, {64: 0.30, 128: 0.30}, {64: 1.0, 128: 0.6}, 4096, 0.3)
    named = start.branch_choice(start_branches)
    start.observe_branches(start_branches)
    assert named == start.batch_size() == 128
    policy = branching()
    sizes = until_due(policy)
    later = Branches(sizes, 1.0, improvement, {128: 1.0, 256: 0.7}, 4096, 0.5)
    named = policy.branch_choice(later)
    policy.observe_branches(later)
    assert named == policy.batch_size()

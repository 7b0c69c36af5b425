"""Start-up calibration (training/calibrate.py): it measures, changes nothing, and its noise
estimate matches a problem whose noise scale is known in closed form."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from batchtrain import Callback, Trainer
from helpers import noisy_linear_regression as linear_regression
from batchtrain.batching.adaptive import Adaptive
from batchtrain.batching.branched import BranchDecisions
from batchtrain.training.branch import Branches
from batchtrain.training.calibrate import Calibration, calibrate, calibrate_policy, noise_from_norms


def noisy_linear_regression(**options):
    """helpers.noisy_linear_regression without the probe set: (model, x, y, B_simple)."""
    return linear_regression(**options)[:4]


def test_noise_at_the_start_matches_the_closed_form_of_noisy_linear_regression():
    model, x, y, expected = noisy_linear_regression()
    calibration = calibrate(model, F.mse_loss, x, y, [4, 8, 16, 32, 64, 128, 256], repeats=200,
                            min_timed_s=math.inf)
    assert calibration.noise["noise_scale"] == pytest.approx(expected, rel=0.25)  # 21 samples
    assert calibration.noise["grad_sq"] == pytest.approx(4.0, rel=0.25)  # |G|^2 = 4 |delta|^2
    assert sorted(calibration.seconds) == [4, 8, 16, 32, 64, 128, 256]
    assert calibration.samples == 201 * sum([4, 8, 16, 32, 64, 128, 256])


def test_the_line_through_exact_norms_and_the_pool_correction():
    trace, grad_sq, pool = 300.0, 2.0, 1024
    exact = [(p, grad_sq + trace / p * (pool - p) / (pool - 1)) for p in (16, 64, 256, 512)]
    estimate = noise_from_norms(exact, pool)
    assert estimate["trace"] == pytest.approx(trace) and estimate["grad_sq"] == pytest.approx(grad_sq)
    assert estimate["noise_scale"] == pytest.approx(150.0)
    assert noise_from_norms(exact, math.inf)["noise_scale"] > 170  # uncorrected: |G|^2 biased low
    assert noise_from_norms([(16, 5.0), (16, 6.0)]) is None  # one size: no line
    assert noise_from_norms([(16, 1.0), (64, 5.0)]) is None  # norms growing with p: no estimate


def test_calibrating_changes_nothing_of_the_run():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.5),
                          nn.Linear(16, 3)).eval()
    x, y = torch.randn(512, 8), torch.randint(0, 3, (512,))
    before = {name: value.clone() for name, value in model.state_dict().items()}
    rng = torch.get_rng_state()
    calibrate(model, F.cross_entropy, x, y, [8, 32, 128])
    after = model.state_dict()
    assert all(torch.equal(before[name], after[name]) for name in before)  # BatchNorm stats too
    assert torch.equal(torch.get_rng_state(), rng)  # dropout drew from a forked generator
    assert all(p.grad is None for p in model.parameters()) and not model.training


def test_a_policy_that_asks_nothing_is_not_calibrated_and_one_that_asks_is(monkeypatch):
    from batchtrain.training import calibrate as calibrate_module
    measured = calibrate_module._timed  # the passes run (the noise reads them); their clock is
    monkeypatch.setattr(calibrate_module, "_timed",  # replaced by a pass time flat in the size,
                        lambda *args: measured(*args) * 0 + 1e-3)  # so the choice is the top
    model, x, y, _ = noisy_linear_regression(n=4096)
    draws = []

    def draw(n, start):
        draws.append(n)
        return x[start:start + n], y[start:start + n]

    assert calibrate_policy(Adaptive(initial=64), model, F.mse_loss, draw, len(x)) is None
    assert draws == []  # the user's initial batch is kept: nothing measured
    policy = Adaptive(min_batch=32, max_batch=1024)
    policy.set_limit(4096)
    calibration = calibrate_policy(policy, model, F.mse_loss, draw, len(x))
    assert isinstance(calibration, Calibration)
    timed = sorted(calibration.seconds)  # the powers of two, up to 1024 or enough
    assert timed == [32 << k for k in range(len(timed))] and len(timed) >= 3
    assert timed[-1] == 1024 or policy.calibration_enough(calibration.seconds, calibration.noise)
    assert draws == [4096]  # a pool of (REPEATS + 1) x the largest pass: disjoint repeats
    assert policy.calibration["chosen"] == policy.batch_size()
    assert "calibrated in" in calibration.describe()


def test_fit_with_auto_starts_at_the_calibrated_size_and_logs_the_cost(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2048, 12)).astype(np.float32)
    y = (x[:, 0] + x[:, 1] > 0).astype(np.int64)
    trainer = Trainer("mlp", seed=0, device="cpu")
    history = trainer.fit(x, y, batch_size="auto", epochs=1)
    calibration = trainer.state_.calibration
    assert calibration is not None and calibration.cost_s > 0
    record = trainer.state_.policy.calibration  # the calibrated size, unless branches then chose
    branched = (record.get("branched") or {}).get("chosen")  # (they run where the budget allows)
    assert history.steps[0]["batch_size"] == (branched or record["chosen"])
    resumed_like = Trainer("mlp", seed=0, device="cpu")
    resumed_like.fit(x, y, batch_size=Adaptive(initial=32), epochs=1)
    assert resumed_like.state_.calibration is None


def test_sizes_past_the_time_budget_are_not_timed():
    model, x, y, _ = noisy_linear_regression(n=1024)
    calibration = calibrate(model, F.mse_loss, x, y, [256, 16, 64], budget_s=0.0)
    assert list(calibration.seconds) == [16]  # the smallest first, then the budget was spent
    assert calibration.noise is None  # one size: no line


def test_a_slow_pass_is_timed_fewer_times_and_every_gradient_counts_for_the_noise(monkeypatch):
    from batchtrain.training import calibrate as module
    model, x, y, _ = noisy_linear_regression(n=4096)
    passes, clock = [], iter(range(10**6))
    real_pass = module._pass

    def slow_at_64(model, loss_fn, parameters, inputs, targets, autocast):
        _, sq_norm = real_pass(model, loss_fn, parameters, inputs, targets, autocast)
        passes.append(len(inputs))
        return (0.015 if len(inputs) == 64 else 0.005), sq_norm  # 64: 15 ms a pass

    monkeypatch.setattr(module, "_pass", slow_at_64)
    calibration = calibrate(model, F.mse_loss, x, y, [16, 64])
    # 16: the warm-up and 3 timed (15 ms); 64: the warm-up and 2 timed (30 ms >= MIN_TIMED_S)
    assert passes == [16] * 4 + [64] * 3
    assert calibration.samples == 4 * 16 + 3 * 64 and calibration.seconds[64] == 0.015
    assert calibration.noise is not None  # from 7 gradients, the warm-ups' included
    assert not module._over_budget({64: 0.015}, 128, 0.0, 0.07, 3)  # 128: 30 ms x (1 + 1)
    assert module._over_budget({64: 0.015}, 128, 0.0, 0.05, 3)
    assert module._over_budget({64: 0.015}, 128, 0.0, 0.07, 3, min_timed_s=math.inf)  # x 4


@pytest.mark.parametrize("delayed_passes, expected, count",
                         [(3, 0.004, 2 + 4), (10**6, 0.06, 2 + 2)])
def test_a_size_far_slower_per_sample_than_the_one_below_is_timed_again(
        monkeypatch, delayed_passes, expected, count):
    """Other work on the machine delays 64's first passes 15x: timed again, the undisturbed
    reading counts. A size that is truly that slow (every pass) stays slow."""
    from batchtrain.training import calibrate as module
    model, x, y, _ = noisy_linear_regression(n=4096)
    passes, real_pass = [], module._pass

    def delayed_at_64(model, loss_fn, parameters, inputs, targets, autocast):
        _, sq_norm = real_pass(model, loss_fn, parameters, inputs, targets, autocast)
        passes.append(len(inputs))
        if len(inputs) != 64:
            return 0.002, sq_norm  # 16: 0.125 ms a sample
        delayed = passes.count(64) <= delayed_passes
        return (0.06 if delayed else 0.004), sq_norm  # 64: 0.94 ms a sample delayed, else 0.06

    monkeypatch.setattr(module, "_pass", delayed_at_64)
    calibration = calibrate(model, F.mse_loss, x, y, [16, 64])
    assert calibration.seconds[64] == expected
    # each round: the warm-up, then timed passes until 20 ms (one of 60 ms) or 3 (of 4 ms)
    assert passes.count(64) == count
    assert calibration.samples == sum(passes)  # the second round's gradients count too
    assert not module._implausible({16: 0.002, 64: 0.0119}, 64)  # 1.49x per sample: believed
    assert module._implausible({16: 0.002, 32: 0.004, 64: 0.0121}, 64)  # 1.51x of 32's


def test_calibrating_stops_once_the_policy_has_enough():
    model, x, y, _ = noisy_linear_regression(n=2048)
    asked = []

    def enough(seconds, noise):
        asked.append((sorted(seconds), noise))
        return max(seconds) >= 64

    calibration = calibrate(model, F.mse_loss, x, y, [8, 16, 32, 64, 128, 256], enough=enough)
    assert sorted(calibration.seconds) == [8, 16, 32, 64]  # not 128, 256
    assert [sizes for sizes, _ in asked] == [[8], [8, 16], [8, 16, 32], [8, 16, 32, 64]]
    assert asked[0][1] is None and asked[-1][1] is not None  # the noise line from two sizes on
    assert calibration.noise is not None


@pytest.mark.parametrize("curve, stops_at", [
    ("flat", 64),  # the goodput choice is min_batch (32): 2 x 32 timed is enough
    ("rising", None),  # time per step nearly constant: the choice follows the largest timed
    ("falling", 64)])  # larger batches slower per sample: the choice is 32
def test_adaptive_calibrates_up_to_twice_the_size_it_would_choose(curve, stops_at):
    from batchtrain.batching.adaptive import START_SPAN
    policy = Adaptive()
    policy.set_limit(1 << 16)
    step_s = {"flat": lambda size: size / 10_000, "rising": lambda size: 0.01 + size * 1e-7,
              "falling": lambda size: (size / 10_000) * (1 + size / 256)}[curve]
    noise = {"noise_scale": 50.0, "trace": 50.0, "grad_sq": 1.0}
    seconds, stopped = {}, None
    for size in (32, 64, 128, 256, 512, 1024, 2048):
        seconds[size] = step_s(size)
        if policy.calibration_enough(dict(seconds), noise):
            stopped = size
            break
    assert stopped == stops_at
    if stopped is not None:
        chosen = policy._calibrated_choice(seconds, noise)
        assert stopped >= START_SPAN * chosen
    assert not Adaptive(rule="noise-scale").calibration_enough({32: 1.0, 4096: 1.0}, noise)


def test_a_short_run_gets_a_short_calibration(monkeypatch):
    from batchtrain.training import calibrate as module
    model, x, y, _ = noisy_linear_regression(n=2048)
    sizes = [8, 16, 32, 64, 128, 256, 512, 1024]
    long_run = calibrate(model, F.mse_loss, x, y, sizes, run_samples=math.inf)
    assert sorted(long_run.seconds) == sizes
    rate = max(p / t for p, t in long_run.seconds.items())
    assert sorted(calibrate(model, F.mse_loss, x, y, sizes, run_samples=rate * 1e-5).seconds) == sizes
    # (this model is so fast that MIN_BUDGET_S covers every size); without that floor, a run of
    # 10 us at the fastest rate allows 0.5 us of calibration: the first size only
    monkeypatch.setattr(module, "MIN_BUDGET_S", 0.0)
    short_run = calibrate(model, F.mse_loss, x, y, sizes, run_samples=rate * 1e-5)
    assert list(short_run.seconds) == [8]


def test_a_rule_without_a_clock_starts_and_trains_alike_every_time():
    # adaptive:noise-scale calibrates too (its first batch from the noise at the start), but reads
    # no timing: two runs of one seed take the same batches and end with the same weights
    rng = np.random.default_rng(1)
    x = rng.standard_normal((1024, 12)).astype(np.float32)
    y = (x[:, 0] - x[:, 2] > 0).astype(np.int64)
    runs = []
    for _ in range(2):
        trainer = Trainer("mlp", seed=0, device="cpu", optimizer="sgd", lr=0.05)
        history = trainer.fit(x, y, batch_size="adaptive:noise-scale", epochs=2)
        runs.append((trainer, [step["batch_size"] for step in history.steps]))
    (first, sizes), (second, again) = runs
    assert first.state_.policy.last_decision is not None and sizes == again
    assert first.state_.policy.calibration["chosen"] == sizes[0]
    for ours, theirs in zip(first.model_.parameters(), second.model_.parameters()):
        assert torch.equal(ours, theirs)


def test_a_pool_smaller_than_the_data_is_corrected_for_the_data_it_came_from():
    # slices of a shuffled pool of N drawn from D samples are draws from D: the correction is D's
    model, x, y, expected = noisy_linear_regression(n=65536, sigma=10.0)  # B_simple 1011
    pool = torch.randperm(len(x), generator=torch.Generator().manual_seed(1))[:1024]
    sizes = [16, 32, 64, 128, 256]
    right = calibrate(model, F.mse_loss, x[pool], y[pool], sizes, repeats=300, population=len(x),
                      min_timed_s=math.inf)
    wrong = calibrate(model, F.mse_loss, x[pool], y[pool], sizes, repeats=300,
                      min_timed_s=math.inf)  # as if D were N
    assert right.noise["noise_scale"] == pytest.approx(expected, rel=0.3)
    assert wrong.noise["noise_scale"] < 0.7 * expected  # about N phi / (N + phi): half


def test_the_branch_plan_fits_its_budget_and_drops_the_largest_sizes_first():
    from batchtrain.training.calibrate import BRANCH_STEPS, _branch_plan

    seconds = {64: 0.01, 128: 0.015, 256: 0.025, 512: 0.05}  # 6400 .. 10240 samples/s
    long_run = _branch_plan([64, 128, 256, 512], seconds, 60_000, 60_000 * 50)
    assert long_run[0] == [64, 128, 256, 512] and long_run[1] % (BRANCH_STEPS * 512) == 0
    short_run = _branch_plan([64, 128, 256, 512], seconds, 60_000, 60_000 * 5)
    assert short_run is not None and short_run[0] == [64, 128]  # a smaller budget: fewer sizes
    assert _branch_plan([64, 128], seconds, 60_000, 1000) is None  # nothing fits
    assert _branch_plan([64, 128, 256], seconds, 3000, 60_000 * 50)[0] == [64, 128]  # 2 x 8 x 128
    assert _branch_plan([64], seconds, 60_000, 60_000 * 50) is None  # one size: no comparison
    # 0.1 s is always allowed, up to a tenth of the run: 2 % of a run of 0.7 s at 853,000
    # samples/s is 14 ms, a tenth 70 ms, more than the branches' 4.2 ms predicted
    fast = {64: 1e-4, 128: 1.5e-4}
    assert _branch_plan([64, 128], fast, 60_000, 600_000)[0] == [64, 128]
    # a run of 12 ms: a tenth of it, 1.2 ms, is all the branches may take: none fit
    assert _branch_plan([64, 128], fast, 60_000, 10_000) is None


def test_the_start_branches_get_their_whole_budget_only_where_the_throughput_rises():
    from batchtrain.training.calibrate import (BRANCH_FULL_LEAD, BRANCH_MIN_BUDGET_S,
                                               BRANCH_RUN_FRACTION, _branch_plan, _lead)

    rising = {32: 0.004, 64: 0.005}  # 8,000 and 12,800 samples/s: a lead of 0.6
    flat = {32: 0.004, 64: 0.0076}  # 8,000 and 8,421 samples/s: a lead of about 0.05
    assert _lead(rising, [32, 64]) == pytest.approx(0.6)
    assert _lead(flat, [32, 64]) == pytest.approx(8 / 7.6 - 1)
    assert _lead(flat, [32, 64, 128]) == math.inf  # 128 not timed: the branches measure it
    assert _lead({32: 0.004, 64: 0.01}, [32, 64]) == 0  # 64 slower: nothing to gain
    # a run whose 2 % is 0.3 s at 12,800/s: the rising curve's 2 x 512 samples (about 0.16 s
    # predicted) fit; the flat one's share, 0.05 / 0.3 of it, is below the 0.1 s always allowed,
    # less than its branches' 0.19 s: none
    run_samples = 0.3 / BRANCH_RUN_FRACTION * 12_800
    assert BRANCH_FULL_LEAD == 0.3 and BRANCH_MIN_BUDGET_S == 0.1
    assert _branch_plan([32, 64], rising, 3000, run_samples) == ([32, 64], 512)
    assert _branch_plan([32, 64], flat, 3000, run_samples) is None
    # a run 10 x longer gives the flat curve's share room for them
    assert _branch_plan([32, 64], flat, 3000, 10 * run_samples) == ([32, 64], 1024)
    # the sizes are dropped from the top until the rest fit; a curve flat up to 64 but a size
    # above it not timed keeps the whole budget while that size is in the plan
    assert _branch_plan([32, 64, 128], flat, 3000, 10 * run_samples)[0] == [32, 64, 128]


def test_a_flat_start_throughput_runs_no_start_branches_in_a_short_run(monkeypatch):
    """The same flat curve fit() sees (flat_throughput without its whole budget): the branches'
    predicted time is over the flat curve's share of a short run, so none run, recorded as such,
    and the run starts at the calibrated size."""
    from batchtrain.training import calibrate as calibrate_module
    flat_throughput(monkeypatch, 2_000.0, noise=False)
    monkeypatch.setattr(calibrate_module, "BRANCH_FULL_LEAD", 0.3)  # the default, again
    monkeypatch.setattr(Adaptive, "_start_top", lambda self, samples: 64)  # sizes timed: 32, 64
    x, y = three_feature_classes(3000)
    trainer = Trainer("mlp", seed=0)
    trainer.fit(x, y, batch_size="auto", epochs=30, callbacks=[StopAtBegin()])
    policy = trainer.state_.policy
    assert sorted(trainer.state_.calibration.seconds) == [32, 64]
    assert trainer.state_.calibration.branches is None
    assert policy.calibration["branched"]["sizes"] == []
    assert policy.batch_size() == 32
    monkeypatch.setattr(calibrate_module, "BRANCH_FULL_LEAD", 0.0)  # the whole budget: they run
    trainer = Trainer("mlp", seed=0)
    trainer.fit(x, y, batch_size="auto", epochs=30, callbacks=[StopAtBegin()])
    assert sorted(trainer.state_.calibration.branches.sizes) == [32, 64]


def three_feature_classes(n: int) -> tuple[np.ndarray, np.ndarray]:
    """n samples of 20 normal features, labelled by the sign of the first three's sum."""
    x = np.random.default_rng(0).normal(size=(n, 20)).astype(np.float32)
    return x, (x[:, :3].sum(axis=1) > 0).astype(np.int64)


def flat_throughput(monkeypatch, samples_per_s: float = 10_000.0, noise: bool = True):
    """The start's timings replaced by a flat throughput curve, so the calibrated first size is
    the smallest (goodput = rate x efficiency, which falls with the batch) on any machine: what
    the start then branches at does not depend on this machine's speed. noise False also drops
    the measured noise scale. The start's branch budget is then whole, as where the curve rises
    (a flat one gets a share: calibrate.py _lead; its own tests are above), and its 0.1 s is
    allowed however short the run (these are: at most a tenth of it otherwise)."""
    from batchtrain.training import calibrate as calibrate_module
    measured = calibrate_module.calibrate
    monkeypatch.setattr(calibrate_module, "BRANCH_FULL_LEAD", 0.0)
    monkeypatch.setattr(calibrate_module, "BRANCH_MIN_RUN_FRACTION", math.inf)

    def calibrate_flat(*args, **options):
        calibration = measured(*args, **options)
        calibration.seconds = {size: size / samples_per_s for size in calibration.seconds}
        calibration.noise = calibration.noise if noise else None
        return calibration

    monkeypatch.setattr(calibrate_module, "calibrate", calibrate_flat)


def test_fit_with_auto_branches_from_the_start_and_keeps_the_chosen_branch(monkeypatch):
    flat_throughput(monkeypatch)  # first size 32, so the start has sizes to branch at
    x, y = three_feature_classes(20_000)
    seen = {}

    class AtBegin(Callback):  # after the calibration and the branches, before the first step
        def on_fit_begin(self, trainer, info):
            seen["weights"] = [p.detach().clone() for p in trainer.model_.parameters()]
            seen["moments"] = dict(trainer.optimizer_.state)
            trainer.stop_training = True

    trainer = Trainer("mlp", seed=0)
    trainer.fit(x, y, batch_size="auto", epochs=200, callbacks=[AtBegin()])  # a long budget
    calibration = trainer.state_.calibration
    branches = calibration.branches
    assert branches is not None and len(branches.sizes) >= 2 and branches.fastest is not None
    assert f"branched at {', '.join(map(str, sorted(branches.sizes)))}" in calibration.describe()
    assert "probe loss decrease per s" in calibration.describe()
    policy = trainer.state_.policy
    # the climb (a round again from the winner while the largest size wins) depends on this
    # machine's clock: every round's choice is kept, and the last one's is the first batch
    rounds = [branches, *calibration.climbs]
    choices = [BranchDecisions().first(round_) for round_ in rounds]
    assert [round_.kept for round_ in rounds] == choices and choices[0] is not None
    assert policy.floor == policy.batch_size() == [c for c in choices if c is not None][-1]
    assert f"kept the branch at {branches.kept}" in calibration.describe()
    initial = Trainer("mlp", seed=0).prepare(x, y)  # the same initialisation, never branched
    assert any(not torch.equal(ours, theirs)
               for ours, theirs in zip(seen["weights"], initial.model_.parameters()))
    # Adam stepped as often as the kept branches did, round after round
    steps = sum(-(-round_.samples // round_.kept) for round_ in rounds if round_.kept is not None)
    assert {int(state["step"]) for state in seen["moments"].values()} == {steps}


def test_the_kept_start_branches_are_the_runs_first_steps_and_the_epoch_goes_on_after_them(
        monkeypatch):
    """A kept branch trained on the first samples of the run's first epoch, in its order: the
    run counts them and goes on after them, so auto that keeps B and never moves trains
    bitwise as fixed B (no dropout here: a branch's draws are its own), every sample once an
    epoch. Nothing branches or decides during training (branches would keep other samples)."""
    flat_throughput(monkeypatch, 1e6)  # first size 32, and branches within any run's budget
    monkeypatch.setattr(Adaptive, "branches_due", lambda self: None)
    # nor does the start's re-read move the size (it reads this machine's step times: Adaptive.
    # _reread_start), which once made the kept 32 a 64 after the first 10 steps
    monkeypatch.setattr(Adaptive, "_reread_start", lambda self: setattr(self, "start_reread", True))
    start_sizes = Adaptive.branch_sizes  # one round (a climb would step at a second size)
    monkeypatch.setattr(Adaptive, "branch_sizes", lambda self, samples: [] if (
        self.calibration or {}).get("branched") else start_sizes(self, samples))
    x, y = three_feature_classes(6000)
    seen = {}

    class AtBegin(Callback):
        def on_fit_begin(self, trainer, info):
            seen.update(position=trainer.state_.position,
                        samples_seen=trainer.state_.samples_seen)

    def model():
        torch.manual_seed(5)
        return nn.Sequential(nn.Linear(20, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, 2))

    for shuffle in (True, False):
        auto = Trainer(model(), optimizer="adam", lr=1e-3, seed=2)
        auto.fit(x, y, batch_size="auto", epochs=2, shuffle=shuffle, callbacks=[AtBegin()])
        calibration, run = auto.state_.calibration, auto.state_
        size = run.policy.batch_size()
        assert calibration.branches.kept == size and not calibration.climbs
        assert calibration.trained == calibration.branches.samples > 0
        assert seen == {"position": calibration.trained, "samples_seen": calibration.trained}
        assert run.samples_seen == 2 * len(x) and run.policy.floor == size
        fixed = Trainer(model(), optimizer="adam", lr=1e-3, seed=2)
        fixed.fit(x, y, batch_size=size, epochs=2, shuffle=shuffle)
        assert (run.samples_seen, run.step) == (fixed.state_.samples_seen, fixed.state_.step)
        for ours, theirs in zip(auto.model_.state_dict().values(),
                                fixed.model_.state_dict().values()):
            assert torch.equal(ours, theirs)


def test_under_a_warm_up_the_start_branches_are_all_undone(monkeypatch):
    """They train at the optimizer's lr, which a warm-up does not start at: nothing is kept."""
    flat_throughput(monkeypatch)
    x, y = three_feature_classes(20_000)
    seen = {}

    class AtBegin(Callback):
        def on_fit_begin(self, trainer, info):
            seen["weights"] = [p.detach().clone() for p in trainer.model_.parameters()]
            trainer.stop_training = True

    trainer = Trainer("mlp", seed=0, lr_schedule="warmup:1e+constant")
    trainer.fit(x, y, batch_size="auto", epochs=200, callbacks=[AtBegin()])
    branches = trainer.state_.calibration.branches
    assert branches is not None and branches.fastest is not None and branches.kept is None
    initial = Trainer("mlp", seed=0).prepare(x, y)
    for ours, theirs in zip(seen["weights"], initial.model_.parameters()):
        assert torch.equal(ours, theirs)


def test_a_start_over_the_branch_budget_runs_no_branches_and_keeps_the_calibrated_size(monkeypatch):
    from batchtrain.training import calibrate as calibrate_module
    monkeypatch.setattr(calibrate_module, "BRANCH_MIN_BUDGET_S", 0.0)  # 2 % of a short run only
    flat_throughput(monkeypatch, noise=False)  # first size 32: sizes to branch at, on any machine
    x, y = three_feature_classes(4000)
    trainer = Trainer("mlp", seed=0)
    trainer.fit(x, y, batch_size="auto", epochs=1, callbacks=[StopAtBegin()])  # a short run
    policy = trainer.state_.policy
    assert trainer.state_.calibration.branches is None
    assert policy.calibration["branched"]["sizes"] == []  # skipped, recorded as such
    # the calibrated size stays; the branches during training are paced by their own
    # predicted cost (batching/branched.py), not by these that did not run
    assert policy.branches.cost_s == 0.0 and policy.floor == 32 and policy.batch_size() == 32


class StopAtBegin(Callback):
    """Stops fit() before its first step: what the start measured is all there is."""

    def on_fit_begin(self, trainer, info):
        trainer.stop_training = True



def test_the_start_branches_again_from_the_winner_while_the_largest_size_wins(monkeypatch):
    """Each round's largest size wins (a fake branch); the climb goes on from it, on other
    samples, until the start's top or the budget less what the rounds cost beyond kept steps."""
    from batchtrain.training import calibrate as calibrate_module
    flat_throughput(monkeypatch)  # the calibrated first size is the smallest
    model, x, y, _ = noisy_linear_regression(n=1 << 15)
    rounds, draws, lengths = [], [], []

    def top_wins(model, loss_fn, optimizer, inputs, targets, probe_x, probe_y, sizes, **options):
        rounds.append(list(sizes))
        lengths.append((len(inputs), len(probe_x)))
        gains = {size: 0.1 * size for size in sizes}  # improvement per second grows with size
        return Branches(list(sizes), 1.0, gains, {size: 1.0 for size in sizes}, len(inputs),
                        0.02 * len(sizes), kept=max(sizes))

    def draw(n, start):
        draws.append((start, n))
        return x[start:start + n], y[start:start + n]

    monkeypatch.setattr(calibrate_module, "branch", top_wins)
    policy = Adaptive(min_batch=32, max_batch=1024)
    policy.set_limit(4096)
    optimizer = torch.optim.Adam(model.parameters())
    calibration = calibrate_policy(policy, model, F.mse_loss, draw, len(x), optimizer=optimizer,
                                   run_samples=math.inf)
    assert min(rounds[0]) == policy.calibration["chosen"] and len(rounds) >= 2
    assert all(sizes == sorted(sizes, reverse=True) for sizes in rounds)  # the largest first
    for before, after in zip(rounds, rounds[1:]):
        assert min(after) == max(before)  # from the last winner, upwards
    assert max(rounds[-1]) == 1024  # the top: the budget (3 s) was never near
    assert policy.batch_size() == policy.floor == max(rounds[-1])
    # the pool, then each round the samples after the kept branches', its probe set past them
    assert draws[0][0] == 0 and len(draws) == len(rounds) + 1
    trained = 0
    for (start, n), (samples, probe) in zip(draws[1:], lengths):
        assert start == trained and n == samples + probe
        trained += samples
    assert calibration.trained == trained and trained <= len(x)
    assert calibration.branches.sizes == rounds[0]
    assert [climb.sizes for climb in calibration.climbs] == rounds[1:]
    assert "the largest won, so branched again at" in calibration.describe()
    # spent: each round's 0.02 s per size, less the kept one; the budget: BRANCH_BUDGET_S
    spent = sum(0.02 * (len(sizes) - 1) for sizes in rounds[:-1])
    assert spent <= calibrate_module.BRANCH_BUDGET_S

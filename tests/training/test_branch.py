"""The branched measurement (training/branch.py): against noisy linear regression, whose critical
batch is known in closed form; the fit on exact improvements; the goodput pick; and that
branching changes nothing of the run."""
import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from batchtrain.training.branch import Branches, branch, critical_batch
from helpers import noisy_linear_regression


def test_the_line_through_exact_improvements_gives_the_critical_batch():
    samples, b_crit = 4096, 300.0
    exact = {size: samples * 0.01 / (size + b_crit) for size in (16, 64, 256, 1024)}
    assert critical_batch(exact) == pytest.approx(b_crit)
    flat = {size: 1.0 for size in (16, 64, 256)}  # larger batches lose nothing per sample
    assert critical_batch(flat) == math.inf
    assert critical_batch({16: 1.0}) is None and critical_batch({16: -1.0, 32: 0.5}) is None


def test_fastest_is_the_largest_improvement_per_second():
    measured = Branches([32, 128, 512], 1.0, {32: 0.30, 128: 0.25, 512: 0.10},
                        {32: 3.0, 128: 1.0, 512: 0.5}, 4096, 5.0)
    assert measured.fastest == 128  # 0.1/s, 0.25/s, 0.2/s
    assert Branches([32], 1.0, {32: -0.1}, {32: 1.0}, 32, 1.0).fastest is None


# noisy linear regression (helpers.py): at w0 the loss is a quadratic with Hessian 2 I, so one SGD
# step of batch B and lr e improves it, in expectation, by e |G|^2 - e^2 (|G|^2 + tr(Sigma) / B):
# at the best e, |G|^2 / 4 x B / (B + B_noise) with B_noise = tr(Sigma) / |G|^2 = (d + 1) + d sigma^2
# (McCandlish et al. 2018, eq. 2.7-2.9 with H = 2 I).


def test_branches_recover_the_closed_form_critical_batch_of_noisy_linear_regression():
    model, x, y, expected, probe_x, probe_y = noisy_linear_regression(sigma=3.0, n=1 << 16,
                                                                      probe=1 << 12)
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    lrs, repeats, per_sample = (0.05, 0.2), 400, {}
    draws = iter(range(0, len(x), 1))
    for size in (8, 32, 128, 512):
        # the lr tuned per batch, as Merrill et al. do: one step on a quadratic improves the loss
        # by a e - b e^2 in expectation, so the mean improvement at two lrs gives its peak a^2/4b
        gains = {lr: 0.0 for lr in lrs}
        for _ in range(repeats):
            start = next(draws) * 997 % (len(x) - size)  # a fresh batch each repeat
            for lr in lrs:
                measured = branch(model, F.mse_loss, optimizer, x[start:start + size],
                                  y[start:start + size], probe_x, probe_y, [size],
                                  lr_factor=lambda _, lr=lr: lr)
                gains[lr] += measured.improvement[size] / repeats
        (e1, e2), (g1, g2) = lrs, (gains[lrs[0]], gains[lrs[1]])
        b = (g1 / e1 - g2 / e2) / (e2 - e1)  # g = a e - b e^2
        a = g1 / e1 + b * e1
        per_sample[size] = a * a / (4 * b) / size  # the best step's improvement per sample
        # |G|^2 / 4 = 1: the best step improves the loss by B / (B + B_noise), 1 / (B + B_noise)
        # per sample
        assert per_sample[size] == pytest.approx(1 / (size + expected), rel=0.2), size
    assert critical_batch(per_sample) == pytest.approx(expected, rel=0.25)  # 101 samples


def test_branching_changes_nothing_of_the_run():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.5),
                          nn.Linear(16, 3))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    x, y = torch.randn(256, 8), torch.randint(0, 3, (256,))
    for _ in range(3):  # optimizer state to protect
        optimizer.zero_grad()
        F.cross_entropy(model(x[:64]), y[:64]).backward()
        optimizer.step()
    before = {name: value.clone() for name, value in model.state_dict().items()}
    moments = {key: value.clone() for key, value in optimizer.state[model[0].weight].items()}
    rng = torch.get_rng_state()
    measured = branch(model, F.cross_entropy, optimizer, x, y, x[:64], y[:64], [16, 64, 256],
                      lr_factor=lambda size: size / 16)
    assert sorted(measured.improvement) == [16, 64, 256] and measured.samples == 256
    assert all(seconds > 0 for seconds in measured.seconds.values())
    for name, value in model.state_dict().items():
        assert torch.equal(value, before[name]), name
    for key, value in optimizer.state[model[0].weight].items():
        assert torch.equal(value, moments[key]), key
    assert optimizer.param_groups[0]["lr"] == 0.01 and model.training
    assert torch.equal(torch.get_rng_state(), rng)
    # the same branch again measures the same: the snapshot, the samples and the dropout draws
    again = branch(model, F.cross_entropy, optimizer, x, y, x[:64], y[:64], [16, 64, 256],
                   lr_factor=lambda size: size / 16)
    assert again.improvement == measured.improvement


def keep_test_setup():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.5),
                          nn.Linear(16, 3))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    x = torch.randn(512, 8)
    y = (x[:, 0] > x[:, 1]).long() + (x[:, 2] > 1).long()
    return model, optimizer, x, y


@pytest.mark.parametrize("kept", [16, 64, 256])  # held (a copy), held, the last (the model's own)
def test_the_kept_branch_is_the_run_trained_at_that_size(kept):
    """keep names one size: the model and optimizer end as a hand-written loop of that size over
    the same samples, with the same lr and dropout draws, from the same start."""
    model, optimizer, x, y = keep_test_setup()
    reference = copy.deepcopy((model, optimizer))
    measured = branch(model, F.cross_entropy, optimizer, x, y, x[:64], y[:64], [16, 64, 256],
                      lr_factor=lambda size: size / 64, seed=7,
                      keep=lambda so_far: kept if kept in so_far.sizes else None)
    assert measured.kept == kept and measured.improvement[kept] > 0
    assert measured.overhead_s == pytest.approx(measured.cost_s - measured.seconds[kept])
    hand_model, hand_optimizer = reference
    hand_optimizer.param_groups[0]["lr"] = 0.01 * kept / 64
    torch.manual_seed(7)
    hand_model.train()
    for start in range(0, len(x), kept):
        hand_optimizer.zero_grad()
        F.cross_entropy(hand_model(x[start:start + kept]), y[start:start + kept]).backward()
        hand_optimizer.step()
    for ours, theirs in zip(model.state_dict().values(), hand_model.state_dict().values()):
        assert torch.equal(ours, theirs)
    for ours, theirs in zip(optimizer.state.values(), hand_optimizer.state.values()):
        assert all(torch.equal(ours[key], theirs[key]) for key in ours)
    assert optimizer.param_groups[0]["lr"] == 0.01  # the run's lr, as before the branches


def test_a_branch_that_did_not_lower_the_loss_or_was_not_held_is_undone():
    model, optimizer, x, y = keep_test_setup()
    before = {name: value.clone() for name, value in model.state_dict().items()}
    worse = branch(model, F.cross_entropy, optimizer, x, y, x[:64], y[:64], [16, 64],
                   lr_factor=lambda size: -1.0, keep=lambda so_far: 16)  # ascent: loss rises
    assert worse.improvement[16] < 0 and worse.kept is None
    late = branch(model, F.cross_entropy, optimizer, x, y, x[:64], y[:64], [16, 64, 256],
                  keep=lambda so_far: 16 if len(so_far.sizes) == 3 else None)  # never held
    assert late.kept is None and late.overhead_s == late.cost_s
    for name, value in model.state_dict().items():
        assert torch.equal(value, before[name]), name
    assert optimizer.state == {} or all(not state for state in optimizer.state.values())


def test_enough_leaves_the_remaining_sizes_out_and_the_last_one_run_is_the_models_own():
    model, optimizer, x, y = keep_test_setup()
    asked = []

    def enough(so_far):
        asked.append(list(so_far.sizes))
        return len(so_far.sizes) == 2

    measured = branch(model, F.cross_entropy, optimizer, x, y, x[:64], y[:64], [256, 64, 16],
                      keep=lambda so_far: so_far.sizes[-1], enough=enough)
    assert measured.sizes == [256, 64] and set(measured.improvement) == {256, 64}
    assert asked == [[256], [256, 64]]  # never after the last branch run
    assert measured.kept == (64 if measured.improvement[64] > 0 else None)


def test_a_choice_that_flips_back_to_an_earlier_branch_gets_it():
    """Held: every branch keep named, not only the latest (the start runs from the largest size
    down, where first_choice can name 256, then 64, then 256 again)."""
    model, optimizer, x, y = keep_test_setup()
    answers = iter([256, 64, 256])
    reference_model, reference_optimizer = copy.deepcopy(model), None
    measured = branch(model, F.cross_entropy, optimizer, x, y, x[:64], y[:64], [256, 64, 16],
                      keep=lambda so_far: next(answers))
    assert measured.improvement[256] > 0 and measured.kept == 256
    # the same branch alone, kept: the model ends where it did
    reference_optimizer = torch.optim.Adam(reference_model.parameters(), lr=0.01)
    alone = branch(reference_model, F.cross_entropy, reference_optimizer, x, y, x[:64], y[:64],
                   [256], keep=lambda so_far: 256)
    assert alone.kept == 256
    for ours, theirs in zip(model.state_dict().values(), reference_model.state_dict().values()):
        assert torch.equal(ours, theirs)


# -- during training (Brancher): the trainer runs the branches the policy asks for after a step

class Asking:
    """A policy stand-in that asks for branches at fixed sizes and records what it was told."""

    def __init__(self, sizes, length=1, current=64):
        self.sizes, self.length, self.current, self.told = sizes, length, current, []

    def branches_due(self):
        return (self.sizes, self.length) if self.sizes else None

    def batch_size(self):
        return self.current

    def observe_branches(self, branches):
        self.told.append(branches)


def brancher(max_physical=256, samples=10_000):
    from batchtrain.training.branch import Brancher
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 1))
    x, y = torch.randn(samples, 4), torch.randn(samples, 1)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    drawn = []

    def draw(n, seed):
        drawn.append((n, seed))
        return x[:n], y[:n]

    factors = []

    def lr_factor(size, current):
        factors.append((size, current))
        return math.sqrt(size / current)

    return Brancher(model, F.mse_loss, optimizer, draw, samples, max_physical, lr_factor), drawn, factors


def test_the_brancher_runs_what_the_policy_asks_within_the_memory_ceiling():
    run, drawn, factors = brancher(max_physical=128)
    policy = Asking([32, 64, 128, 256], length=2)
    branches = run(policy, seed=5)
    # 256 is over the ceiling; the current size (64) runs last
    assert branches.sizes == [32, 128, 64] and policy.told == [branches]
    assert branches.kept is None  # a policy without branch_choice keeps nothing
    # the probe set: half a branch's samples (2,048 / 2), under PROBE_SAMPLES and a quarter
    assert branches.samples == 8 * 128 * 2 and drawn == [(8 * 128 * 2 + 1024, 5)]
    assert sorted(set(factors)) == [(32, 64), (64, 64), (128, 64)]  # the lr moving there takes
    assert run(Asking([]), seed=6) is None and run(Asking([256]), seed=6) is None
    assert len(drawn) == 1  # nothing drawn when there is nothing to branch


def test_branches_are_at_most_half_the_training_samples():
    run, drawn, _ = brancher(samples=3000)
    branches = run(Asking([64, 128], length=64), seed=0)
    assert branches.samples == 1500 and drawn == [(1500 + 750, 0)]  # probe: a quarter


def test_a_run_whose_branches_never_move_is_bitwise_the_fixed_run(monkeypatch):
    """auto with branches during training (every move refused, no branch kept) trains exactly as
    Fixed(32): undone branches leave the weights, the optimizer, BatchNorm's statistics, dropout's
    RNG and the data order as they were, and no step is measured."""
    from batchtrain import Trainer
    from batchtrain.batching import branched
    from batchtrain.batching.adaptive import Adaptive
    monkeypatch.setattr(branched, "MIN_BRANCH_GAIN", math.inf)
    monkeypatch.setattr(branched, "BRANCH_OVERHEAD", 1.0)  # as often as they cost: several runs
    monkeypatch.setattr(Adaptive, "branch_choice", lambda self, branches: None)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(2000, 8, generator=generator)
    y = (x[:, 0] - x[:, 1] > 0).long()

    def model():
        torch.manual_seed(3)
        return nn.Sequential(nn.Linear(8, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Dropout(0.2),
                             nn.Linear(32, 2))

    results = {}
    for name, batch_size in [("fixed", 32), ("auto", Adaptive(min_batch=32, initial=32))]:
        trainer = Trainer(model(), optimizer="adam", lr=1e-3, seed=1, max_physical_batch=512)
        trainer.fit(x, y, batch_size=batch_size, epochs=2)
        results[name] = trainer
    auto = results["auto"].state_.policy
    assert auto.branching and auto.last_decision["reason"].startswith("branched")
    assert auto.branches.cost_s > 0  # branches ran
    assert all("noise_scale" not in step for step in results["auto"].history_.steps)
    for ours, theirs in zip(results["auto"].model_.state_dict().values(),
                            results["fixed"].model_.state_dict().values()):
        assert torch.equal(ours, theirs)


def test_kept_branches_during_training_are_the_runs_own_next_steps(monkeypatch):
    """Branches during training train on the epoch's next samples, and the run skips a kept
    one's: auto that keeps its size at every branch (moves refused) trains bitwise as fixed 32,
    with the same steps and samples counted, every sample once an epoch (no dropout: a branch's
    draws are its own)."""
    from batchtrain import Trainer
    from batchtrain.batching import branched
    from batchtrain.batching.adaptive import Adaptive
    from batchtrain.training import branch as branch_module
    monkeypatch.setattr(branched, "MIN_BRANCH_GAIN", math.inf)
    monkeypatch.setattr(branched, "BRANCH_OVERHEAD", 1.0)  # as often as they cost: several runs
    ran = []
    original = branch_module.Brancher.__call__

    def recorded(self, policy, seed, walk=None):
        branches = original(self, policy, seed, walk)
        if branches is not None:
            ran.append(branches)
        return branches

    monkeypatch.setattr(branch_module.Brancher, "__call__", recorded)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(2000, 8, generator=generator)
    y = (x[:, 0] - x[:, 1] > 0).long()

    def model():
        torch.manual_seed(3)
        return nn.Sequential(nn.Linear(8, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, 2))

    results = {}
    for name, batch_size in [("fixed", 32), ("auto", Adaptive(min_batch=32, initial=32))]:
        trainer = Trainer(model(), optimizer="adam", lr=1e-3, seed=1, max_physical_batch=512)
        trainer.fit(x, y, batch_size=batch_size, epochs=2)
        results[name] = trainer
    kept = [branches for branches in ran if branches.kept is not None]
    assert kept and all(branches.from_run and branches.kept == 32 for branches in kept)
    auto, fixed = results["auto"].state_, results["fixed"].state_
    assert (auto.step, auto.samples_seen) == (fixed.step, fixed.samples_seen) == (126, 4000)
    assert len(auto.history.steps) == 126 - sum(branches.samples // 32 for branches in kept)
    for ours, theirs in zip(results["auto"].model_.state_dict().values(),
                            results["fixed"].model_.state_dict().values()):
        assert torch.equal(ours, theirs)

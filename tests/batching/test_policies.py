"""Batch-size policies: the contract every built-in policy keeps over a simulated run (sizes,
exact restore), and policies driven through a whole Trainer.fit: accumulation up to the logical
batch, the memory ceiling as the cap, and the learning rate following the batch it changes to."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from batchtrain import Trainer
from batchtrain.batching.base import BatchSizePolicy
from batchtrain.batching.fixed import Fixed
from batchtrain.batching.schedule import Doubling, Piecewise, Ramp


# -- accumulation -------------------------------------------------------------------------------

def _model(seed=0, outputs=3):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 12), nn.Tanh(), nn.Linear(12, outputs))


# -- the contract: every built-in policy over a simulated run (conftest.py's `simulate`) ---------

EPOCH = 100  # samples per epoch in the simulated runs (conftest.py's EPOCH)


@pytest.mark.parametrize("policy, expected", [
    (Fixed(30), [30, 30, 30, 10] * 2),
    (Piecewise([10, 25, 50], ["1e", 150]), [10] * 10 + [25, 25] + [50]),
    (Ramp(10, 50, "1e"), None),
    (Doubling(20, "1e", 60), [20] * 5 + [40, 40, 20]),
], ids=["fixed", "piecewise", "ramp", "doubling"])
def test_policy_sizes_over_a_run(simulate, policy, expected):
    sizes = simulate(policy, 2 * EPOCH)
    assert sum(sizes) == 2 * EPOCH
    if expected is not None:
        assert sizes == expected
    else:  # the ramp grows monotonically from 10 to 50 within the first epoch, then stays
        first_epoch = sizes[:next(i for i, _ in enumerate(sizes) if sum(sizes[:i + 1]) >= EPOCH)]
        assert first_epoch[0] == 10 and first_epoch == sorted(first_epoch)
        assert policy.batch_size() == 50


@pytest.mark.parametrize("make", [
    lambda: Fixed(30), lambda: Piecewise([10, 25, 50], ["1e", 150]), lambda: Ramp(10, 50, "1e"), lambda: Doubling(20, "1e", 60)],
                         ids=["fixed", "piecewise", "ramp", "doubling"])
def test_policy_restored_from_state_dict_continues_identically(simulate, make):
    uninterrupted = simulate(make(), 2 * EPOCH)
    original = make()
    before = simulate(original, 70)  # stops mid-epoch, at a step boundary
    restored = make()
    restored.load_state_dict(original.state_dict())
    after = simulate(restored, 2 * EPOCH, start=sum(before), observe_start=False)
    assert before + after == uninterrupted
    assert isinstance(restored, BatchSizePolicy)


@pytest.mark.parametrize("task", ["multiclass", "regression"])
def test_accumulated_step_equals_one_step_on_the_whole_batch(task):
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(10, 6, generator=generator)
    y = torch.randint(0, 3, (10,), generator=generator) if task == "multiclass" else torch.randn(10, 2)
    outputs = 3 if task == "multiclass" else 2
    # physical cap 3 on a logical batch of 10: micro-batches of 3, 3, 3 and an uneven 1
    trainer = Trainer(_model(0, outputs), optimizer="sgd", lr=0.5, max_physical_batch=3, seed=0)
    history = trainer.fit(x, y, batch_size=10, epochs=1, shuffle=False)
    assert history.steps[0]["accumulation_steps"] == 4 and history.steps[0]["physical_batch"] == 3
    reference = _model(0, outputs)
    loss_fn = F.cross_entropy if task == "multiclass" else F.mse_loss
    loss_fn(reference(x), y).backward()
    with torch.no_grad():
        for parameter in reference.parameters():
            parameter -= 0.5 * parameter.grad
    for ours, theirs in zip(trainer.model_.parameters(), reference.parameters()):
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)
    # the training loss reported is the logical batch's mean loss
    assert history[0]["loss"] == pytest.approx(loss_fn(_model(0, outputs)(x), y).item(), rel=1e-5)


def test_batch_size_max_uses_the_memory_ceiling():
    x, y = torch.randn(50, 6), torch.randint(0, 3, (50,))
    trainer = Trainer(_model(), max_physical_batch=20, seed=0)
    history = trainer.fit(x, y, batch_size="max", epochs=1)
    assert [step["samples"] for step in history.steps] == [20, 20, 10]
    assert {step["batch_size"] for step in history.steps} == {20}  # the logical batch asked for


def test_memory_ceiling_is_measured_and_reported_by_default():
    x, y = torch.randn(50, 6), torch.randint(0, 3, (50,))
    trainer = Trainer(_model(), seed=0, memory_budget="64MiB")
    trainer.fit(x, y, batch_size=16, epochs=1)
    assert trainer.memory_.budget_bytes == 64 * 2**20 and trainer.memory_.max_batch > 1000
    assert trainer.max_physical_batch_ == trainer.memory_.max_batch


# -- the learning rate follows the batch ---------------------------------------------------------

def test_trainer_couples_lr_to_the_batch_at_the_step_it_changes():
    x, y = torch.randn(64, 6), torch.randint(0, 3, (64,))
    trainer = Trainer(_model(), optimizer="adam", lr=0.01, seed=0)  # adam: sqrt by default
    history = trainer.fit(x, y, batch_size=Doubling(8, "1e", 32), epochs=3)
    settings = [(step["batch_size"], step["lr"]) for step in history.steps]
    expected = [(8, 0.01)] * 8 + [(16, 0.01 * math.sqrt(2))] * 4 + [(32, 0.02)] * 2
    assert [size for size, _ in settings] == [size for size, _ in expected]
    np.testing.assert_allclose([lr for _, lr in settings], [lr for _, lr in expected])
    assert trainer.optimizer_.param_groups[0]["lr"] == pytest.approx(0.02)
    assert [logs["batch_size"] for logs in history] == [8, 16, 32]


def test_lr_schedule_keyed_to_samples_is_the_same_under_any_batch_schedule():
    x, y = torch.randn(96, 6), torch.randint(0, 3, (96,))
    lr_by_samples = []
    for batch_size in (8, Doubling(8, 16, 64)):
        trainer = Trainer(_model(), optimizer="sgd", lr=0.1, lr_scaling="none",
                          lr_schedule="warmup:0.5e+cosine", seed=0)
        history = trainer.fit(x, y, batch_size=batch_size, epochs=2)
        # the lr of a step is set from the samples seen before it
        lr_by_samples.append({step["samples_seen"] - step["samples"]: step["lr"]
                              for step in history.steps})
    shared = set(lr_by_samples[0]) & set(lr_by_samples[1])
    assert len(shared) >= 4
    for samples in shared:
        assert lr_by_samples[0][samples] == pytest.approx(lr_by_samples[1][samples])


def test_second_fit_starts_from_the_users_lr_again():
    x, y = torch.randn(32, 6), torch.randint(0, 3, (32,))
    trainer = Trainer(_model(), optimizer="sgd", lr=0.1, seed=0)
    trainer.fit(x, y, batch_size=Doubling(4, "1e", 16), epochs=3)
    history = trainer.fit(x, y, batch_size=8, epochs=1)
    assert {step["lr"] for step in history.steps} == {0.1}


def test_adaptive_in_the_trainer_measures_noise_and_is_capped_by_memory():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(2000, 6, generator=generator)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0.5).long()
    from batchtrain.batching.adaptive import Adaptive
    policy = Adaptive(rule="noise-scale", min_batch=8, initial=8, update_every=200)
    trainer = Trainer(_model(), optimizer="sgd", lr=0.05, max_physical_batch=40, seed=0,
                      lr_scaling="adascale")
    history = trainer.fit(x, y, batch_size=policy, epochs=3)
    with_noise = [step for step in history.steps if "noise_scale" in step]
    assert len(with_noise) > len(history.steps) // 2
    every = policy.stats_every  # measured steps are split in two micro-batches, the others not
    assert every > 1 and trainer.noise_.updates == len(range(0, len(history.steps), every))
    for index, step in enumerate(history.steps):
        split = 2 if index % every == 0 and step["samples"] >= 2 else 1
        assert step["accumulation_steps"] == max(split, -(-step["samples"] // 40))
    sizes = [step["batch_size"] for step in history.steps]
    assert max(sizes) > 8 and max(sizes) <= 2000  # it grew from 8, within the bounds
    assert policy.upper == 40  # the memory ceiling (here: max_physical_batch) is its limit
    lrs = {round(step["lr"] / 0.05, 6) for step in history.steps}
    assert len(lrs) > 1 and min(lrs) >= 1.0  # AdaScale's gain: between 1 and B/B0


# -- memory budgets as fit(memory_budget=...) takes them (batching/budget.py's parse_budget) ------

@pytest.mark.parametrize("text, expected", [
    ("8GiB", 8 * 2**30), ("512MiB", 512 * 2**20), ("2GB", 2 * 10**9), ("1000000", 10**6),
    ("0.25", 0.25), (0.5, 0.5), (4096, 4096), (None, None)])
def test_memory_budget_forms(text, expected):
    from batchtrain.batching.budget import parse_budget
    assert parse_budget(text) == expected

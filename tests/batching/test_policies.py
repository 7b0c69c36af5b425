"""Batch-size policies: sizes over a run, restore, specs; accumulation; lr coupling in the trainer."""
import math
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from batchtrain import Trainer
from batchtrain.batching.base import BatchSizePolicy, StepStats
from batchtrain.batching.coupling import default_lr_scaling, lr_scale
from batchtrain.batching.fixed import Fixed
from batchtrain.batching.schedule import Doubling, Piecewise, Ramp
from batchtrain.batching.spec import MAX, parse_batch_size
from batchtrain.data.iterator import BatchIterator
from batchtrain.data.sources import TensorSource
from batchtrain.errors import ConfigError

EPOCH = 100  # samples per epoch in the simulated runs


def simulate(policy: BatchSizePolicy, samples: int, start: int = 0,
             observe_start: bool = True) -> list[int]:
    """The sizes a policy picks until `samples` samples are seen, driven as the trainer drives it."""
    seen, sizes = start, []
    if observe_start:
        policy.observe(StepStats(seen, seen // EPOCH, EPOCH, 0))
    while seen < samples:
        size = min(policy.batch_size(), EPOCH - seen % EPOCH)  # epochs end on their last sample
        seen += size
        sizes.append(size)
        policy.observe(StepStats(seen, seen // EPOCH, EPOCH, size))
    return sizes


@pytest.mark.parametrize("policy, expected", [
    (Fixed(30), [30, 30, 30, 10] * 2),
    (Piecewise([10, 25, 50], ["1e", 150]), [10] * 10 + [25, 25] + [50]),
    (Ramp(10, 50, "1e"), None),
    (Doubling(20, "1e", 60), [20] * 5 + [40, 40, 20]),
], ids=["fixed", "piecewise", "ramp", "doubling"])
def test_policy_sizes_over_a_run(policy, expected):
    sizes = simulate(policy, 2 * EPOCH)
    assert sum(sizes) == 2 * EPOCH
    if expected is not None:
        assert sizes == expected
    else:  # the ramp grows monotonically from 10 to 50 within the first epoch, then stays
        first_epoch = sizes[:next(i for i, _ in enumerate(sizes) if sum(sizes[:i + 1]) >= EPOCH)]
        assert first_epoch[0] == 10 and first_epoch == sorted(first_epoch)
        assert policy.batch_size() == 50


@pytest.mark.parametrize("make", [lambda: Fixed(30), lambda: Piecewise([10, 25, 50], ["1e", 150]),
                                  lambda: Ramp(10, 50, "1e"), lambda: Doubling(20, "1e", 60)],
                         ids=["fixed", "piecewise", "ramp", "doubling"])
def test_policy_restored_from_state_dict_continues_identically(make):
    uninterrupted = simulate(make(), 2 * EPOCH)
    original = make()
    before = simulate(original, 70)  # stops mid-epoch, at a step boundary
    restored = make()
    restored.load_state_dict(original.state_dict())
    after = simulate(restored, 2 * EPOCH, start=sum(before), observe_start=False)
    assert before + after == uninterrupted
    assert isinstance(restored, BatchSizePolicy)


def test_doubling_follows_smith_et_al_and_respects_the_cap():
    policy = Doubling(64, "1e", 512)
    sizes = {epoch: None for epoch in range(6)}
    for epoch in sizes:
        policy.observe(StepStats(epoch * EPOCH, epoch, EPOCH, 0))
        sizes[epoch] = policy.batch_size()
    assert list(sizes.values()) == [64, 128, 256, 512, 512, 512]


@pytest.mark.parametrize("spec, expected", [
    (128, Fixed(128).state_dict()),
    ("256", Fixed(256).state_dict()),
    ("max", MAX),
])
def test_spec_fixed_and_max(spec, expected):
    policy = parse_batch_size(spec)
    assert (policy if policy == MAX else policy.state_dict()) == expected


def test_spec_schedules():
    piecewise = parse_batch_size("128,256@2e,512@4e")
    assert isinstance(piecewise, Piecewise) and piecewise.sizes == [128, 256, 512]
    assert piecewise.size_at(2 * EPOCH, EPOCH) == 256 and piecewise.size_at(399, EPOCH) == 256
    assert parse_batch_size("64,128@30000").size_at(30000, EPOCH) == 128
    ramp = parse_batch_size("ramp:64,512,3e")
    assert isinstance(ramp, Ramp) and ramp.size_at(3 * EPOCH, EPOCH) == 512
    double = parse_batch_size("double:64,1e,1024")
    assert isinstance(double, Doubling) and double.size_at(2 * EPOCH, EPOCH) == 256


@pytest.mark.parametrize("spec, message", [
    ("0", "batch_size must be an integer >= 1"),
    ("big", "batch size 'big' is not valid"),
    ("128,256", "needs a start: size@duration"),
    ("128,256@2x", "2x"),
    ("ramp:64,512", "expected 3 comma-separated values"),
    ("double:64,1e,0", "batch_size must be an integer >= 1"),
    ("adaptive:guess", "rule"),
    (2.5, "batch_size must be an integer >= 1"),
])
def test_bad_specs(spec, message):
    with pytest.raises(ConfigError, match=message):
        parse_batch_size(spec)


# -- accumulation -------------------------------------------------------------------------------

def _model(seed=0, outputs=3):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 12), nn.Tanh(), nn.Linear(12, outputs))


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


# -- batch-size changes inside the trainer -------------------------------------------------------

def test_every_sample_once_per_epoch_across_a_mid_epoch_change():
    source = TensorSource(torch.arange(100.0).unsqueeze(1), torch.arange(100))
    policy = Piecewise([8, 13], [40])  # changes after 40 samples: in the middle of epoch 0
    batches = BatchIterator(source, policy.batch_size, shuffle=True, seed=3)
    seen, sizes = 0, []
    policy.observe(StepStats(0, 0, 100, 0))
    for epoch in range(2):
        labels = []
        for _, y in batches.epoch(epoch):
            labels += y.tolist()
            sizes.append(len(y))
            seen += len(y)
            policy.observe(StepStats(seen, epoch, 100, len(y)))
        assert sorted(labels) == list(range(100))
    assert sizes[:6] == [8, 8, 8, 8, 8, 13]  # the change takes effect at the next step


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


@pytest.mark.parametrize("optimizer, rule", [
    (torch.optim.SGD, "linear"), (torch.optim.Adam, "sqrt"), (torch.optim.AdamW, "sqrt"),
    (torch.optim.RMSprop, "sqrt"), (torch.optim.LBFGS, "none")])
def test_default_lr_scaling_per_optimizer(optimizer, rule):
    assert default_lr_scaling(optimizer(nn.Linear(2, 1).parameters(), lr=0.1)) == rule


def test_lr_scale_rules():
    assert lr_scale("linear", 512, 128) == 4.0
    assert lr_scale("sqrt", 512, 128) == 2.0
    assert lr_scale("none", 512, 128) == 1.0
    with pytest.raises(ConfigError, match="unknown lr scaling 'cubic'"):
        lr_scale("cubic", 2, 1)


@pytest.mark.parametrize("text, expected", [
    ("8GiB", 8 * 2**30), ("512MiB", 512 * 2**20), ("2GB", 2 * 10**9), ("1000000", 10**6),
    ("0.25", 0.25), (0.5, 0.5), (4096, 4096), (None, None)])
def test_memory_budget_forms(text, expected):
    from batchtrain.batching.budget import parse_budget
    assert parse_budget(text) == expected


def test_auto_and_adaptive_specs():
    from batchtrain.batching.adaptive import Adaptive
    auto = parse_batch_size("auto")
    assert isinstance(auto, Adaptive) and auto.rule == "goodput" and auto.wants_gradient_stats
    assert parse_batch_size("adaptive:norm-test").rule == "norm-test"


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
    assert all(step["accumulation_steps"] >= 2 for step in history.steps if step["samples"] >= 2)
    sizes = [step["batch_size"] for step in history.steps]
    assert max(sizes) > 8 and max(sizes) <= 2000  # it grew from 8, within the bounds
    assert policy.upper == 40  # the memory ceiling (here: max_physical_batch) is its limit
    lrs = {round(step["lr"] / 0.05, 6) for step in history.steps}
    assert len(lrs) > 1 and min(lrs) >= 1.0  # AdaScale's gain: between 1 and B/B0


@pytest.mark.parametrize("spec, message", [
    ("128,256@2e,512@1e", "must be positive and increasing, got 2e, 1e"),
    ("128,256@2e,512@2e", "must be positive and increasing"),
    ("128,256@0e", "must be positive and increasing"),
    ("double:64,0e,1024", "the doubling period must be longer than zero, got '0e'"),
    ("double:64,0,1024", "the doubling period must be longer than zero"),
    ("double:64,1e,32", "the cap 32 of a doubling batch size is below its start 64"),
    ("ramp:64,512,0e", "a ramp's duration must be longer than zero"),
], ids=["unordered", "repeated", "zero-switch", "zero-period", "zero-samples", "cap-below-start",
        "zero-ramp"])
def test_schedules_that_cannot_mean_anything_are_refused_naming_the_spec(spec, message):
    with pytest.raises(ConfigError, match=re.escape(f"batch size {spec!r}: ") + ".*" + re.escape(message)):
        parse_batch_size(spec)


def test_mixed_units_are_ordered_once_the_epoch_is_known():
    """256 from epoch 2, 512 from sample 1,000: in order for 400-sample epochs, not for 1,000."""
    from batchtrain.batching.base import StepStats
    Piecewise([128, 256, 512], ["2e", 1000]).observe(StepStats(0, 0, 400, 0))
    with pytest.raises(ConfigError, match="increasing"):
        Piecewise([128, 256, 512], ["2e", 1000]).observe(StepStats(0, 0, 1000, 0))

"""Learning-rate coupling (batching/coupling.py): the lr_scale rules, the default rule per
optimizer, and LearningRate setting every param group's lr from the batch and the schedule."""
import math

import pytest
import torch
from torch import nn

from batchtrain.batching.adaptive import Adaptive
from batchtrain.batching.coupling import LearningRate, default_lr_scaling, lr_scale
from batchtrain.batching.fixed import Fixed
from batchtrain.errors import ConfigError
from batchtrain.optim.schedules import SampleClock, as_lr_schedule


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


def _optimizer(kind=torch.optim.SGD, lrs=(0.1, 0.01)):
    torch.manual_seed(0)
    first, second = nn.Linear(3, 2), nn.Linear(2, 1)
    return kind([{"params": first.parameters(), "lr": lrs[0]},
                 {"params": second.parameters(), "lr": lrs[1]}])


START = SampleClock(0, 100, 300)  # a run of 3 epochs of 100 samples, at its beginning


def test_the_first_batch_is_the_reference_and_every_group_follows_the_rule():
    optimizer = _optimizer()
    control = LearningRate(optimizer, "auto")  # SGD: linear
    assert control.rule == "linear" and control.reference_batch is None
    assert control.apply(16, START) == pytest.approx(0.1)
    assert control.reference_batch == 16
    assert control.apply(64, START) == pytest.approx(0.4)
    assert [group["lr"] for group in optimizer.param_groups] == pytest.approx([0.4, 0.04])
    assert control.apply(8, START) == pytest.approx(0.05)  # below the reference: scaled down


def test_sqrt_rule_and_the_schedule_multiply():
    optimizer = _optimizer(torch.optim.Adam)
    control = LearningRate(optimizer, "auto", as_lr_schedule("cosine"))  # Adam: sqrt
    assert control.rule == "sqrt"
    control.apply(8, START)
    halfway = SampleClock(150, 100, 300)  # cosine to 0: factor 0.5 at half the run
    assert control.apply(32, halfway) == pytest.approx(0.1 * 2 * 0.5)
    assert [group["lr"] for group in optimizer.param_groups] == pytest.approx([0.1, 0.01])
    assert control.apply(32, SampleClock(300, 100, 300)) == pytest.approx(0.0, abs=1e-12)


def test_a_new_control_starts_from_the_users_lr_not_the_rescaled_one():
    optimizer = _optimizer()
    first = LearningRate(optimizer, "linear")
    first.apply(4, START)
    first.apply(16, START)
    assert [group["lr"] for group in optimizer.param_groups] == pytest.approx([0.4, 0.04])
    again = LearningRate(optimizer, "linear")  # a second fit, on the same optimizer
    assert again.base_lrs == [0.1, 0.01]
    assert again.apply(4, START) == pytest.approx(0.1)


def test_at_base_says_whether_a_first_step_takes_the_lrs_the_groups_hold():
    assert LearningRate(_optimizer(), "linear").at_base(START)  # constant: the user's lrs
    assert not LearningRate(_optimizer(), "linear", as_lr_schedule("warmup:1e+constant")).at_base(
        SampleClock(0, 100, 300))  # a warm-up starts below them
    optimizer = _optimizer()
    first = LearningRate(optimizer, "linear")
    first.apply(4, START)
    first.apply(16, START)  # the groups now hold 4x the user's lrs
    assert not LearningRate(optimizer, "linear").at_base(START)


def test_none_leaves_the_lr_alone():
    optimizer = _optimizer()
    control = LearningRate(optimizer, "none")
    control.apply(4, START)
    assert control.apply(4000, START) == pytest.approx(0.1)
    assert [group["lr"] for group in optimizer.param_groups] == pytest.approx([0.1, 0.01])


def test_an_unknown_rule_is_refused_when_the_control_is_made():
    with pytest.raises(ConfigError, match="unknown lr scaling 'cubic'; choose one of none, linear"):
        LearningRate(_optimizer(), "cubic")


class Gain:
    """A policy that measures the gradient noise and reports an AdaScale gain of 3."""

    wants_gradient_stats = True

    def __init__(self):
        self.asked = []

    def lr_scale(self, reference_batch):
        self.asked.append(reference_batch)
        return 3.0


def test_adascale_takes_the_policys_gain_over_the_first_batch():
    policy, optimizer = Gain(), _optimizer()
    control = LearningRate(optimizer, "adascale", policy=policy)
    assert control.apply(8, START) == pytest.approx(0.3)
    assert control.apply(64, START) == pytest.approx(0.3)  # the gain, not the batch ratio
    assert policy.asked == [8, 8]
    assert [group["lr"] for group in optimizer.param_groups] == pytest.approx([0.3, 0.03])


def test_adascale_with_the_adaptive_policy_before_any_estimate_is_the_sqrt_rule():
    policy = Adaptive(min_batch=8, initial=32)
    control = LearningRate(_optimizer(), "adascale", policy=policy)
    assert control.apply(8, START) == pytest.approx(0.1 * math.sqrt(32 / 8))


@pytest.mark.parametrize("policy", [None, Fixed(8)], ids=["no-policy", "fixed"])
def test_adascale_without_a_measuring_policy_is_refused(policy):
    with pytest.raises(ConfigError, match="'adascale' needs a batch-size policy that measures"):
        LearningRate(_optimizer(), "adascale", policy=policy)


def test_state_dict_restores_the_rule_lrs_and_reference():
    optimizer = _optimizer()
    control = LearningRate(optimizer, "linear")
    control.apply(16, START)
    restored = LearningRate(_optimizer(lrs=(0.5, 0.5)), "none")
    restored.load_state_dict(control.state_dict())
    assert restored.state_dict() == {"rule": "linear", "base_lrs": [0.1, 0.01], "reference_batch": 16,
                                     "plateau": 1.0, "min_lr": 0.0, "last_lr": 0.1}
    assert restored.apply(32, START) == pytest.approx(0.2)


def test_the_plateau_factor_multiplies_schedule_and_coupling_and_keeps_its_floor():
    optimizer = _optimizer(torch.optim.SGD, lrs=(0.1, 0.01))
    control = LearningRate(optimizer, "linear", as_lr_schedule("cosine"))
    middle = SampleClock(150, 100, 300)  # half-way: cosine's factor 0.5
    assert control.apply(32, START) == pytest.approx(0.1)  # the reference batch
    assert control.reduce(0.1, min_lr=0.004)
    # base x coupling (64/32 = 2) x schedule (0.5) x plateau (0.1), in every param group
    assert control.apply(64, middle) == pytest.approx(0.1 * 2 * 0.5 * 0.1)
    assert [group["lr"] for group in optimizer.param_groups] == pytest.approx(
        [0.01, max(0.01 * 2 * 0.5 * 0.1, 0.004)])  # the second group at its floor, 0.004
    assert control.reduce(0.1, min_lr=0.004)
    assert control.apply(64, middle) == pytest.approx(0.004)  # 0.001 would be below the floor
    assert not control.reduce(0.1, min_lr=0.004)  # at the floor: nothing changes
    assert control.plateau == pytest.approx(0.01)
    # where the schedule alone goes below the floor (cosine's end), the schedule is followed
    assert control.apply(64, SampleClock(299, 100, 300)) < 0.004
    restored = LearningRate(_optimizer(torch.optim.SGD), "linear", as_lr_schedule("cosine"))
    restored.load_state_dict(control.state_dict())
    assert restored.apply(64, middle) == control.apply(64, middle)
    legacy = {key: value for key, value in control.state_dict().items()
              if key in ("rule", "base_lrs", "reference_batch")}  # a checkpoint from before
    restored.load_state_dict(legacy)
    assert restored.plateau == 1.0 and restored.apply(32, START) == pytest.approx(0.1)

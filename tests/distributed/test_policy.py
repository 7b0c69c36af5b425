"""The rank-0 policy wrapper (distributed/policy.py) with a stand-in process group: what rank 0
answers is what every rank gets, and everything else reaches the wrapped policy."""
import pytest
import torch

from batchtrain.batching.adaptive import Adaptive
from batchtrain.batching.base import Policy, StepStats
from batchtrain.batching.fixed import Fixed
from batchtrain.batching.schedule import Doubling
from batchtrain.distributed.policy import RankZeroDecides, synced

CPU = torch.device("cpu")
RANK_ZERO_SAYS = 48


class FakeGroup:
    """broadcast_int as on a rank other than 0: the answer is rank 0's, whatever is sent."""

    def __init__(self, answer: int = RANK_ZERO_SAYS):
        self.answer = answer
        self.sent = []

    def broadcast_int(self, value: int, device) -> int:
        self.sent.append((value, device))
        return self.answer


class Recording(Policy):
    """A measuring policy that records every call."""

    wants_gradient_stats = True

    def __init__(self):
        self.calls = []

    def batch_size(self) -> int:
        self.calls.append("batch_size")
        return 32

    def observe(self, step: StepStats) -> None:
        self.calls.append(("observe", step))

    def state_dict(self) -> dict:
        self.calls.append("state_dict")
        return {"mine": [1, 2]}

    def load_state_dict(self, state: dict) -> None:
        self.calls.append(("load_state_dict", state))

    def set_limit(self, max_batch: int) -> None:
        self.calls.append(("set_limit", max_batch))

    def lr_scale(self, reference_batch: int) -> float:
        self.calls.append(("lr_scale", reference_batch))
        return 1.75

    def __repr__(self) -> str:
        return "Recording()"


@pytest.mark.parametrize("policy", [Fixed(16), Doubling(8, "1e", 64), Adaptive(min_batch=8),
                                    Recording()], ids=repr)
def test_one_process_asks_the_policy_itself(policy):
    assert synced(policy, None, CPU) is policy


@pytest.mark.parametrize("policy", [Fixed(16), Doubling(8, "1e", 64)], ids=repr)
def test_a_policy_of_samples_seen_alone_is_left_as_it_is_under_ddp(policy):
    group = FakeGroup()
    assert synced(policy, group, CPU) is policy
    assert policy.batch_size() != RANK_ZERO_SAYS and group.sent == []


def test_a_measuring_policy_is_overruled_by_rank_zero():
    policy, group = Adaptive(min_batch=8, initial=24), FakeGroup()
    wrapped = synced(policy, group, CPU)
    assert isinstance(wrapped, RankZeroDecides) and isinstance(wrapped, Policy)
    assert wrapped.policy is policy and wrapped.wants_gradient_stats is True
    assert policy.batch_size() == 24
    assert wrapped.batch_size() == RANK_ZERO_SAYS
    assert group.sent == [(24, CPU)]  # this rank's own answer is what it sends


def test_batch_size_asks_the_wrapped_policy_every_time():
    policy, group = Recording(), FakeGroup()
    wrapped = RankZeroDecides(policy, group, CPU)
    assert [wrapped.batch_size() for _ in range(3)] == [RANK_ZERO_SAYS] * 3
    assert policy.calls == ["batch_size"] * 3 and group.sent == [(32, CPU)] * 3
    group.answer = 96  # rank 0 changed its mind
    assert wrapped.batch_size() == 96


def test_a_policy_that_counts_its_decisions_is_broadcast_only_when_it_decided():
    policy, group = Recording(), FakeGroup()
    policy.decisions = 0
    wrapped = RankZeroDecides(policy, group, CPU)
    assert [wrapped.batch_size() for _ in range(3)] == [RANK_ZERO_SAYS] * 3
    assert len(group.sent) == 1  # the first call only
    group.answer, policy.decisions = 96, 1  # a decision (at the same step on every rank)
    assert [wrapped.batch_size() for _ in range(2)] == [96, 96] and len(group.sent) == 2
    wrapped.load_state_dict({"theirs": 3})  # a restored run: broadcast at the next call
    group.answer = 48
    assert wrapped.batch_size() == 48 and len(group.sent) == 3


def test_adaptive_counts_its_decisions():
    policy = Adaptive(rule="noise-scale", min_batch=8, initial=16, update_every=1)
    policy.observe(StepStats(0, 0, 10_000, 0))
    before = policy.decisions
    for step in range(1, 12):
        policy.observe(StepStats(16 * step, 0, 10_000, 16, gradient={"noise_scale": 64.0,
                                                                    "confidence": 1.0}))
    assert policy.decisions == before + 1  # the 10th step decided (MIN_STEPS_PER_DECISION)


def test_everything_else_delegates_to_the_wrapped_policy():
    policy, group = Recording(), FakeGroup()
    wrapped = RankZeroDecides(policy, group, CPU)
    step = StepStats(samples_seen=64, epoch=0, samples_per_epoch=640, batch_size=32)
    wrapped.observe(step)
    assert wrapped.state_dict() == {"mine": [1, 2]}
    wrapped.load_state_dict({"theirs": 3})
    assert wrapped.set_limit(512) is None
    assert wrapped.lr_scale(16) == 1.75
    assert policy.calls == [("observe", step), "state_dict", ("load_state_dict", {"theirs": 3}),
                            ("set_limit", 512), ("lr_scale", 16)]
    assert group.sent == []  # none of these talks to the other ranks


def test_delegation_to_a_real_adaptive_policy():
    policy = Adaptive(min_batch=8, initial=512)
    wrapped = RankZeroDecides(policy, FakeGroup(), CPU)
    wrapped.set_limit(100)
    assert policy.limit == 100 and policy.batch_size() == 100  # clamped to the new ceiling
    assert wrapped.lr_scale(25) == pytest.approx(policy.lr_scale(25)) == pytest.approx(2.0)
    state = wrapped.state_dict()
    assert state == policy.state_dict() and state["current"] == 100
    other = Adaptive(min_batch=8, initial=8)
    other.set_limit(1000)
    RankZeroDecides(other, FakeGroup(), CPU).load_state_dict(state)
    assert other.batch_size() == 100


def test_repr_is_the_wrapped_policys():
    policy = Adaptive(rule="noise-scale", min_batch=8, initial=16)
    assert repr(RankZeroDecides(policy, FakeGroup(), CPU)) == repr(policy)
    assert repr(RankZeroDecides(Recording(), FakeGroup(), CPU)) == "Recording()"

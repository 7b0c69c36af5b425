"""The policy protocol and its declared capabilities (batching/base.py): built-in policies carry
them; a duck-typed policy gets the defaults it lacks and keeps what it defines."""
import pytest

from batchtrain.batching.adaptive import Adaptive
from batchtrain.batching.base import BatchSizePolicy, Policy, StepStats, declared
from batchtrain.batching.fixed import Fixed
from batchtrain.batching.schedule import Doubling, Piecewise, Ramp
from batchtrain.batching.spec import resolve_policy

STEP = StepStats(samples_seen=100, epoch=0, samples_per_epoch=1000, batch_size=25)

BUILT_IN = [Fixed(16), Piecewise([8, 16], ["1e"]), Ramp(8, 64, "2e"), Doubling(8, "1e", 128),
            Adaptive(min_batch=8)]


class Duck:
    """The four protocol methods and nothing else."""

    def __init__(self, size: int = 12):
        self.size = size
        self.seen = []

    def batch_size(self) -> int:
        return self.size

    def observe(self, step: StepStats) -> None:
        self.seen.append(step)

    def state_dict(self) -> dict:
        return {"size": self.size}

    def load_state_dict(self, state: dict) -> None:
        self.size = state["size"]

    def __repr__(self) -> str:
        return f"Duck({self.size})"


class CapableDuck(Duck):
    """A duck-typed policy with its own capabilities (still no Policy base)."""

    wants_gradient_stats = True

    def __init__(self):
        super().__init__()
        self.limits = []

    def set_limit(self, max_batch: int) -> None:
        self.limits.append(max_batch)

    def lr_scale(self, reference_batch: int) -> float:
        return self.size / reference_batch


@pytest.mark.parametrize("policy", BUILT_IN, ids=repr)
def test_built_in_policies_are_policies_and_declared_unchanged(policy):
    assert isinstance(policy, Policy) and isinstance(policy, BatchSizePolicy)
    assert declared(policy) is policy


def test_built_in_capability_defaults():
    assert [policy.wants_gradient_stats for policy in BUILT_IN] == [False] * 4 + [True]
    fixed = Fixed(16)
    assert fixed.set_limit(8) is None and fixed.batch_size() == 16  # the limit is ignored
    assert fixed.lr_scale(4) == 1.0


def test_a_duck_typed_policy_is_recognised_by_the_protocol_but_is_no_policy():
    duck = Duck()
    assert isinstance(duck, BatchSizePolicy)  # runtime_checkable: the four methods suffice
    assert not isinstance(duck, Policy)


def test_a_duck_typed_policy_is_wrapped_with_the_defaults():
    duck = Duck()
    policy = declared(duck)
    assert policy is not duck and isinstance(policy, Policy)
    assert policy.wants_gradient_stats is False
    assert policy.set_limit(64) is None
    assert policy.lr_scale(32) == 1.0
    assert vars(duck) == {"size": 12, "seen": []}  # the defaults added nothing to the duck


def test_the_wrapper_delegates_the_four_methods():
    duck = Duck(12)
    policy = declared(duck)
    assert policy.batch_size() == 12
    policy.observe(STEP)
    assert duck.seen == [STEP] and duck.seen[0] is STEP
    assert policy.state_dict() == {"size": 12}
    policy.load_state_dict({"size": 40})
    assert duck.size == 40 and policy.batch_size() == 40
    assert repr(policy) == "Duck(40)"


def test_a_duck_typed_policy_keeps_its_own_capabilities():
    duck = CapableDuck()
    policy = declared(duck)
    assert isinstance(policy, Policy)
    assert policy.wants_gradient_stats is True
    policy.set_limit(256)
    assert duck.limits == [256]
    assert policy.lr_scale(4) == 3.0  # its own: 12 / 4, not the default 1.0
    assert policy.batch_size() == 12


def test_resolve_policy_declares_and_tells_the_memory_ceiling():
    duck = CapableDuck()
    policy = resolve_policy(duck, 96)
    assert isinstance(policy, Policy) and duck.limits == [96]
    plain = resolve_policy(Duck(), 96)  # no set_limit of its own: the no-op default
    assert plain.batch_size() == 12 and plain.lr_scale(12) == 1.0
    adaptive = Adaptive(min_batch=8, initial=512)
    assert resolve_policy(adaptive, 96) is adaptive and adaptive.limit == 96

"""Fixed(n) (batching/fixed.py): the same logical batch every step, over a run and after a restore
(driven by conftest.py's `simulate`, as the trainer drives a policy)."""
import pytest

from batchtrain.batching.base import BatchSizePolicy
from batchtrain.batching.fixed import Fixed

EPOCH = 100  # samples per epoch in the simulated runs (conftest.py's EPOCH)


@pytest.mark.parametrize("policy, expected", [
    (Fixed(30), [30, 30, 30, 10] * 2),
], ids=["fixed"])
def test_policy_sizes_over_a_run(simulate, policy, expected):
    sizes = simulate(policy, 2 * EPOCH)
    assert sum(sizes) == 2 * EPOCH
    if expected is not None:
        assert sizes == expected
    else:  # the ramp grows monotonically from 10 to 50 within the first epoch, then stays
        first_epoch = sizes[:next(i for i, _ in enumerate(sizes) if sum(sizes[:i + 1]) >= EPOCH)]
        assert first_epoch[0] == 10 and first_epoch == sorted(first_epoch)
        assert policy.batch_size() == 50


@pytest.mark.parametrize("make", [lambda: Fixed(30)], ids=["fixed"])
def test_policy_restored_from_state_dict_continues_identically(simulate, make):
    uninterrupted = simulate(make(), 2 * EPOCH)
    original = make()
    before = simulate(original, 70)  # stops mid-epoch, at a step boundary
    restored = make()
    restored.load_state_dict(original.state_dict())
    after = simulate(restored, 2 * EPOCH, start=sum(before), observe_start=False)
    assert before + after == uninterrupted
    assert isinstance(restored, BatchSizePolicy)

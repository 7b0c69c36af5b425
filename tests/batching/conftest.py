"""Shared by the batching tests: `simulate`, a policy driven over a simulated run as the trainer
drives it (test_fixed.py, test_schedule.py)."""
import pytest

from batchtrain.batching.base import BatchSizePolicy, StepStats

EPOCH = 100  # samples per epoch in the simulated runs (the test modules repeat it)


def simulate_run(policy: BatchSizePolicy, samples: int, start: int = 0,
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


@pytest.fixture
def simulate():
    """simulate(policy, samples, start=0, observe_start=True) -> the batch sizes it picked."""
    return simulate_run

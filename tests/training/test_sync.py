"""Synchronisation strategies (training/sync.py) with stand-ins: no process group is needed to
check what they tell DDP and how the step's loss shares follow the world size."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from batchtrain.training.step import TrainStep, accumulate, micro_batches
from batchtrain.training.sync import DataParallel, SingleProcess, strategy

pytestmark = pytest.mark.usefixtures("single_thread")


class FakeGroup:
    """What DataParallel reads of distributed.ddp.Distributed: world_size and sum."""

    def __init__(self, world_size: int):
        self.world_size = world_size
        self.summed = []

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        self.summed.append(tensor)
        return tensor * self.world_size


class StandIn:
    """Has the one attribute DataParallel sets on a DistributedDataParallel module."""

    require_backward_grad_sync = "untouched"


class FlagRecorder(nn.Module):
    """A linear model that records DDP's flag as each micro-batch's forward sees it."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.linear = nn.Linear(4, 2)
        self.require_backward_grad_sync = True
        self.seen = []

    def forward(self, x):
        self.seen.append(self.require_backward_grad_sync)
        return self.linear(x)


def batch(n: int = 9):
    generator = torch.Generator().manual_seed(3)
    return torch.randn(n, 4, generator=generator), torch.randn(n, 2, generator=generator)


def test_single_process_is_one_rank_with_nothing_to_reduce():
    sync = SingleProcess()
    assert sync.world_size == 1
    assert sync.reduce is None
    for all_reduce in (True, False):
        assert sync.before_backward(all_reduce) is None
    assert vars(sync) == {}  # nothing recorded, no network to tell


@pytest.mark.parametrize("world_size", [2, 3])
def test_data_parallel_takes_world_size_and_reduce_from_the_group(world_size):
    group = FakeGroup(world_size)
    network = StandIn()
    sync = DataParallel(network, group)
    assert sync.world_size == world_size
    assert sync.network is network and sync.group is group
    flag = torch.ones(1)
    assert torch.equal(sync.reduce(flag), flag * world_size)
    assert group.summed == [flag]  # reduce is the group's sum


def test_data_parallel_sets_the_ddp_flag_as_told():
    network = StandIn()
    sync = DataParallel(network, FakeGroup(2))
    for all_reduce in (True, False, False, True):
        sync.before_backward(all_reduce)
        assert network.require_backward_grad_sync is all_reduce


def test_strategy_picks_single_process_without_a_group_and_data_parallel_with_one():
    network = StandIn()
    assert isinstance(strategy(network, None), SingleProcess)
    group = FakeGroup(4)
    chosen = strategy(network, group)
    assert isinstance(chosen, DataParallel)
    assert chosen.network is network and chosen.world_size == 4


@pytest.mark.parametrize("all_reduce_last, expected", [
    (True, [False, False, True]),    # only the last backward all-reduces
    (False, [False, False, False]),  # the measurement reduces the gradients itself
])
def test_accumulate_under_ddp_all_reduces_only_with_the_last_backward(all_reduce_last, expected):
    network = FlagRecorder()
    x, y = batch()
    accumulate(network, F.mse_loss, micro_batches(x, y, 3), 9, True,
               DataParallel(network, FakeGroup(2)), all_reduce_last, None)
    assert network.seen == expected
    assert network.require_backward_grad_sync is expected[-1]


def test_accumulate_in_one_process_leaves_the_flag_alone():
    network = FlagRecorder()
    x, y = batch()
    accumulate(network, F.mse_loss, micro_batches(x, y, 3), 9, True, SingleProcess(), True, None)
    assert network.seen == [True, True, True]


@pytest.mark.parametrize("world_size", [2, 4])
def test_loss_shares_are_multiplied_by_the_world_size(world_size):
    """DDP averages the ranks' gradients, so each rank's share of the global batch is scaled up
    by the world size: without DDP's averaging, the local gradient is world_size times that of
    the local samples' share of the logical batch."""
    x, y = batch()
    single, parallel = FlagRecorder(), FlagRecorder()
    parts = micro_batches(x, y, 4)
    logical = 9 * world_size  # this rank holds 9 of the global batch
    accumulate(single, F.mse_loss, parts, logical, True, SingleProcess(), True, None)
    accumulate(parallel, F.mse_loss, parts, logical, True, DataParallel(parallel, FakeGroup(world_size)),
               True, None)
    for ours, theirs in zip(parallel.parameters(), single.parameters()):
        torch.testing.assert_close(ours.grad, theirs.grad * world_size)
    # and world_size x (local / global share) = the local batch's own mean-loss gradient
    reference = FlagRecorder()
    F.mse_loss(reference(x), y).backward()
    for ours, theirs in zip(parallel.parameters(), reference.parameters()):
        torch.testing.assert_close(ours.grad, theirs.grad, rtol=1e-5, atol=1e-6)


def test_a_group_of_one_process_all_reduces_every_backward():
    network = StandIn()
    sync = DataParallel(network, FakeGroup(1))
    for all_reduce in (False, True):
        sync.before_backward(all_reduce)
        assert network.require_backward_grad_sync is True  # nothing to skip in a group of one


def test_the_flag_is_ddps_default_again_after_every_step_even_a_failed_one():
    network = FlagRecorder()
    sync = DataParallel(network, FakeGroup(2))
    optimizer = torch.optim.SGD(network.parameters(), lr=0.1)
    step = TrainStep(network, nn.functional.mse_loss, optimizer, list(network.parameters()), sync)
    x, y = torch.randn(8, 4), torch.randn(8, 2)
    step.compute(micro_batches(x, y, 2), 8, counts=True)
    assert network.seen == [False, False, False, True] and network.require_backward_grad_sync is True
    def failing_loss(outputs, targets):
        raise RuntimeError("a loss that fails mid-accumulation")

    step.loss_fn = failing_loss
    with pytest.raises(RuntimeError, match="mid-accumulation"):
        step.compute(micro_batches(x, y, 2), 8, counts=True)
    assert network.seen[-1] is False  # the failure came after the flag was lowered
    assert network.require_backward_grad_sync is True

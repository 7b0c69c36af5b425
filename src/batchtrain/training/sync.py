"""Synchronisation strategies: how the ranks' gradients become one (nothing to do in one process).

Under DistributedDataParallel the all-reduce runs inside backward; with gradient accumulation
only the last micro-batch's backward should run it (the earlier ones only add to .grad), which is
what DDP's require_backward_grad_sync flag says (nanoGPT sets it the same way, rather than entering
no_sync() for all but the last micro-batch).
"""
from collections.abc import Callable

from torch import Tensor, nn

from batchtrain.distributed.ddp import Distributed


class SingleProcess:
    """One process: every backward is final; nothing to reduce."""

    world_size = 1
    reduce: Callable[[Tensor], Tensor] | None = None

    def before_backward(self, all_reduce: bool) -> None:
        pass

    def after_step(self) -> None:
        pass


class DataParallel:
    """DDP over a process group: the loss share is multiplied by the world size (DDP averages
    over ranks) and the all-reduce runs with the backward the step asks for."""

    def __init__(self, network: nn.Module, group: Distributed):
        self.network = network
        self.group = group
        self.world_size = group.world_size
        self.reduce = group.sum  # sums a flag or metric over ranks, so all ranks decide alike

    def before_backward(self, all_reduce: bool) -> None:
        """all_reduce: this micro-batch's backward all-reduces the accumulated gradient (always
        in a group of one process, where there is nothing to skip)."""
        self.network.require_backward_grad_sync = all_reduce or self.world_size == 1

    def after_step(self) -> None:
        """DDP's default again (as leaving no_sync() does): a later forward and backward outside
        the pipeline (a user's loop, a callback) must all-reduce."""
        self.network.require_backward_grad_sync = True


def strategy(network: nn.Module, group: Distributed | None) -> SingleProcess | DataParallel:
    return SingleProcess() if group is None else DataParallel(network, group)

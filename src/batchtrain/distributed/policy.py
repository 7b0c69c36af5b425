"""A batch-size policy that decides alike on every rank under DistributedDataParallel."""
from batchtrain.batching.base import Policy, Wrapping
from batchtrain.distributed.ddp import Distributed


def synced(policy: Policy, group: Distributed | None, device) -> Policy:
    """The policy as the trainer should ask it: under DDP, a policy that reads local
    measurements (gradient noise, step times) is overruled by rank 0, so all ranks take the same
    batch; a policy that decides from samples seen alone already agrees and is left as it is."""
    if group is None or not policy.wants_gradient_stats:
        return policy
    return RankZeroDecides(policy, group, device)


class RankZeroDecides(Wrapping):
    """Delegates to `policy`; batch_size() is rank 0's answer, broadcast to every rank."""

    def __init__(self, policy: Policy, group: Distributed, device):
        super().__init__(policy)
        self.group = group
        self.device = device
        self.wants_gradient_stats = policy.wants_gradient_stats
        self.stats_every = policy.stats_every
        self.noise_geometry = policy.noise_geometry
        self.gives_lr_scale = policy.gives_lr_scale

    def batch_size(self) -> int:
        return self.group.broadcast_int(self.policy.batch_size(), self.device)

    def set_limit(self, max_batch: int) -> None:
        self.policy.set_limit(max_batch)

    def lr_scale(self, reference_batch: int) -> float:
        return self.policy.lr_scale(reference_batch)

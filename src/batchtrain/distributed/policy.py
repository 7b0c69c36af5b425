"""A batch-size policy that decides alike on every rank under DistributedDataParallel."""
from batchtrain.batching.base import Policy, StepStats
from batchtrain.distributed.ddp import Distributed


def synced(policy: Policy, group: Distributed | None, device) -> Policy:
    """The policy as the trainer should ask it: under DDP, a policy that reads local
    measurements (gradient noise, step times) is overruled by rank 0, so all ranks take the same
    batch; a policy that decides from samples seen alone already agrees and is left as it is."""
    if group is None or not policy.wants_gradient_stats:
        return policy
    return RankZeroDecides(policy, group, device)


class RankZeroDecides(Policy):
    """Delegates to `policy`; batch_size() is rank 0's answer, broadcast to every rank."""

    def __init__(self, policy: Policy, group: Distributed, device):
        self.policy = policy
        self.group = group
        self.device = device
        self.wants_gradient_stats = policy.wants_gradient_stats
        self.gives_lr_scale = policy.gives_lr_scale

    def batch_size(self) -> int:
        return self.group.broadcast_int(self.policy.batch_size(), self.device)

    def observe(self, step: StepStats) -> None:
        self.policy.observe(step)

    def state_dict(self) -> dict:
        return self.policy.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.policy.load_state_dict(state)

    def set_limit(self, max_batch: int) -> None:
        self.policy.set_limit(max_batch)

    def lr_scale(self, reference_batch: int) -> float:
        return self.policy.lr_scale(reference_batch)

    def __repr__(self) -> str:
        return repr(self.policy)

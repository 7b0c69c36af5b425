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
    """Delegates to `policy`; batch_size() is rank 0's answer, broadcast to every rank: on every
    call, or, for a policy that counts its decisions (`decisions`, which must count alike on
    every rank: Adaptive decides at the same steps everywhere, from the all-reduced noise
    estimate), only when that count changed: a broadcast every step cost ~20 % of a small
    model's step time on 2 gloo ranks (benchmarks/ddp_measurement.py)."""

    def __init__(self, policy: Policy, group: Distributed, device):
        super().__init__(policy)
        self.group = group
        self.device = device
        self.decisions, self.answer = None, 0  # the count at the last broadcast, its answer
        self.wants_gradient_stats = policy.wants_gradient_stats
        self.noise_geometry = policy.noise_geometry
        self.gives_lr_scale = policy.gives_lr_scale

    @property
    def stats_every(self) -> int:
        return self.policy.stats_every

    def batch_size(self) -> int:
        decisions = getattr(self.policy, "decisions", None)
        if decisions is None or decisions != self.decisions:
            self.answer = self.group.broadcast_int(self.policy.batch_size(), self.device)
            self.decisions = decisions
        return self.answer

    def load_state_dict(self, state: dict) -> None:
        self.policy.load_state_dict(state)
        self.decisions = None  # the restored answer is broadcast at the next call

    def set_limit(self, max_batch: int) -> None:
        self.policy.set_limit(max_batch)

    def lr_scale(self, reference_batch: int) -> float:
        return self.policy.lr_scale(reference_batch)

"""Learning-rate coupling: how the learning rate follows the logical batch size.

When the batch grows by a factor k the gradient's noise shrinks by k, and the step can grow:
- "linear": lr x k (Goyal et al. 2017, "Accurate, Large Minibatch SGD"): the rule for SGD.
- "sqrt": lr x sqrt(k) (Krizhevsky 2014; Hoffer et al. 2017; Malladi et al. 2022 for Adam):
  keeps the update's noise constant; the usual rule for adaptive optimizers (Adam, RMSprop).
- "none": leave the learning rate alone.
- "adascale": the AdaScale gain r = (var + |G|^2)/(var/S + |G|^2) (Johnson et al. 2020), from the
  measured gradient noise; only with a policy that measures it (Adaptive), between 1 and S.
The reference batch (k = 1) is the first logical batch of the run: the learning rate the user gave
applies to the batch size the user started with.
"""
import math

import torch

from batchtrain.batching.base import Policy
from batchtrain.errors import ConfigError
from batchtrain.optim.schedules import Constant, LRSchedule, SampleClock

LR_SCALING_RULES = ("none", "linear", "sqrt", "adascale")

# The documented default per optimizer: SGD follows Goyal et al., adaptive methods the sqrt rule.
DEFAULT_LR_SCALING = {torch.optim.SGD: "linear", torch.optim.Adam: "sqrt",
                      torch.optim.AdamW: "sqrt", torch.optim.RMSprop: "sqrt",
                      torch.optim.Adagrad: "sqrt"}


def default_lr_scaling(optimizer: torch.optim.Optimizer) -> str:
    """The rule for this optimizer's class (subclasses included); "none" for unknown optimizers."""
    for cls, rule in DEFAULT_LR_SCALING.items():
        if isinstance(optimizer, cls):
            return rule
    return "none"


def lr_scale(rule: str, batch_size: int, reference_batch: int) -> float:
    """The learning-rate multiplier for `batch_size` samples under `rule`."""
    ratio = batch_size / reference_batch
    if rule == "linear":
        return ratio
    if rule == "sqrt":
        return math.sqrt(ratio)
    if rule in ("none", "adascale"):  # adascale's gain comes from the policy (LearningRate.apply)
        return 1.0
    raise ConfigError(f"unknown lr scaling {rule!r}; choose one of {', '.join(LR_SCALING_RULES)}")


class LearningRate:
    """Sets the optimizer's learning rates before each step: base x coupling x schedule x plateau.

    The plateau factor (1 until ReduceLROnPlateau lowers it: reduce()) multiplies what the
    coupling and the schedule give, and never pushes the lr below its min_lr; where the schedule
    alone goes lower (a cosine to 0), the schedule is followed.

    scaling: "auto" (DEFAULT_LR_SCALING), "none", "linear", "sqrt" or "adascale" (the policy's
        lr_scale: a policy that measures the gradient noise).
    schedule: a sample-keyed LRSchedule (optim/schedules.py); default constant.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, scaling: str = "auto",
                 schedule: LRSchedule | None = None, policy: Policy | None = None):
        self.optimizer = optimizer
        self.policy = policy
        self.rule = default_lr_scaling(optimizer) if scaling == "auto" else scaling
        lr_scale(self.rule, 1, 1)  # validates the rule now, not at the first step
        # declared by a Policy (gives_lr_scale); a bare object: it has lr_scale, as before
        gives_lr_scale = getattr(policy, "gives_lr_scale", hasattr(policy, "lr_scale"))
        if self.rule == "adascale" and not gives_lr_scale:
            raise ConfigError("lr scaling 'adascale' needs a batch-size policy that measures the "
                              "gradient noise (batch_size='auto' or 'adaptive:...'); use sqrt or linear")
        self.schedule = schedule or Constant()
        # "initial_lr" (torch's own scheduler convention) keeps the user's lr across fit() calls,
        # after this class has rescaled group["lr"].
        self.base_lrs = [group.setdefault("initial_lr", group["lr"]) for group in optimizer.param_groups]
        self.reference_batch: int | None = None
        self.plateau, self.min_lr = 1.0, 0.0  # ReduceLROnPlateau's factor and floor
        self.last_lr: float | None = None

    def apply(self, batch_size: int, clock: SampleClock) -> float:
        """Set every param group's lr for a step of `batch_size` samples; returns the first group's."""
        if self.reference_batch is None:
            self.reference_batch = batch_size
        coupling = (self.policy.lr_scale(self.reference_batch) if self.rule == "adascale"
                    else lr_scale(self.rule, batch_size, self.reference_batch))
        factor = coupling * self.schedule.factor(clock)
        lrs = [self._plateaued(base_lr * factor) for base_lr in self.base_lrs]
        for group, lr in zip(self.optimizer.param_groups, lrs):
            group["lr"] = lr
        self.last_lr = lrs[0]
        return lrs[0]

    def at_base(self, clock: SampleClock) -> bool:
        """Would a step at `clock`, at the first batch of a run (coupling 1), take the lrs the
        param groups hold now? (The start's branches train at those: training/calibrate.py.)"""
        factor = self.schedule.factor(clock)
        return all(self._plateaued(base_lr * factor) == group["lr"]
                   for base_lr, group in zip(self.base_lrs, self.optimizer.param_groups))

    def _plateaued(self, lr: float) -> float:
        return lr if self.plateau == 1.0 else max(lr * self.plateau, min(lr, self.min_lr))

    def reduce(self, factor: float, min_lr: float = 0.0) -> bool:
        """Multiply the plateau factor by `factor` (< 1) from the next step on, keeping the lr at
        or above min_lr; False (nothing changed) when the last step's lr was at min_lr already."""
        if self.last_lr is not None and self.last_lr <= min_lr:
            return False
        # plain floats: a numpy factor would make the state (and the optimizer's lr) unpicklable
        # by torch.load(weights_only=True)
        self.plateau, self.min_lr = float(self.plateau * factor), float(min_lr)
        return True

    def state_dict(self) -> dict:
        return {"rule": self.rule, "base_lrs": list(self.base_lrs),
                "reference_batch": self.reference_batch, "plateau": self.plateau,
                "min_lr": self.min_lr, "last_lr": self.last_lr}

    def load_state_dict(self, state: dict) -> None:
        self.rule = state["rule"]
        self.base_lrs = list(state["base_lrs"])
        self.reference_batch = state["reference_batch"]
        # checkpoints from before ReduceLROnPlateau have no plateau factor
        self.plateau, self.min_lr = state.get("plateau", 1.0), state.get("min_lr", 0.0)
        self.last_lr = state.get("last_lr")

"""The gradient noise of adaptive optimizers, measured in the geometry they step in.

Adam and RMSprop divide each gradient coordinate by sqrt(v) + eps, v the running mean of its
squares, before stepping. What limits their useful batch size is the noise of that preconditioned
gradient, not of the raw one: McCandlish et al. 2018 remark that the noise scale may be measured
on preconditioned gradients (components divided by the square root of Adam's accumulated
variances), and Pollux/AdaptDL (Qiao et al. 2021) do so for Adam. Coordinates with small, noisy gradients
weigh little in the raw norm and as much as any other after preconditioning, so the raw noise
scale understates how large a batch Adam can use.

Preconditioned norms are |P g|^2 with P = diag(1 / (sqrt(v_hat) + eps)), v_hat Adam's
bias-corrected second moment (RMSprop's square average has no bias correction). The estimators
of noise.py apply unchanged: P is fixed within a step, so E|P G_b|^2 = |P G|^2 + tr(P Sigma P)/b.
"""
import torch
from torch import Tensor


class Preconditioner:
    """Per-parameter factors 1 / (sqrt(v_hat) + eps) of an Adam, AdamW or RMSprop optimizer; for
    other optimizers (SGD), or None, `adaptive` is False and gradients are measured as they are."""

    def __init__(self, optimizer: torch.optim.Optimizer | None):
        self.optimizer = optimizer
        self.kind = ("adam" if isinstance(optimizer, (torch.optim.Adam, torch.optim.AdamW))
                     else "rmsprop" if isinstance(optimizer, torch.optim.RMSprop) else None)
        self.adaptive = self.kind is not None
        self._buffers: list[Tensor] = []

    def factors(self, parameters: list[Tensor]) -> list[Tensor] | None:
        """One tensor per parameter (in `parameters` order), or None before the optimizer's first
        step (no second moments yet: the step is not measured) or for a non-adaptive optimizer.
        A parameter without optimizer state (frozen, or not yet reached by any step) gets zeros:
        it is left out of every norm of the step alike, so the estimate covers the others."""
        if not self.adaptive:
            return None
        key = "square_avg" if self.kind == "rmsprop" else "exp_avg_sq"
        states = [self.optimizer.state.get(p, {}) for p in parameters]
        if not any(key in state for state in states):
            return None
        groups = {id(p): group for group in self.optimizer.param_groups for p in group["params"]}
        if len(self._buffers) != len(parameters):
            self._buffers = [torch.empty_like(p) for p in parameters]
        for buffer, parameter, state in zip(self._buffers, parameters, states):
            if key not in state:
                buffer.zero_()
                continue
            group = groups[id(parameter)]
            second = state.get("max_exp_avg_sq", state[key]) if group.get("amsgrad") else state[key]
            correction = 1.0
            if self.kind == "adam":  # step may be a device tensor (fused Adam): no host sync
                correction = 1.0 - group["betas"][1] ** state["step"]
            torch.div(second, correction, out=buffer).sqrt_().add_(group["eps"]).reciprocal_()
        return self._buffers

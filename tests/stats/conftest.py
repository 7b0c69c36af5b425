"""A problem whose gradient noise is known in closed form: linear regression on Gaussian inputs.

Data: x ~ N(0, I_d), y = x.w* + c* + eps, eps ~ N(0, sigma^2). Model x.w + c (an nn.Linear(d, 1)),
loss 0.5 (x.w + c - y)^2. With v = w - w*, u = c - c*, the residual is r = x.v + u - eps and the
per-sample gradient is (x r, r) for (w, c).

True gradient: E[x r] = E[x x^T] v = v and E[r] = u, so |G|^2 = |v|^2 + u^2.
Second moment: E[r^2] = |v|^2 + u^2 + sigma^2 and
    E[|x|^2 r^2] = E[|x|^2 (x.v)^2] + u^2 E|x|^2 + sigma^2 E|x|^2   (odd moments of x, eps vanish)
                 = (d + 2)|v|^2 + d u^2 + d sigma^2,
since, rotating v onto the first axis, E[|x|^2 x_1^2] = E[x_1^4] + (d - 1) E[x_1^2] E[x_2^2]
= 3 + d - 1 = d + 2. Hence
    tr(Sigma) = E|grad|^2 - |G|^2 = (d + 2)|v|^2 + d u^2 + (d + 1) sigma^2.
"""
from dataclasses import dataclass

import pytest
import torch
from torch import Tensor


@dataclass(frozen=True)
class LinearRegression:
    """The problem at one fixed parameter point (w* + v, c* + u)."""

    dim: int = 10
    noise_std: float = 1.0     # sigma
    bias_offset: float = 0.5   # u
    weight_offset_norm: float = 1.0  # |v|

    @property
    def grad_sq(self) -> float:
        """|G|^2 = |v|^2 + u^2."""
        return self.weight_offset_norm ** 2 + self.bias_offset ** 2

    @property
    def trace(self) -> float:
        """tr(Sigma) = (d + 2)|v|^2 + d u^2 + (d + 1) sigma^2."""
        d = self.dim
        return ((d + 2) * self.weight_offset_norm ** 2 + d * self.bias_offset ** 2
                + (d + 1) * self.noise_std ** 2)

    @property
    def noise_scale(self) -> float:
        return self.trace / self.grad_sq

    def offset(self) -> Tensor:
        """v: a fixed direction (the first axis) scaled to |v|; the truth depends only on |v|."""
        v = torch.zeros(self.dim, dtype=torch.float64)
        v[0] = self.weight_offset_norm
        return v

    def per_sample_gradients(self, shape: tuple[int, ...], generator: torch.Generator) -> Tensor:
        """Gradients (x r, r) of fresh samples, shape (*shape, d + 1), float64."""
        x = torch.randn(*shape, self.dim, generator=generator, dtype=torch.float64)
        eps = self.noise_std * torch.randn(*shape, generator=generator, dtype=torch.float64)
        residual = x @ self.offset() + self.bias_offset - eps
        return torch.cat([x * residual[..., None], residual[..., None]], dim=-1)


@pytest.fixture
def regression() -> LinearRegression:
    return LinearRegression()


def _micro_batch_norms(per_sample: Tensor, micro_sizes: list[int]) -> tuple[Tensor, Tensor]:
    """From per-sample gradients (steps, B, P): |g_i|^2 (steps, k) of each micro-batch's mean
    gradient, and |G_B|^2 (steps,) of the batch's mean, G_B = sum_i (b_i / B) g_i."""
    micro_means = torch.stack([part.mean(dim=1) for part in per_sample.split(micro_sizes, dim=1)], 1)
    weights = torch.tensor(micro_sizes, dtype=per_sample.dtype) / sum(micro_sizes)
    batch_mean = (weights[None, :, None] * micro_means).sum(dim=1)
    return micro_means.square().sum(-1), batch_mean.square().sum(-1)


@pytest.fixture
def micro_batch_norms():
    """The function _micro_batch_norms (test modules cannot import conftest under importlib)."""
    return _micro_batch_norms

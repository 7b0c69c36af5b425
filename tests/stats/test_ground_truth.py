"""End to end against known answers: real models, real backward passes through the trainer's
weighted accumulation, MicroBatchGradients -> NoiseScaleTracker, B_simple within 10 % of the truth.

The parameters stay fixed (no optimizer step), so the truth is one number and the tracker can
average many steps (decay 0.999: close to a plain mean over the few hundred steps run).
"""
import pytest
import torch
from torch import nn

from batchtrain.stats import MicroBatchGradients, NoiseScaleTracker, split_for_stats

pytestmark = pytest.mark.usefixtures("single_thread")


def track(model, loss_fn, draw_batch, batch_size: int, physical: int, steps: int):
    """Run `steps` accumulated steps as the trainer does and return the tracker's estimate."""
    collector, tracker = MicroBatchGradients(model.parameters()), NoiseScaleTracker(decay=0.999)
    for _ in range(steps):
        x, y = draw_batch()
        model.zero_grad(set_to_none=True)
        collector.begin()
        for inputs, targets in zip(x.split(physical), y.split(physical)):
            weight = len(targets) / batch_size
            (loss_fn(model(inputs), targets) * weight).backward()
            collector.after_micro_batch(len(targets), weight)
        tracker.update(**collector.finish(batch_size))
    return tracker.estimate()


def test_linear_regression_matches_the_analytic_noise_scale(regression):
    """nn.Linear at w* + v, c* + u on y = x.w* + c* + eps: B_simple = tr(Sigma) / |G|^2 in closed
    form (derivation in conftest.py: tr = (d+2)|v|^2 + d u^2 + (d+1) sigma^2, |G|^2 = |v|^2 + u^2).
    Batches of 64 in micro-batches 22, 22, 20."""
    generator = torch.Generator().manual_seed(0)
    w_star = torch.randn(regression.dim, generator=generator, dtype=torch.float64)
    c_star = 0.3
    model = nn.Linear(regression.dim, 1).double()
    with torch.no_grad():
        model.weight.copy_(w_star + regression.offset())
        model.bias.fill_(c_star + regression.bias_offset)

    def draw_batch():
        x = torch.randn(64, regression.dim, generator=generator, dtype=torch.float64)
        noise = regression.noise_std * torch.randn(64, generator=generator, dtype=torch.float64)
        return x, x @ w_star + c_star + noise

    def loss_fn(outputs, targets):
        return 0.5 * (outputs.squeeze(1) - targets).square().mean()

    physical = split_for_stats(64, physical_cap=24)
    assert [len(part) for part in torch.arange(64).split(physical)] == [22, 22, 20]
    estimate = track(model, loss_fn, draw_batch, 64, physical, steps=300)
    assert estimate.noise_scale == pytest.approx(regression.noise_scale, rel=0.10)
    assert estimate.grad_sq == pytest.approx(regression.grad_sq, rel=0.10)
    assert estimate.trace == pytest.approx(regression.trace, rel=0.10)
    assert estimate.confidence > 0.9  # reported error ~2.5 %: the 10 % tolerance is 4 errors


def test_classification_matches_the_dataset_noise_scale():
    """An MLP classifier (float32) on a finite dataset of 200 points, batches drawn with
    replacement, so the population is the dataset: the truth is exact from per-sample gradients,
    G = mean_n g_n and tr(Sigma) = mean_n |g_n - G|^2. Batches of 48 in micro-batches 20, 20, 8."""
    generator = torch.Generator().manual_seed(1)
    features = torch.randn(200, 5, generator=generator)
    labels = (features[:, 0] + 0.5 * features[:, 1] > 0).long() + (features[:, 2] > 0.8).long()
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(5, 16), nn.Tanh(), nn.Linear(16, 3))
    loss_fn = nn.CrossEntropyLoss()

    per_sample = []
    for index in range(len(labels)):
        model.zero_grad(set_to_none=True)
        loss_fn(model(features[index:index + 1]), labels[index:index + 1]).backward()
        per_sample.append(torch.cat([p.grad.flatten() for p in model.parameters()]).double())
    per_sample = torch.stack(per_sample)
    true_gradient = per_sample.mean(dim=0)
    true_trace = (per_sample - true_gradient).square().sum(dim=1).mean().item()
    true_scale = true_trace / true_gradient.square().sum().item()

    def draw_batch():
        rows = torch.randint(0, len(labels), (48,), generator=generator)
        return features[rows], labels[rows]

    estimate = track(model, loss_fn, draw_batch, 48, physical=20, steps=400)
    assert estimate.noise_scale == pytest.approx(true_scale, rel=0.10)
    assert estimate.confidence > 0.9

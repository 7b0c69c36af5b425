"""Metrics against direct computations on known values."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from batchtrain.errors import ConfigError
from batchtrain.tasks.metrics import MetricSet, float32_rounded
from batchtrain.tasks.kinds import Task


def test_regression_metrics_over_several_batches_match_direct_formulas():
    rng = np.random.default_rng(0)
    targets = rng.normal(size=(50, 2))
    outputs = targets + rng.normal(scale=0.3, size=(50, 2))
    metrics = MetricSet(Task("regression", 2, "mse"), ("mae", "rmse", "r2"))
    for start in range(0, 50, 16):  # uneven batches: 16, 16, 16, 2
        o, t = torch.tensor(outputs[start:start + 16]), torch.tensor(targets[start:start + 16])
        metrics.update(o, t, ((o - t) ** 2).mean())
    values = metrics.compute()
    error = outputs - targets
    assert values["mae"] == pytest.approx(np.abs(error).mean())
    assert values["rmse"] == pytest.approx(np.sqrt((error ** 2).mean()))
    r2_per_output = 1 - (error ** 2).sum(0) / ((targets - targets.mean(0)) ** 2).sum(0)
    assert values["r2"] == pytest.approx(r2_per_output.mean())
    assert values["loss"] == pytest.approx((error ** 2).mean(), rel=1e-6)


def test_accuracy_multiclass_and_binary():
    multiclass = MetricSet(Task("multiclass", 3, "categorical_crossentropy"), ("accuracy",))
    logits = torch.tensor([[2.0, 0, 0], [0, 2.0, 0], [0, 0, 2.0], [2.0, 0, 0]])
    multiclass.update(logits, torch.tensor([0, 1, 0, 0]), torch.tensor(1.0))
    assert multiclass.compute()["accuracy"] == 0.75
    binary = MetricSet(Task("binary", 1, "binary_crossentropy"), ("accuracy",))
    binary.update(torch.tensor([[1.0], [-1.0], [0.5]]), torch.tensor([[1.0], [1.0], [0.0]]),
                  torch.tensor(0.5))
    values = binary.compute()
    assert values["accuracy"] == pytest.approx(1 / 3) and values["loss"] == 0.5


def test_reset_and_empty():
    metrics = MetricSet(Task("multiclass", 2, "cross_entropy"), ("accuracy",))
    metrics.update(torch.tensor([[1.0, 0.0]]), torch.tensor([0]), torch.tensor(0.3))
    metrics.reset()
    assert metrics.compute() == {}


def test_metric_that_does_not_fit_the_task_is_refused():
    with pytest.raises(ConfigError, match="do not apply to regression"):
        MetricSet(Task("regression", 1, "mse"), ("accuracy",))


def classification_batches(kind, batches=7, seed=0):
    """(outputs, targets, mean loss) of uneven batches, float32 as in training."""
    generator = torch.Generator().manual_seed(seed)
    for size in [8, 8, 3, 8, 5, 8, 1][:batches]:
        if kind == "multiclass":
            outputs = torch.randn(size, 4, generator=generator)
            targets = torch.randint(0, 4, (size,), generator=generator)
            yield outputs, targets, F.cross_entropy(outputs, targets)
        else:
            outputs = torch.randn(size, 1, generator=generator)
            targets = (torch.rand(size, 1, generator=generator) > 0.5).float()
            yield outputs, targets, F.binary_cross_entropy_with_logits(outputs, targets)


@pytest.mark.parametrize("kind", ["multiclass", "binary"])
def test_sums_on_the_host_equal_the_device_sums_bit_for_bit(kind):
    """On the CPU scalar sums are Python numbers; the tensor path (other devices) must agree
    exactly, also across a checkpoint (sums read, then restored into a new MetricSet)."""
    task = Task(kind, 4 if kind == "multiclass" else 1, "cross_entropy")
    on_host, on_device, resumed = (MetricSet(task, ("accuracy",)) for _ in range(3))
    on_device.on_host = False  # the path a CUDA device takes, run on the CPU
    assert on_host.on_host and resumed.on_host
    for index, batch in enumerate(classification_batches(kind)):
        on_host.update(*batch)
        on_device.update(*batch)
        if index == 3:
            resumed.sums, resumed.count = on_host.sums, on_host.count
        elif index > 3:
            resumed.update(*batch)
    for key, value in on_device.sums.items():
        assert value.dtype == torch.float64 and torch.equal(on_host.sums[key], value), key
        assert torch.equal(resumed.sums[key], value), key
    assert on_host.compute() == on_device.compute() == resumed.compute()


def test_float32_rounding_on_the_host_matches_torch():
    generator = torch.Generator().manual_seed(0)
    scales = 10.0 ** torch.randint(-30, 30, (200,), generator=generator)
    losses = torch.cat([torch.rand(200, generator=generator) * scales,
                        torch.tensor([0.0, 1e-45, 3.4e38, math.inf, -math.inf])])
    for batch in (1, 3, 8, 100, 4097, 2**20 + 1):
        expected = (losses * batch).double()  # the float32 product
        got = torch.tensor([float32_rounded(value * batch) for value in losses.tolist()],
                           dtype=torch.float64)
        assert torch.equal(got, expected), batch
    assert math.isnan(float32_rounded(math.nan))

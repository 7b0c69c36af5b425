"""The step's gradient-noise measurement (training/measure.py) on a tiny linear model, against
per-micro-batch gradients computed by hand."""
import inspect
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from batchtrain.stats import NoiseScaleTracker, step_estimates
from batchtrain.stats.tracker import NoiseEstimate, noise_estimate
from batchtrain.training.measure import NoiseMeasurement
from batchtrain.training.step import TrainStep, accumulate, micro_batches
from batchtrain.training.sync import SingleProcess

pytestmark = pytest.mark.usefixtures("single_thread")

STAT_KEYS = {"micro_sizes", "micro_sq_norms", "batch_sq_norm"}
ESTIMATE_KEYS = set(NoiseEstimate.__dataclass_fields__)


class FakeGroup:
    world_size = 2


def linear_model():
    torch.manual_seed(0)
    return nn.Linear(4, 1)


def batch(n: int, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=generator)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5], [0.0]]) + 0.3 * torch.randn(n, 1, generator=generator)
    return x, y


def measured(optimizer_name: str = "sgd", group=None, geometry: str = "raw"):
    model = linear_model()
    parameters = list(model.parameters())
    optimizer = (torch.optim.SGD(parameters, lr=0.05) if optimizer_name == "sgd"
                 else torch.optim.Adam(parameters, lr=0.01))
    tracker = NoiseScaleTracker()
    measurement = NoiseMeasurement(parameters, optimizer, tracker, group, geometry=geometry)
    return model, optimizer, measurement, tracker


def sq_norm(tensors) -> float:
    return sum(float(t.double().square().sum()) for t in tensors)


def micro_batch_gradient_sq_norm(model, x, y) -> float:
    """|g_i|^2 of one micro-batch's mean-loss gradient, by its own backward."""
    model.zero_grad(set_to_none=True)
    F.mse_loss(model(x), y).backward()
    norm = sq_norm(p.grad for p in model.parameters())
    model.zero_grad(set_to_none=True)
    return norm


def one_measured_step(model, optimizer, measurement, x, y, physical):
    """What TrainStep.compute does, spelled out: plan, zero, begin, accumulate, finish."""
    parts = micro_batches(x, y, physical)
    measurement.plan(len(parts))
    optimizer.zero_grad(set_to_none=True)
    measurement.begin()
    accumulate(model, F.mse_loss, parts, len(y), True, SingleProcess(), True, measurement)
    return measurement.finish(len(y), len(y))


@pytest.mark.parametrize("logical", [2, 3, 7, 10, 64])
@pytest.mark.parametrize("cap", [1, 4, 1000])
def test_one_process_splits_a_logical_batch_in_at_least_two_micro_batches(logical, cap):
    _, _, measurement, _ = measured()
    physical = measurement.physical_batch(logical, cap)
    assert 1 <= physical <= cap
    assert math.ceil(logical / physical) >= 2
    assert len(torch.arange(logical).split(physical)) >= 2


def test_a_single_sample_and_ddp_are_not_split_for_the_measurement():
    _, _, measurement, _ = measured()
    assert measurement.physical_batch(1, 8) == 1
    _, _, by_rank, _ = measured(group=FakeGroup())
    assert by_rank.physical_batch(10, 64) == 10  # under DDP the ranks are the small batches
    assert by_rank.physical_batch(10, 4) == 4


def test_sgd_plans_a_measurement_of_split_steps_only():
    _, _, measurement, _ = measured()
    measurement.plan(3)
    assert measurement.by_micro_batch is True and measurement.by_rank is False
    assert measurement.factors is None  # SGD's gradients are measured as they are
    measurement.plan(1)  # one micro-batch: nothing to compare it with
    assert measurement.by_micro_batch is False and measurement.by_rank is False


def test_measured_statistics_are_the_micro_batch_gradient_norms():
    model, optimizer, measurement, tracker = measured()
    x, y = batch(10)
    physical = measurement.physical_batch(10, 4)
    statistics = one_measured_step(model, optimizer, measurement, x, y, physical)

    assert set(statistics) == STAT_KEYS
    update_arguments = set(inspect.signature(NoiseScaleTracker.update).parameters) - {"self"}
    assert set(statistics) == update_arguments  # what the tracker takes
    assert statistics["micro_sizes"] == [len(part) for part in y.split(physical)]
    assert sum(statistics["micro_sizes"]) == 10
    assert statistics["batch_sq_norm"] == pytest.approx(sq_norm(p.grad for p in model.parameters()),
                                                        rel=1e-5)
    expected = [micro_batch_gradient_sq_norm(model, part_x, part_y)
                for part_x, part_y in zip(x.split(physical), y.split(physical))]
    assert statistics["micro_sq_norms"] == pytest.approx(expected, rel=1e-4)
    assert tracker.updates == 0  # finish measures; only record() updates the tracker


def test_record_updates_the_tracker_and_its_estimate_appears():
    model, optimizer, measurement, tracker = measured()
    assert noise_estimate(tracker) == {}
    measurement.record(None)  # an unmeasured step changes nothing
    assert tracker.updates == 0 and noise_estimate(tracker) == {}

    history = []
    for seed in range(6):
        x, y = batch(16, seed)
        statistics = one_measured_step(model, optimizer, measurement, x, y, 4)
        optimizer.step()
        measurement.record(statistics)
        history.append(statistics)
        estimate = noise_estimate(tracker)
        assert set(estimate) == ESTIMATE_KEYS and estimate["updates"] == seed + 1
        if seed == 0:  # the first estimate is that step's, bias-corrected (stats/test_tracker.py)
            grad_sq, trace = step_estimates(**statistics)
            assert (estimate["grad_sq"], estimate["trace"]) == pytest.approx((grad_sq, trace))
            assert estimate["confidence"] == 0.0 and estimate["relative_error"] == math.inf
    assert math.isfinite(estimate["relative_error"])  # a spread once there are several steps
    assert 0.0 <= estimate["confidence"] <= 1.0
    assert estimate["trace"] > 0 and estimate["grad_sq"] > 0  # far from the optimum: a signal
    assert estimate["noise_scale"] == pytest.approx(estimate["trace"] / estimate["grad_sq"])
    replay = NoiseScaleTracker()
    for statistics in history:
        replay.update(**statistics)
    assert noise_estimate(replay) == noise_estimate(tracker)


def test_raw_gradients_of_adam_are_measured_from_its_first_step():
    model, optimizer, measurement, tracker = measured("adam")  # the default geometry: raw
    statistics = one_measured_step(model, optimizer, measurement, *batch(12), 4)
    assert measurement.by_micro_batch is True and measurement.factors is None
    assert set(statistics) == STAT_KEYS


def test_preconditioned_adam_is_not_measured_before_its_first_step():
    model, optimizer, measurement, tracker = measured("adam", geometry="preconditioned")
    x, y = batch(12)
    assert one_measured_step(model, optimizer, measurement, x, y, 4) is None
    assert measurement.by_micro_batch is False and measurement.by_rank is False
    assert measurement.factors is None  # no second moments yet
    measurement.record(None)
    assert tracker.updates == 0

    optimizer.step()  # now Adam has its moments: the next step is measured in its geometry
    statistics = one_measured_step(model, optimizer, measurement, *batch(12, 1), 4)
    assert measurement.by_micro_batch is True and measurement.factors is not None
    assert set(statistics) == STAT_KEYS and statistics["micro_sizes"] == [4, 4, 4]


def test_train_step_with_a_measurement_returns_and_records_the_statistics():
    model, optimizer, measurement, tracker = measured()
    parameters = list(model.parameters())
    step = TrainStep(model, F.mse_loss, optimizer, parameters, SingleProcess(), measurement)
    assert step.physical_batch(10, 100) == measurement.physical_batch(10, 100) < 10
    x, y = batch(10)
    outcome = step.compute(micro_batches(x, y, step.physical_batch(10, 100)), 10, True)
    assert outcome.finite is True and set(outcome.statistics) == STAT_KEYS
    assert tracker.updates == 0
    step.apply(outcome)
    assert tracker.updates == 1
    assert noise_estimate(tracker)["updates"] == 1


def test_noise_estimate_without_a_tracker_is_empty():
    assert noise_estimate(None) == {}
    assert noise_estimate(NoiseScaleTracker()) == {}


class GroupOfOne:
    world_size = 1


def test_a_group_of_one_process_measures_by_micro_batch_as_one_process_does():
    model, optimizer, measurement, _ = measured("sgd", GroupOfOne())
    measurement.plan(micro_batches=2)
    assert measurement.by_micro_batch and not measurement.by_rank

"""The step pipeline (training/step.py) piece by piece, against hand-written torch computations:
micro-batches, accumulation over them, and TrainStep's compute / apply / discard."""
import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from batchtrain.training.step import StepOutcome, TrainStep, accumulate, micro_batches
from batchtrain.training.sync import SingleProcess

pytestmark = pytest.mark.usefixtures("single_thread")

LOGICAL = 10


def data(n: int = LOGICAL, seed: int = 0, classes: int = 0):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 5, generator=generator)
    if classes:
        return x, torch.randint(0, classes, (n,), generator=generator)
    return x, torch.randn(n, 3, generator=generator)


def network(seed: int = 1, outputs: int = 3) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, outputs))


def whole_batch_gradients(model: nn.Module, loss_fn, x, y) -> list[torch.Tensor]:
    """The reference: one backward of the whole batch's mean loss."""
    reference = copy.deepcopy(model)
    reference.zero_grad(set_to_none=True)
    loss_fn(reference(x), y).backward()
    return [p.grad.clone() for p in reference.parameters()]


# --- micro_batches -----------------------------------------------------------------------------

@pytest.mark.parametrize("physical, sizes", [(1, [1] * 10), (3, [3, 3, 3, 1]), (4, [4, 4, 2]),
                                             (5, [5, 5]), (9, [9, 1])])
def test_micro_batches_split_and_concatenate_back(physical, sizes):
    x, y = data()
    parts = micro_batches(x, y, physical)
    assert [len(part_y) for _, part_y in parts] == sizes
    assert all(len(part_x) == len(part_y) for part_x, part_y in parts)
    assert torch.equal(torch.cat([part_x for part_x, _ in parts]), x)
    assert torch.equal(torch.cat([part_y for _, part_y in parts]), y)


@pytest.mark.parametrize("physical", [LOGICAL, LOGICAL + 1, 1000])
def test_a_batch_within_the_physical_size_is_returned_unsplit(physical):
    x, y = data()
    parts = micro_batches(x, y, physical)
    assert len(parts) == 1
    assert parts[0][0] is x and parts[0][1] is y  # the very tensors: no split op


# --- accumulate --------------------------------------------------------------------------------

@pytest.mark.parametrize("physical", [1, 3, 4, 5, LOGICAL])
@pytest.mark.parametrize("kind", ["mse", "cross_entropy"])
def test_accumulated_gradient_equals_one_backward_of_the_whole_batch(physical, kind):
    """Each micro-batch's mean loss weighted by its share: the gradient of the batch's mean loss,
    uneven last micro-batches included."""
    classes = 3 if kind == "cross_entropy" else 0
    x, y = data(classes=classes)
    loss_fn = F.cross_entropy if classes else F.mse_loss
    model = network()
    expected = whole_batch_gradients(model, loss_fn, x, y)

    parts = micro_batches(x, y, physical)
    results = accumulate(model, loss_fn, parts, LOGICAL, True, SingleProcess(), True, None)

    for parameter, reference in zip(model.parameters(), expected):
        torch.testing.assert_close(parameter.grad, reference, rtol=1e-5, atol=1e-6)
    assert len(results) == len(parts)
    for (outputs, targets, loss), (part_x, part_y) in zip(results, parts):
        assert targets is part_y
        assert not outputs.requires_grad and not loss.requires_grad  # detached
        torch.testing.assert_close(outputs, model(part_x).detach())
        torch.testing.assert_close(loss, loss_fn(model(part_x), part_y).detach())


def test_accumulation_adds_to_existing_gradients():
    """accumulate only adds (the caller zeroes): two calls give twice the gradient."""
    x, y = data()
    model = network()
    expected = whole_batch_gradients(model, F.mse_loss, x, y)
    for _ in range(2):
        accumulate(model, F.mse_loss, micro_batches(x, y, 4), LOGICAL, True, SingleProcess(),
                   True, None)
    for parameter, reference in zip(model.parameters(), expected):
        torch.testing.assert_close(parameter.grad, 2 * reference, rtol=1e-5, atol=1e-6)


def test_a_padding_batch_gives_zero_gradients_and_no_results():
    x, y = data()
    model = network()
    results = accumulate(model, F.mse_loss, micro_batches(x, y, 4), LOGICAL, False,
                         SingleProcess(), True, None)
    assert results == []
    for parameter in model.parameters():
        assert parameter.grad is not None  # the backward ran (DDP needs every rank to join it)
        assert torch.count_nonzero(parameter.grad) == 0


# --- TrainStep ---------------------------------------------------------------------------------

def make_optimizer(name: str, parameters):
    if name == "sgd":
        return torch.optim.SGD(parameters, lr=0.1, momentum=0.9)
    return torch.optim.Adam(parameters, lr=0.01)


def pipeline(model: nn.Module, optimizer_name: str) -> TrainStep:
    parameters = list(model.parameters())
    return TrainStep(model, F.mse_loss, make_optimizer(optimizer_name, parameters), parameters,
                     SingleProcess())


@pytest.mark.parametrize("optimizer_name", ["sgd", "adam"])
@pytest.mark.parametrize("physical", [3, LOGICAL])
def test_compute_then_apply_equals_a_hand_written_optimizer_step(optimizer_name, physical):
    model = network()
    reference = copy.deepcopy(model)
    reference_optimizer = make_optimizer(optimizer_name, reference.parameters())
    step = pipeline(model, optimizer_name)
    for seed in range(3):  # a few steps: momentum and Adam's moments carry over
        x, y = data(seed=seed)
        outcome = step.compute(micro_batches(x, y, physical), LOGICAL, True)
        assert isinstance(outcome, StepOutcome)
        assert outcome.finite is True and outcome.statistics is None
        assert len(outcome.results) == math.ceil(LOGICAL / physical)
        step.apply(outcome)

        reference_optimizer.zero_grad()
        F.mse_loss(reference(x), y).backward()
        reference_optimizer.step()
        for ours, theirs in zip(model.parameters(), reference.parameters()):
            torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)
    assert not all(torch.equal(a, b) for a, b in zip(model.parameters(),
                                                     network().parameters()))  # it did train


def test_compute_starts_from_zero_gradients():
    """Gradients left over from before the step are dropped, not added in."""
    model = network()
    x, y = data()
    expected = whole_batch_gradients(model, F.mse_loss, x, y)
    for parameter in model.parameters():
        parameter.grad = torch.full_like(parameter, 100.0)
    pipeline(model, "sgd").compute(micro_batches(x, y, 4), LOGICAL, True)
    for parameter, reference in zip(model.parameters(), expected):
        torch.testing.assert_close(parameter.grad, reference, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("optimizer_name", ["sgd", "adam"])
def test_discard_drops_the_gradients_and_changes_no_parameter(optimizer_name):
    model = network()
    before = [p.detach().clone() for p in model.parameters()]
    step = pipeline(model, optimizer_name)
    x, y = data()
    outcome = step.compute(micro_batches(x, y, 4), LOGICAL, True)
    assert any(torch.count_nonzero(p.grad) > 0 for p in model.parameters())
    step.discard()
    assert all(p.grad is None for p in model.parameters())
    for parameter, original in zip(model.parameters(), before):
        assert torch.equal(parameter, original)
    assert outcome.finite is True
    assert len(step.optimizer.state) == 0  # the optimizer never stepped: no moments either


@pytest.mark.parametrize("where", ["inputs", "targets"])
@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_a_non_finite_value_in_the_batch_makes_the_step_non_finite(where, value):
    model = network()
    before = [p.detach().clone() for p in model.parameters()]
    x, y = data()
    (x if where == "inputs" else y)[7, 1] = value  # in the third micro-batch of 3
    step = pipeline(model, "sgd")
    outcome = step.compute(micro_batches(x, y, 3), LOGICAL, True)
    assert outcome.finite is False
    step.discard()
    for parameter, original in zip(model.parameters(), before):
        assert torch.equal(parameter, original)
    # the same pipeline with clean data is finite again
    assert step.compute(micro_batches(*data(), 3), LOGICAL, True).finite is True


@pytest.mark.parametrize("logical, cap, expected", [(10, 4, 4), (10, 10, 10), (10, 64, 10),
                                                    (1, 8, 1), (7, 1, 1)])
def test_physical_batch_without_measurement_is_the_smaller_of_logical_and_cap(logical, cap,
                                                                              expected):
    assert pipeline(network(), "sgd").physical_batch(logical, cap) == expected

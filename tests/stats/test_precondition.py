"""Noise measured in an adaptive optimizer's geometry: the factors, the collector with them, and the
trainer's use (Adam's first step is not measured, later ones are)."""
import numpy as np
import pytest
import torch
from torch import nn

from batchtrain import Trainer
from batchtrain.batching.adaptive import Adaptive
from batchtrain.stats import MicroBatchGradients, Preconditioner

pytestmark = pytest.mark.usefixtures("single_thread")


def stepped(optimizer_class, steps: int = 3, **options):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 2))
    optimizer = optimizer_class(model.parameters(), **options)
    for _ in range(steps):
        optimizer.zero_grad()
        model(torch.randn(16, 5)).square().mean().backward()
        optimizer.step()
    return model, optimizer


@pytest.mark.parametrize("amsgrad", [False, True])
def test_adam_factors_are_one_over_root_of_bias_corrected_second_moment(amsgrad):
    model, optimizer = stepped(torch.optim.Adam, betas=(0.9, 0.99), eps=1e-3, amsgrad=amsgrad)
    parameters = list(model.parameters())
    factors = Preconditioner(optimizer).factors(parameters)
    for parameter, factor in zip(parameters, factors):
        state = optimizer.state[parameter]
        second = state["max_exp_avg_sq"] if amsgrad else state["exp_avg_sq"]
        expected = 1.0 / ((second / (1 - 0.99 ** 3)).sqrt() + 1e-3)
        torch.testing.assert_close(factor, expected)


def test_rmsprop_factors_and_sgd_has_none():
    model, optimizer = stepped(torch.optim.RMSprop, alpha=0.9, eps=1e-4)
    parameters = list(model.parameters())
    factors = Preconditioner(optimizer).factors(parameters)
    for parameter, factor in zip(parameters, factors):
        torch.testing.assert_close(factor, 1.0 / (optimizer.state[parameter]["square_avg"].sqrt() + 1e-4))
    _, sgd = stepped(torch.optim.SGD, lr=0.1)
    assert not Preconditioner(sgd).adaptive
    assert Preconditioner(sgd).factors(parameters) is None


def test_no_factors_before_the_first_step():
    model = nn.Linear(3, 1)
    optimizer = torch.optim.Adam(model.parameters())
    assert Preconditioner(optimizer).adaptive
    assert Preconditioner(optimizer).factors(list(model.parameters())) is None


def test_parameters_without_state_are_left_out_not_the_step():
    """A frozen layer (in the optimizer, never stepped) gets zero factors: the step is measured on
    the parameters Adam moves, instead of never being measured at all."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 4).requires_grad_(False), nn.Tanh(), nn.Linear(4, 2))
    optimizer = torch.optim.Adam(model.parameters())
    model(torch.randn(16, 5)).square().mean().backward()
    optimizer.step()
    parameters = list(model.parameters())
    factors = Preconditioner(optimizer).factors(parameters)
    assert factors is not None
    assert all(torch.count_nonzero(factor) == 0 for factor in factors[:2])  # the frozen layer
    for parameter, factor in zip(parameters[2:], factors[2:]):
        expected = 1.0 / ((optimizer.state[parameter]["exp_avg_sq"] / (1 - 0.999)).sqrt() + 1e-8)
        torch.testing.assert_close(factor, expected, rtol=1e-5, atol=0)


def test_collector_measures_preconditioned_micro_batch_gradients():
    """|P g_i|^2 and |P G_B|^2, against gradients computed separately and scaled by hand."""
    model, optimizer = stepped(torch.optim.Adam)
    parameters = list(model.parameters())
    factors = Preconditioner(optimizer).factors(parameters)
    generator = torch.Generator().manual_seed(1)
    x, target = torch.randn(24, 5, generator=generator), torch.randn(24, 2, generator=generator)

    def loss(rows):
        return (model(x[rows]) - target[rows]).square().mean()

    collector = MicroBatchGradients(parameters)
    model.zero_grad(set_to_none=True)
    collector.begin(factors)
    for rows in (slice(0, 10), slice(10, 24)):
        weight = (rows.stop - rows.start) / 24
        (loss(rows) * weight).backward()
        collector.after_micro_batch(rows.stop - rows.start, weight)
    stats = collector.finish(24)

    def scaled_sq_norm(rows):
        grads = torch.autograd.grad(loss(rows), parameters)
        return sum((g * f).double().square().sum().item() for g, f in zip(grads, factors))

    assert stats["micro_sq_norms"] == pytest.approx(
        [scaled_sq_norm(slice(0, 10)), scaled_sq_norm(slice(10, 24))], rel=1e-5)
    assert stats["batch_sq_norm"] == pytest.approx(scaled_sq_norm(slice(0, 24)), rel=1e-5)
    unscaled = sum(p.grad.double().square().sum().item() for p in parameters)
    assert stats["batch_sq_norm"] != pytest.approx(unscaled, rel=1e-2)  # the factors did act


def test_trainer_measures_preconditioned_adam_from_its_second_step():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, 6)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    trainer = Trainer("mlp", model_options={"hidden": [8]}, optimizer="adam", seed=0)
    adam = trainer.fit(x, y, batch_size=Adaptive(rule="noise-scale", min_batch=32, initial=32,
                                                  geometry="preconditioned"), epochs=1)
    sgd_trainer = Trainer("mlp", model_options={"hidden": [8]}, optimizer="sgd", seed=0)
    sgd = sgd_trainer.fit(x, y, batch_size=Adaptive(rule="noise-scale", min_batch=32, initial=32),
                          epochs=1)
    # steps 0, 4 measured for SGD; Adam's step 0 has no second moments, so 1 (then 4) instead
    first = [next(i for i, step in enumerate(run.steps) if "noise_scale" in step) for run in (adam, sgd)]
    assert first == [1, 0]  # (raw, the default geometry, measures Adam from its first step)
    assert trainer.noise_.updates == sgd_trainer.noise_.updates == 2

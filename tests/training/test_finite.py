"""The per-step finiteness check: exact on every element, values untouched, and a finite loss with a
non-finite gradient is caught in a real fit (checking the loss alone would apply it)."""
import math

import pytest
import torch
from torch import nn

from batchtrain import Trainer
from batchtrain.training.finite import step_is_finite

pytestmark = pytest.mark.usefixtures("single_thread")


def gradients(*poison):
    """A few gradient-shaped tensors; `poison` puts (tensor index, flat index, value) into them."""
    generator = torch.Generator().manual_seed(0)
    tensors = [torch.randn(shape, generator=generator) for shape in ((4, 3), (3,), (2, 2, 3))]
    for which, where, value in poison:
        tensors[which].view(-1)[where] = value
    return tensors


@pytest.mark.parametrize("poison", [
    [(0, 5, math.nan)], [(1, 0, math.inf)], [(2, 11, -math.inf)],  # first, middle, last tensor
])
def test_a_single_non_finite_gradient_element_is_found(poison):
    assert step_is_finite([torch.tensor(0.5)], gradients()) is True
    assert step_is_finite([torch.tensor(0.5)], gradients(*poison)) is False


@pytest.mark.parametrize("loss", [math.nan, math.inf])
def test_a_non_finite_loss_is_found_with_finite_gradients(loss):
    assert step_is_finite([torch.tensor(0.5), torch.tensor(loss)], gradients()) is False


def test_large_finite_gradients_are_finite():
    """Finite, though their norm overflows float32 (a norm-based check would stop the run)."""
    large = gradients((1, 0, 3e38), (1, 1, -3e38))
    assert not torch.isfinite(torch.linalg.vector_norm(large[1]))
    assert step_is_finite([torch.tensor(1.0)], large) is True


def test_the_check_leaves_every_value_unchanged_bit_for_bit():
    nan_with_payload = torch.tensor([0x7FC00123], dtype=torch.int32).view(torch.float32)
    special = torch.cat([torch.tensor([-0.0, 1e-45, 1e-40, -3.4e38, 1.0]), nan_with_payload])
    tensors = [special, *gradients()]
    before = [tensor.clone() for tensor in tensors]
    assert step_is_finite([], tensors) is False  # the NaN
    for got, expected in zip(tensors, before):
        assert torch.equal(got.view(torch.int32), expected.view(torch.int32))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_other_float_dtypes(dtype):
    assert step_is_finite([], [torch.ones(3, dtype=dtype)]) is True
    assert step_is_finite([], [torch.tensor([1.0, math.inf], dtype=dtype)]) is False


def test_sparse_gradients_take_the_per_tensor_path():
    sparse = torch.sparse_coo_tensor([[0, 2]], [1.0, 2.0], (4,), check_invariants=True)
    assert step_is_finite([], [sparse, torch.ones(2)]) is True
    poisoned = torch.sparse_coo_tensor([[1]], [math.nan], (4,), check_invariants=True)
    assert step_is_finite([], [torch.ones(2), poisoned]) is False


def test_reduce_decides_for_every_rank():
    """Under DDP the flag is summed over ranks: a rank with finite values still stops."""
    other_rank_found_one = lambda flag: flag + 1  # noqa: E731  (what an all-reduce would add)
    assert step_is_finite([torch.tensor(0.5)], gradients(), reduce=other_rank_found_one) is False


class SqrtAtZeroAt(nn.Module):
    """Finite outputs and loss at every step; on the `at`-th training forward pass the gradient of
    `gate` is NaN (d sqrt(|g|)/dg at g = 0 is inf x 0)."""

    def __init__(self, at):
        super().__init__()
        self.linear, self.gate = nn.Linear(8, 3), nn.Parameter(torch.ones(()))
        self.at, self.calls = at, 0

    def forward(self, x):
        self.calls += self.training
        gate = self.gate * 0.0 if self.training and self.calls == self.at else self.gate
        return self.linear(x) * torch.sqrt(gate.abs())


def test_finite_loss_with_non_finite_gradient_is_not_applied():
    generator = torch.Generator().manual_seed(0)
    x, y = torch.randn(40, 8, generator=generator), torch.arange(40) % 3
    torch.manual_seed(0)
    model = SqrtAtZeroAt(at=3)
    trainer = Trainer(model, optimizer="sgd", lr=0.1, seed=0, on_nonfinite="skip",
                      max_physical_batch=64)
    with pytest.warns(UserWarning, match="step 3 .*skipped"):
        history = trainer.fit(x, y, batch_size=10, epochs=1)
    assert [step.get("skipped", False) for step in history.steps] == [False, False, True, False]
    assert math.isfinite(history[-1]["loss"])  # the loss was finite throughout
    assert all(torch.isfinite(parameter).all() for parameter in model.parameters())

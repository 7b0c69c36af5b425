"""Fused conv blocks and the fused seed-cnn: the same function and gradients as the plain layers."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from batchtrain.models import seed_cnn
from batchtrain.models.fast_layers import (
    GemmConvReluPool,
    MaxPoolRelu,
    conv_relu_pool,
    max4_first,
    pooled_size,
    scatter4_first,
)
from batchtrain.models.seed_cnn import SeedCNN

pytestmark = pytest.mark.usefixtures("single_thread")


def images_with_flat_regions(shape, dtype=torch.float64, seed=0):
    """Random images whose top rows and left columns are constant: pooling windows there tie."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.rand(shape, generator=generator, dtype=dtype)
    x[..., :7, :] = 0.0
    x[..., :, :5] = 0.5
    return x


def plain_block(x, weight, bias, rows, cols):
    return F.max_pool2d(F.relu(F.conv2d(x, weight, bias)), 2)[:, :, :rows, :cols]


def conv_parameters(in_channels, out_channels, dtype=torch.float64, seed=1):
    generator = torch.Generator().manual_seed(seed)
    weight = torch.randn(out_channels, in_channels, 3, 3, generator=generator, dtype=dtype) * 0.3
    bias = torch.randn(out_channels, generator=generator, dtype=dtype) * 0.1
    return weight.requires_grad_(), bias.requires_grad_()


def value_and_grads(block, x, weight, bias, rows, cols, upstream):
    out = block(x, weight, bias, rows, cols)
    grads = torch.autograd.grad((out * upstream).sum(), [t for t in (x, weight, bias) if t.requires_grad])
    return out, grads


@pytest.mark.parametrize("channels, height, width, rows, cols", [
    (1, 28, 28, 12, 12),  # the reference job's first block: only the outputs conv2 reads
    (1, 28, 28, 13, 13),  # every pooled output
    (3, 13, 17, 5, 7),    # RGB, odd sizes: floor-pooling drops the last row and column
    (4, 10, 10, 3, 4),
])
def test_gemm_block_matches_plain_layers_values_and_gradients(channels, height, width, rows, cols):
    x = images_with_flat_regions((5, channels, height, width))
    weight, bias = conv_parameters(channels, 8)
    upstream = torch.randn(5, 8, rows, cols, dtype=x.dtype)
    ours = value_and_grads(conv_relu_pool, x, weight, bias, rows, cols, upstream)
    plain = value_and_grads(plain_block, x, weight, bias, rows, cols, upstream)
    assert ours[0].is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(ours[0], plain[0], rtol=1e-12, atol=1e-12)
    for got, expected in zip(ours[1], plain[1]):
        torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_onednn_block_matches_plain_layers_including_the_input_gradient(layout):
    # 32 channels (conv2) go through oneDNN and MaxPoolRelu, which also returns dL/dx.
    x = images_with_flat_regions((3, 32, 13, 13)).contiguous(memory_format=layout).requires_grad_()
    weight, bias = conv_parameters(32, 16)
    upstream = torch.randn(3, 16, 5, 5, dtype=x.dtype)
    ours = value_and_grads(conv_relu_pool, x, weight, bias, 5, 5, upstream)
    plain = value_and_grads(plain_block, x, weight, bias, 5, 5, upstream)
    torch.testing.assert_close(ours[0], plain[0], rtol=1e-12, atol=1e-12)
    assert len(ours[1]) == 3
    for got, expected in zip(ours[1], plain[1]):
        torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


def test_ties_go_to_the_first_maximum_in_scan_order_as_max_pool2d():
    # Every window holds equal values in chosen places; the gradient must land where max_pool2d
    # puts it, so a value placed at each phase is compared with the plain pool's choice.
    for pattern in ([1, 1, 1, 1], [0, 1, 1, 0], [0, 0, 1, 1], [1, 0, 0, 1], [0, 2, 2, 2]):
        window = torch.tensor(pattern, dtype=torch.float64).view(1, 1, 2, 2).requires_grad_()
        ours = MaxPoolRelu.apply(window, 1, 1)
        (grad_ours,) = torch.autograd.grad(ours.sum(), window)
        plain = F.max_pool2d(F.relu(window), 2)
        (grad_plain,) = torch.autograd.grad(plain.sum(), window)
        assert torch.equal(ours, plain) and torch.equal(grad_ours, grad_plain), pattern


def test_max4_and_scatter4_give_each_window_one_gradient():
    generator = torch.Generator().manual_seed(0)
    phases = list(torch.randint(0, 3, (4, 50), generator=generator).float())  # many ties
    maximum, winners = max4_first(phases, need_index=True)
    outputs = list(torch.empty(4, 50))
    grad = torch.rand(50, generator=generator)
    scatter4_first(grad, winners, outputs)
    stacked = torch.stack(phases)
    first_winner = (stacked == maximum).float().argmax(dim=0)  # argmax returns the first
    expected = torch.zeros(4, 50).scatter_(0, first_winner.unsqueeze(0), grad.unsqueeze(0))
    assert torch.equal(torch.stack(outputs), expected)


def test_inference_saves_nothing_and_returns_the_same_values():
    x = images_with_flat_regions((2, 1, 28, 28), torch.float32)
    weight, bias = conv_parameters(1, 32, torch.float32)
    with torch.inference_mode():
        out = conv_relu_pool(x, weight, bias, 12, 12)
    torch.testing.assert_close(out, plain_block(x, weight, bias, 12, 12).detach())
    assert pooled_size(28) == 13 and pooled_size(pooled_size(28)) == 5


def reference_sequential(shape=(1, 28, 28), seed=0):
    torch.manual_seed(seed)
    return seed_cnn(shape, 10, fused=False)


@pytest.mark.parametrize("shape", [(1, 28, 28), (28, 28), (3, 21, 17)])
def test_fused_seed_cnn_matches_the_layer_by_layer_network(shape):
    model = reference_sequential(shape)
    x = images_with_flat_regions((6, *shape), torch.float32)
    y = torch.arange(6) % 10
    results = []
    for fused in (False, True):
        model.fused = fused
        model.zero_grad()
        outputs = model(x)
        F.cross_entropy(outputs, y).backward()
        results.append((outputs.detach(), [p.grad.clone() for p in model.parameters()]))
    torch.testing.assert_close(results[1][0], results[0][0], rtol=1e-5, atol=1e-6)
    for got, expected in zip(results[1][1], results[0][1]):
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-7)


def test_fused_seed_cnn_keeps_the_reference_layers_names_and_parameter_count():
    model = seed_cnn((1, 28, 28), 10)
    assert isinstance(model, SeedCNN) and isinstance(model, nn.Sequential) and model.fused
    plain = nn.Sequential(*list(model))  # what test_models.py checks, and what weights were saved as
    assert list(model.state_dict()) == list(plain.state_dict())
    assert sum(p.numel() for p in model.parameters()) == 121_930
    assert isinstance(model[3:], SeedCNN)  # slicing keeps working (and runs the layers one by one)


def test_weights_of_a_plain_sequential_load_into_the_fused_model():
    plain = reference_sequential(seed=3)
    fused = seed_cnn((1, 28, 28), 10)
    fused.load_state_dict(plain.state_dict())
    x = torch.rand(4, 1, 28, 28)
    torch.testing.assert_close(fused(x), nn.Sequential(*list(plain))(x), rtol=1e-5, atol=1e-6)


def test_changed_structure_or_hooks_fall_back_to_the_layers():
    model = reference_sequential()
    x = torch.rand(2, 1, 28, 28)
    seen = []
    model[0].register_forward_hook(lambda layer, inputs, output: seen.append(output.shape))
    model(x)
    assert seen == [(2, 32, 26, 26)]  # the hook ran: the layers ran one by one
    model = reference_sequential()
    model[1] = nn.Tanh()
    torch.testing.assert_close(model(x), nn.Sequential(*list(model))(x))
    model = reference_sequential()
    model[5] = nn.MaxPool2d(2, ceil_mode=True)  # 11x11 -> 6x6: the dense layer (5x5) refuses
    with pytest.raises(RuntimeError):
        model(x)


def test_double_inputs_and_inputs_that_need_gradients():
    model = reference_sequential().double()
    model.fused = True
    x = torch.rand(3, 1, 28, 28, dtype=torch.float64, requires_grad=True)
    (grad_fused,) = torch.autograd.grad(model(x).sum(), x)  # saliency maps: dL/dx from the fused path
    model.fused = False
    (grad_plain,) = torch.autograd.grad(model(x).sum(), x)
    torch.testing.assert_close(grad_fused, grad_plain, rtol=1e-10, atol=1e-12)


def test_training_with_the_fused_model_follows_the_plain_one():
    """Twenty Adam steps from the same weights on the same batches end at the same parameters.

    In float64: Adam divides by sqrt(v), so in float32 a rounding difference in a near-zero
    gradient can move a weight by a good part of lr, for any change of summation order
    (channels_last or a thread count do the same); float64 shows the mathematics is the same.
    """
    x = images_with_flat_regions((160, 1, 28, 28), torch.float64)
    y = torch.arange(160) % 10
    trained = []
    for fused in (False, True):
        model = reference_sequential().double()
        model.fused = fused
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, eps=1e-7)
        for step in range(20):
            index = slice(8 * step, 8 * step + 8)
            optimizer.zero_grad()
            F.cross_entropy(model(x[index]), y[index]).backward()
            optimizer.step()
        trained.append(list(model.parameters()))
    for got, expected in zip(*trained):
        torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-11)


def test_gemm_block_refuses_nothing_it_cannot_do():
    # The first block has no input gradient; conv_relu_pool routes inputs that need one elsewhere.
    x = torch.rand(2, 1, 12, 12, requires_grad=True)
    weight, bias = conv_parameters(1, 4, torch.float32)
    out = conv_relu_pool(x, weight, bias, 5, 5)
    assert out.grad_fn is not None and "GemmConvReluPool" not in type(out.grad_fn).__name__
    out = GemmConvReluPool.apply(x.detach(), weight, bias, 5, 5)
    assert "GemmConvReluPool" in type(out.grad_fn).__name__

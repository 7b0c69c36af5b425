"""Fused Conv2d(3x3) > ReLU > MaxPool2d(2) blocks for the CPU: the same function, less work.

Why (measured on a 2-core Zen 3, batch 128, forward + backward): the plain layers spend more time on
the 26x26x32 activation of the first convolution than on arithmetic. oneDNN runs conv1
(1 input channel, 9 multiply-adds per output) at ~6 GFLOP/s: its output is written at 9
multiply-adds per float, and its weight gradient (32x9 values, each a sum over N x 676 positions)
runs poorly; ReLU, max-pooling and their backward passes each stream that 11 MB tensor (batch 128)
again, which took 40 % of a step. Three exact rewrites remove most of it:

1. max and ReLU commute: relu(maxpool(x)) == maxpool(relu(x)) (ReLU is monotone), gradients
   included (both give the window's first maximum the gradient when it is > 0, else nothing).
   Pooling first makes ReLU and its backward 4x cheaper.
2. conv1 as one matrix product over "pooling phases": rows are grouped by the position (dy, dx)
   of each output inside its 2x2 pooling window, so the four candidates of every window are four
   contiguous row blocks and pooling is three elementwise maximums. The weight gradient is one
   (9C x rows) @ (rows x O) product, a shape MKL runs fast (the transposed one is ~7x slower).
3. Work whose result is discarded is skipped: 'valid' 3x3 convs and floor-pooling never use the
   last rows and columns of a 28x28 image (26x26 suffices), so each block computes only the
   outputs the next layer reads. Those outputs get zero gradient in the plain network, so skipping
   them changes no value (17 % fewer conv2 FLOPs, 15 % fewer conv1 FLOPs).

Ties inside a pooling window go to the first maximum in scan order, as in torch's max_pool2d,
which matters where the image is constant (Fashion-MNIST's black background). Sums are evaluated
in another order than oneDNN's, so results agree with nn.Conv2d to float rounding (allclose), as
channels_last or another thread count would.
"""
import torch
from torch import Tensor
from torch.autograd import Function
from torch.autograd.function import once_differentiable

# The matrix-product conv1 pays off while the patch matrix is small: up to 4 input channels
# (grey, RGB, RGBA); wider inputs go through oneDNN's convolution.
MAX_GEMM_CHANNELS = 4


def pooled_size(size: int) -> int:
    """Output size of a 3x3 'valid' conv followed by 2x2 floor-pooling."""
    return (size - 2) // 2


def max4_first(phases: list[Tensor], need_index: bool) -> tuple[Tensor, tuple | None]:
    """Elementwise max of the four window phases (scan order) and, if asked, which one won.

    The winner is the first maximum, as in max_pool2d: o1 wins over o0 only if strictly larger.
    Returns (max, (right_in_top, right_in_bottom, bottom)) as 0/1 float masks, or (max, None).
    Masks are floats because torch's CPU kernels that read or write bool tensors are not
    vectorised: torch.where on bool masks ran ~25x slower than a float multiply here.
    """
    top = torch.maximum(phases[0], phases[1])
    bottom = torch.maximum(phases[2], phases[3])
    maximum = torch.maximum(top, bottom)
    if not need_index:
        return maximum, None
    masks = [torch.empty_like(top) for _ in range(3)]  # top's layout keeps the loops contiguous
    torch.gt(phases[1], phases[0], out=masks[0])
    torch.gt(phases[3], phases[2], out=masks[1])
    torch.gt(bottom, top, out=masks[2])
    return maximum, tuple(masks)


def scatter4_first(grad: Tensor, winners: tuple, outputs: list[Tensor]) -> None:
    """Write grad into the winning phase of each window and zero into the three others.

    Multiplying by a 0/1 mask and subtracting a value from itself are exact, so each output holds
    either grad or zero, as a scatter would.
    """
    right_top, right_bottom, bottom = winners
    bottom_grad = grad * bottom
    top_grad = grad - bottom_grad
    torch.mul(top_grad, right_top, out=outputs[1])
    torch.sub(top_grad, outputs[1], out=outputs[0])
    torch.mul(bottom_grad, right_bottom, out=outputs[3])
    torch.sub(bottom_grad, outputs[3], out=outputs[2])


def phase_patches(x: Tensor, rows: int, cols: int) -> Tensor:
    """The im2col matrix of x (N, C, H, W), transposed: (C*9, 4*N*rows*cols).

    Column order (dy, dx, n, py, px): output (2py+dy, 2px+dx) of image n, grouped by its place
    (dy, dx) in the 2x2 pooling window. Row order (c, ky, kx) matches weight.view(O, C*9).
    """
    n, channels = x.shape[:2]
    s_n, s_c, s_h, s_w = x.stride()
    view = x.as_strided((channels, 3, 3, 2, 2, n, rows, cols),
                        (s_c, s_h, s_w, s_h, s_w, s_n, 2 * s_h, 2 * s_w))
    return view.reshape(channels * 9, 4 * n * rows * cols)


class GemmConvReluPool(Function):
    """relu(maxpool2(conv3x3(x) + b)) for few input channels, output (N, O, rows, cols) channels_last.

    rows, cols: pooled outputs to compute (at most pooled_size of H, W). No gradient for x: this is
    the first layer (the caller falls back to the plain layers when x requires grad).
    """

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor, rows: int, cols: int) -> Tensor:
        n, out_channels = len(x), weight.shape[0]
        patches = phase_patches(x.contiguous(), rows, cols)
        outputs = patches.t() @ weight.reshape(out_channels, -1).t()
        phases = list(outputs.view(4, -1, out_channels))
        need_grad = ctx.needs_input_grad[1] or ctx.needs_input_grad[2]
        maximum, winners = max4_first(phases, need_grad)
        # The bias is the same for the four candidates of a window: adding it after the max
        # gives the same value (rounding is monotone) at a quarter of the cost. (Only where two
        # candidates differ by less than the rounding of the sum could the winner differ: a tie
        # as arbitrary as the plain conv's own summation order.)
        result = maximum.add_(bias).clamp_min_(0)
        if need_grad:
            ctx.save_for_backward(patches, result, *winners)
            ctx.weight_shape = weight.shape
        return result.view(n, rows, cols, out_channels).permute(0, 3, 1, 2)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):
        patches, result, right_top, right_bottom, bottom = ctx.saved_tensors
        grad = grad.permute(0, 2, 3, 1).reshape(result.shape)
        grad = torch.ops.aten.threshold_backward(grad, result, 0)  # ReLU's own backward
        grad_bias = grad.sum(0)
        # The weight gradient sums patches_q @ grad_q over the four phases; each grad_q is grad
        # where phase q won the window, else 0 (exact, as in scatter4_first). One phase at a time,
        # in three buffers of one phase's size rather than all four phases at once: this
        # function's temporaries are what the memory ceiling's tracer cannot see.
        phase = [patches[:, q * len(grad):(q + 1) * len(grad)] for q in range(4)]
        bottom_grad = grad * bottom
        top_grad = grad.sub_(bottom_grad)
        winner_grad = top_grad * right_top
        grad_weight = phase[1] @ winner_grad
        grad_weight.addmm_(phase[0], top_grad.sub_(winner_grad))
        torch.mul(bottom_grad, right_bottom, out=winner_grad)
        grad_weight.addmm_(phase[3], winner_grad)
        grad_weight.addmm_(phase[2], bottom_grad.sub_(winner_grad))
        return None, grad_weight.t().reshape(ctx.weight_shape), grad_bias, None, None


class MaxPoolRelu(Function):
    """relu(maxpool2(x)) over the top-left (2*rows, 2*cols) corner of x (N, C, H, W), any layout."""

    @staticmethod
    def forward(ctx, x: Tensor, rows: int, cols: int) -> Tensor:
        phases = _spatial_phases(x, rows, cols)
        maximum, winners = max4_first(phases, ctx.needs_input_grad[0])
        result = maximum.clamp_min_(0)
        if winners is not None:
            ctx.save_for_backward(result, *winners)
            ctx.input_shape, ctx.rows, ctx.cols = x.shape, rows, cols
            ctx.channels_last = x.is_contiguous(memory_format=torch.channels_last)
        return result

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):
        result, *winners = ctx.saved_tensors
        layout = torch.channels_last if ctx.channels_last else torch.contiguous_format
        grad = torch.ops.aten.threshold_backward(grad.contiguous(memory_format=layout), result, 0)
        grad_input = torch.empty(ctx.input_shape, dtype=grad.dtype, device=grad.device,
                                 memory_format=layout)
        if ctx.input_shape[2:] != (2 * ctx.rows, 2 * ctx.cols):  # else the phases cover it all
            grad_input.zero_()
        scatter4_first(grad, winners, _spatial_phases(grad_input, ctx.rows, ctx.cols))
        return grad_input, None, None


def _spatial_phases(x: Tensor, rows: int, cols: int) -> list[Tensor]:
    return [x[:, :, dy:2 * rows:2, dx:2 * cols:2] for dy in (0, 1) for dx in (0, 1)]


def conv_relu_pool(x: Tensor, weight: Tensor, bias: Tensor, rows: int, cols: int) -> Tensor:
    """relu(maxpool2(conv3x3(x))) computing only the first rows x cols pooled outputs.

    Equal (to float rounding) to max_pool2d(relu(conv2d(x, weight, bias)), 2)[..., :rows, :cols],
    gradients included. The output is channels_last.
    """
    if x.shape[1] <= MAX_GEMM_CHANNELS and not x.requires_grad:
        return GemmConvReluPool.apply(x, weight, bias, rows, cols)
    # oneDNN's convolution on the corner that the kept outputs read, in channels_last.
    corner = x[:, :, :2 * rows + 2, :2 * cols + 2].contiguous(memory_format=torch.channels_last)
    return MaxPoolRelu.apply(torch.nn.functional.conv2d(corner, weight, bias), rows, cols)

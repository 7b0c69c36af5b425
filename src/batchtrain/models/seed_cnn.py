"""The design document's reference CNN (the classic Keras MNIST example)."""
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from batchtrain.errors import ConfigError
from batchtrain.models.fast_layers import conv_relu_pool, pooled_size
from batchtrain.models.init import keras_init_

FUSED_DTYPES = (torch.float32, torch.float64)  # the ones the equivalence tests cover
REFERENCE_LAYERS = (nn.Conv2d, nn.ReLU, nn.MaxPool2d, nn.Conv2d, nn.ReLU, nn.MaxPool2d, nn.Flatten,
                    nn.Linear, nn.ReLU, nn.Linear)


def seed_cnn(input_shape: Sequence[int], n_outputs: int, fused: bool = True) -> "SeedCNN":
    """Conv2D(32,3x3,relu) > MaxPool2 > Conv2D(64,3x3,relu) > MaxPool2 > Flatten > Dense(64,relu) > Dense(n).

    input_shape: one sample's shape, (H, W) or (C, H, W) (channels first, as torch stores images).
    n_outputs: units of the last layer. It returns logits: the loss folds in the softmax, which is
    the same mathematics as Keras' Dense(10, softmax) + categorical_crossentropy.
    fused: compute the conv blocks with the fused CPU kernels of fast_layers.py (same results to
    float rounding; 2-3x faster on the CPU); False runs the layers one by one.
    """
    channels, height, width = _image_shape(input_shape)
    if min(height, width) < 10:
        raise ConfigError(f"seed-cnn needs images of at least 10x10 pixels, got {height}x{width}; "
                          "use --model mlp for small inputs")
    # Each 3x3 'valid' conv removes 2 pixels, each 2x2 pool halves (flooring), as in Keras.
    flat_h = pooled_size(pooled_size(height))
    flat_w = pooled_size(pooled_size(width))
    # (N, H, W) samples get a channel axis: unflattening dim 1 (of size H) into (1, H).
    layers = [] if len(input_shape) == 3 else [nn.Unflatten(1, (1, height))]
    layers += [
        nn.Conv2d(channels, 32, 3), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(64 * flat_h * flat_w, 64), nn.ReLU(),
        nn.Linear(64, n_outputs),
    ]
    return keras_init_(SeedCNN(*layers, fused=fused))


class SeedCNN(nn.Sequential):
    """The reference layers, in order, with a faster forward on the CPU that computes the same function.

    The layers stay the specification (and what state_dict saves, under the same names as a plain
    nn.Sequential): forward runs them one by one unless every condition of the fused path holds:
    fused=True, a CPU float32/float64 tensor, no autocast, the reference structure unchanged and
    no hooks on the layers (a hook expects its layer to run). Double backward is not supported on that path.
    """

    def __init__(self, *layers: nn.Module, fused: bool = True):
        super().__init__(*layers)
        self.fused = fused

    def forward(self, x: Tensor) -> Tensor:
        # Under autocast (mixed precision) the plain layers run: autocast casts them to the low
        # precision, where the fused path's hand-written backward would mix dtypes.
        if not (self.fused and x.device.type == "cpu" and x.dtype in FUSED_DTYPES
                and not torch.is_autocast_enabled("cpu") and self._reference_structure()):
            return super().forward(x)
        layers = list(self)
        if isinstance(layers[0], nn.Unflatten):
            x = layers.pop(0)(x)
        conv1, conv2 = layers[0], layers[3]
        # Only the conv outputs that the later layers read (see fast_layers.py, point 3).
        flat_h, flat_w = pooled_size(pooled_size(x.shape[2])), pooled_size(pooled_size(x.shape[3]))
        x = conv_relu_pool(x, conv1.weight, conv1.bias, 2 * flat_h + 2, 2 * flat_w + 2)
        x = conv_relu_pool(x, conv2.weight, conv2.bias, flat_h, flat_w)
        # Flatten copies the channels_last x to (C, H, W) order: cheaper than permuting the dense
        # weight to x's order (a slow strided copy, forward and backward: 0.7 ms a step).
        for layer in layers[6:]:  # Flatten, Dense, ReLU, Dense
            x = layer(x)
        return x

    def _reference_structure(self) -> bool:
        """The layers are still the reference ones (types and settings), with no hooks."""
        layers = list(self)
        if layers and isinstance(layers[0], nn.Unflatten):
            layers = layers[1:]
        if tuple(type(layer) for layer in layers) != REFERENCE_LAYERS:
            return False
        if any(layer._forward_hooks or layer._forward_pre_hooks or layer._backward_hooks
               or getattr(layer, "_backward_pre_hooks", None) for layer in self):
            return False
        flatten = layers[6]
        return (flatten.start_dim == 1 and flatten.end_dim == -1
                and all(_is_plain_conv(layers[i]) and _is_plain_pool(layers[i + 2]) for i in (0, 3)))

    def extra_repr(self) -> str:
        return f"fused={self.fused}"


def _is_plain_conv(conv: nn.Conv2d) -> bool:
    return (conv.kernel_size == (3, 3) and conv.stride == (1, 1) and conv.padding == (0, 0)
            and conv.dilation == (1, 1) and conv.groups == 1 and conv.bias is not None
            and conv.padding_mode == "zeros")


def _is_plain_pool(pool: nn.MaxPool2d) -> bool:
    return (pool.kernel_size in (2, (2, 2)) and pool.stride in (2, (2, 2)) and not pool.ceil_mode
            and not pool.return_indices
            and pool.padding in (0, (0, 0)) and pool.dilation in (1, (1, 1)))


def _image_shape(input_shape: Sequence[int]) -> tuple[int, int, int]:
    if len(input_shape) == 2:
        return 1, input_shape[0], input_shape[1]
    if len(input_shape) == 3:
        return tuple(input_shape)
    raise ConfigError(f"seed-cnn needs image samples of shape (H, W) or (C, H, W), got "
                      f"{tuple(input_shape)}; use --model mlp for flat features")

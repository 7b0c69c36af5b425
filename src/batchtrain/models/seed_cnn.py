"""The design document's reference CNN (the classic Keras MNIST example)."""
from collections.abc import Sequence

from torch import nn

from batchtrain.errors import ConfigError
from batchtrain.models.init import keras_init_


def seed_cnn(input_shape: Sequence[int], n_outputs: int) -> nn.Sequential:
    """Conv2D(32,3x3,relu) > MaxPool2 > Conv2D(64,3x3,relu) > MaxPool2 > Flatten > Dense(64,relu) > Dense(n).

    input_shape: one sample's shape, (H, W) or (C, H, W) (channels first, as torch stores images).
    n_outputs: units of the last layer. It returns logits: the loss folds in the softmax, which is
    the same mathematics as Keras' Dense(10, softmax) + categorical_crossentropy.
    """
    channels, height, width = _image_shape(input_shape)
    if min(height, width) < 10:
        raise ConfigError(f"seed-cnn needs images of at least 10x10 pixels, got {height}x{width}; "
                          "use --model mlp for small inputs")
    # Each 3x3 'valid' conv removes 2 pixels, each 2x2 pool halves (flooring), as in Keras.
    flat_h = ((height - 2) // 2 - 2) // 2
    flat_w = ((width - 2) // 2 - 2) // 2
    # (N, H, W) samples get a channel axis: unflattening dim 1 (of size H) into (1, H).
    layers = [] if len(input_shape) == 3 else [nn.Unflatten(1, (1, height))]
    layers += [
        nn.Conv2d(channels, 32, 3), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(64 * flat_h * flat_w, 64), nn.ReLU(),
        nn.Linear(64, n_outputs),
    ]
    return keras_init_(nn.Sequential(*layers))


def _image_shape(input_shape: Sequence[int]) -> tuple[int, int, int]:
    if len(input_shape) == 2:
        return 1, input_shape[0], input_shape[1]
    if len(input_shape) == 3:
        return tuple(input_shape)
    raise ConfigError(f"seed-cnn needs image samples of shape (H, W) or (C, H, W), got "
                      f"{tuple(input_shape)}; use --model mlp for flat features")

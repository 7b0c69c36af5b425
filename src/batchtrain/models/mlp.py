"""A multi-layer perceptron for flat (or flattened) features."""
import math
from collections.abc import Sequence

from torch import nn

from batchtrain.errors import ConfigError
from batchtrain.models.init import keras_init_


def mlp(input_shape: Sequence[int], n_outputs: int, hidden: Sequence[int] = (64,),
        activation: str = "relu") -> nn.Sequential:
    """Flatten > [Dense(h, activation) for h in hidden] > Dense(n_outputs), Keras-initialised.

    hidden: units of each hidden layer, default (64,); () gives a linear model.
    activation: "relu", "tanh", "gelu" or "sigmoid".
    """
    activations = {"relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU, "sigmoid": nn.Sigmoid}
    if activation not in activations:
        raise ConfigError(f"unknown mlp activation {activation!r}; choose one of {sorted(activations)}")
    if any(int(units) < 1 for units in hidden):
        raise ConfigError(f"mlp hidden sizes must be positive integers, got {list(hidden)}")
    layers: list[nn.Module] = [nn.Flatten()]
    width = math.prod(input_shape)
    for units in hidden:
        layers += [nn.Linear(width, int(units)), activations[activation]()]
        width = int(units)
    layers.append(nn.Linear(width, n_outputs))
    return keras_init_(nn.Sequential(*layers))

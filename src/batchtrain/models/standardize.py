"""Feature standardisation as the model's first layer, so saved models take raw features.

Streamed tabular data is standardised with statistics of the training rows (one streaming pass,
data/stream.py); keeping them as buffers of the model means checkpoints, model.safetensors,
evaluate and predict all apply them without a separate file to lose.
"""
from collections import OrderedDict

import torch
from torch import Tensor, nn


class Standardize(nn.Module):
    """(x - mean) / std, with per-feature buffers."""

    def __init__(self, mean: Tensor, std: Tensor):
        super().__init__()
        self.register_buffer("mean", mean.detach().clone().float())
        self.register_buffer("std", std.detach().clone().float())

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.std


class Unstandardize(Standardize):
    """outputs * std + mean: the model predicts standardised targets, users see their units.

    Why: with standardised inputs a regression model must otherwise grow its output bias to the
    targets' mean (12 for a house price in tens of thousands) at Adam's ~lr per step, which takes
    epochs; predicting (y - mean) / std starts it at the right scale."""

    def forward(self, outputs: Tensor) -> Tensor:
        return outputs * self.std + self.mean


def standardized(model: nn.Module, x_mean: Tensor, x_std: Tensor, y_mean: Tensor | None = None,
                 y_std: Tensor | None = None) -> nn.Sequential:
    """`model` behind a Standardize layer and, for regression, before an Unstandardize layer
    (state dict keys standardize.*, model.*, unstandardize.*)."""
    layers = OrderedDict(standardize=Standardize(x_mean, x_std), model=model)
    if y_mean is not None:
        layers["unstandardize"] = Unstandardize(y_mean, y_std)
    return nn.Sequential(layers)


def placeholder_standardized(model: nn.Module, input_shape: tuple[int, ...],
                             outputs: int | None) -> nn.Sequential:
    """The same structure with neutral statistics, to load a saved state dict into.
    outputs: the number of outputs when targets were standardised too, else None."""
    targets = (torch.zeros(outputs), torch.ones(outputs)) if outputs else (None, None)
    return standardized(model, torch.zeros(input_shape), torch.ones(input_shape), *targets)


def standardization(model: nn.Module) -> dict | None:
    """{"targets": bool} for a model built by standardized(), else None (for model.json)."""
    if isinstance(model, nn.Sequential) and isinstance(getattr(model, "standardize", None), Standardize):
        return {"targets": hasattr(model, "unstandardize")}
    return None

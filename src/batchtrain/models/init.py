"""Keras' default initialisation for torch layers."""
from torch import nn


def keras_init_(module: nn.Module) -> nn.Module:
    """Initialise Conv and Linear layers as Keras does: Glorot-uniform weights, zero biases.

    torch's default (Kaiming-uniform with a=sqrt(5)) trains the reference CNN differently from
    the design document's recipe, so built-in models are re-initialised with this.
    Glorot & Bengio 2010: U(-a, a), a = sqrt(6 / (fan_in + fan_out)); for a conv kernel
    fan_in = in_channels * kh * kw and fan_out = out_channels * kh * kw, as in Keras.
    """
    for layer in module.modules():
        if isinstance(layer, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            nn.init.xavier_uniform_(layer.weight)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)
    return module

"""Built-in models: the reference CNN's exact layers and Keras initialisation; mlp; import paths."""
import math
import sys

import pytest
import torch
from torch import nn

from batchtrain.errors import ConfigError
from batchtrain.models import ModelSpec, keras_init_, mlp, seed_cnn


def test_seed_cnn_has_exactly_the_reference_layers():
    model = seed_cnn((1, 28, 28), 10)
    kinds = [type(layer) for layer in model]
    assert kinds == [nn.Conv2d, nn.ReLU, nn.MaxPool2d, nn.Conv2d, nn.ReLU, nn.MaxPool2d, nn.Flatten,
                     nn.Linear, nn.ReLU, nn.Linear]
    conv1, conv2, dense, out = model[0], model[3], model[7], model[9]
    assert (conv1.in_channels, conv1.out_channels, conv1.kernel_size) == (1, 32, (3, 3))
    assert (conv2.in_channels, conv2.out_channels, conv2.kernel_size) == (32, 64, (3, 3))
    assert conv1.padding == (0, 0) and model[2].kernel_size == 2  # Keras' 'valid' conv, 2x2 pool
    assert (dense.in_features, dense.out_features) == (64 * 5 * 5, 64)
    assert (out.in_features, out.out_features) == (64, 10)
    # Keras' model.summary() for this network reports 121,930 trainable parameters.
    assert sum(p.numel() for p in model.parameters()) == 121_930
    assert model(torch.zeros(3, 1, 28, 28)).shape == (3, 10)


def test_seed_cnn_accepts_images_without_channel_axis():
    model = seed_cnn((28, 28), 10)
    assert model(torch.zeros(2, 28, 28)).shape == (2, 10)


def test_keras_initialisation_glorot_uniform_and_zero_bias():
    torch.manual_seed(0)
    model = seed_cnn((1, 28, 28), 10)
    for layer in (model[0], model[3], model[7], model[9]):
        weight = layer.weight
        receptive = weight[0, 0].numel() if weight.dim() == 4 else 1
        fan_in, fan_out = weight.shape[1] * receptive, weight.shape[0] * receptive
        limit = math.sqrt(6 / (fan_in + fan_out))
        assert weight.abs().max() <= limit
        # a uniform on [-a, a] has standard deviation a / sqrt(3)
        assert weight.std().item() == pytest.approx(limit / math.sqrt(3), rel=0.1)
        assert torch.count_nonzero(layer.bias) == 0


def test_keras_init_replaces_torch_default():
    layer = nn.Linear(100, 100)
    keras_init_(layer)
    assert layer.weight.abs().max() <= math.sqrt(6 / 200) and torch.all(layer.bias == 0)


def test_seed_cnn_rejects_small_or_flat_inputs():
    with pytest.raises(ConfigError, match="at least 10x10"):
        seed_cnn((1, 6, 6), 10)
    with pytest.raises(ConfigError, match="use --model mlp"):
        seed_cnn((20,), 10)


def test_mlp_hidden_sizes_and_activation():
    model = mlp((1, 4, 4), 3, hidden=(32, 8), activation="tanh")
    linears = [layer for layer in model if isinstance(layer, nn.Linear)]
    assert [(l.in_features, l.out_features) for l in linears] == [(16, 32), (32, 8), (8, 3)]
    assert sum(isinstance(layer, nn.Tanh) for layer in model) == 2
    with pytest.raises(ConfigError, match="activation"):
        mlp((4,), 2, activation="swishy")


def test_model_by_import_path(tmp_path, monkeypatch):
    (tmp_path / "my_models.py").write_text(
        "from torch import nn\n"
        "def tiny(input_shape, n_outputs, width=4):\n"
        "    return nn.Sequential(nn.Flatten(), nn.Linear(input_shape[0], width), nn.Linear(width, n_outputs))\n"
        "not_callable = 3\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    model = ModelSpec("my_models:tiny", {"width": 7}).build((5,), 2)
    assert model[1].out_features == 7
    with pytest.raises(ConfigError, match="no callable 'not_callable'"):
        ModelSpec("my_models:not_callable").build((5,), 2)
    with pytest.raises(ConfigError, match="rejected its options"):
        ModelSpec("my_models:tiny", {"depth": 3}).build((5,), 2)
    with pytest.raises(ConfigError, match="cannot import module"):
        ModelSpec("no_such_module_xyz:tiny").build((5,), 2)
    sys.modules.pop("my_models", None)


def test_unknown_model_name_lists_the_choices():
    with pytest.raises(ConfigError, match=r"unknown model 'resnet'.*mlp.*seed-cnn"):
        ModelSpec("resnet").build((5,), 2)

"""Optimizers by name carry Keras' defaults; instances and factories pass through."""
from functools import partial

import pytest
import torch
from torch import nn

from batchtrain.errors import ConfigError
from batchtrain.optim.optimizers import make_optimizer


@pytest.mark.parametrize("name, cls, expected", [
    ("sgd", torch.optim.SGD, {"lr": 0.01, "momentum": 0.0, "nesterov": False}),
    ("adam", torch.optim.Adam, {"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-7}),
    ("adamw", torch.optim.AdamW, {"lr": 1e-3, "eps": 1e-7, "weight_decay": 0.004}),
    ("rmsprop", torch.optim.RMSprop, {"lr": 1e-3, "alpha": 0.9, "eps": 1e-7, "momentum": 0.0}),
])
def test_named_optimizers_use_keras_defaults(name, cls, expected):
    optimizer = make_optimizer(name, nn.Linear(2, 1))
    assert type(optimizer) is cls
    for key, value in expected.items():
        assert optimizer.param_groups[0][key] == value, key


def test_lr_and_options_override_defaults():
    optimizer = make_optimizer("SGD", nn.Linear(2, 1), lr=0.5, momentum=0.9, nesterov=True)
    group = optimizer.param_groups[0]
    assert (group["lr"], group["momentum"], group["nesterov"]) == (0.5, 0.9, True)


def test_instances_and_factories():
    model = nn.Linear(2, 1)
    instance = torch.optim.SGD(model.parameters(), lr=0.3)
    assert make_optimizer(instance, model) is instance
    assert make_optimizer(instance, model, lr=0.1).param_groups[0]["lr"] == 0.1
    built = make_optimizer(partial(torch.optim.Adagrad, lr=0.2), model)
    assert isinstance(built, torch.optim.Adagrad) and built.param_groups[0]["lr"] == 0.2


@pytest.mark.parametrize("kwargs, message", [
    ({"spec": "adamax"}, "unknown optimizer 'adamax'"),
    ({"spec": "adam", "lr": -1.0}, r"lr must be a number in \(0, 1000\], got -1.0"),
    ({"spec": "adam", "lr": float("inf")}, r"lr must be a number in \(0, 1000\], got inf"),
    ({"spec": "sgd", "lr": 1e38}, r"lr must be a number in \(0, 1000\], got 1e\+38"),
    ({"spec": "sgd", "lr": float("nan")}, r"lr must be a number in \(0, 1000\], got nan"),
    ({"spec": "sgd", "momentum": float("nan")}, "momentum must be finite, got nan"),
    ({"spec": "rmsprop", "momentum": 1.0}, r"momentum must be in \[0, 1\), got 1.0"),
    ({"spec": "sgd", "momentum": -1.0}, r"momentum must be in \[0, 1\), got -1.0"),
    ({"spec": "adam", "betas": (0.9, float("inf"))}, r"betas must be finite, got \(0.9, inf\)"),
    ({"spec": "adamw", "weight_decay": -0.1}, "weight_decay must be >= 0, got -0.1"),
    ({"spec": torch.optim.SGD(nn.Linear(2, 1).parameters(), lr=0.1), "lr": float("inf")},
     r"lr must be a number in \(0, 1000\], got inf"),
    ({"spec": "sgd", "nesterov": True}, "nesterov=True needs momentum > 0"),
    ({"spec": "adam", "momentum": 0.9}, "invalid options for optimizer 'adam'"),
])
def test_bad_optimizer_settings(kwargs, message):
    spec = kwargs.pop("spec")
    with pytest.raises(ConfigError, match=message):
        make_optimizer(spec, nn.Linear(2, 1), **kwargs)

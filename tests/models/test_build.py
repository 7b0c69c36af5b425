"""A trainer's set-up: a built-in model too large for the device is refused before it is built."""
import pytest
import torch

from batchtrain.errors import ConfigError
from batchtrain.models.spec import ModelSpec
from batchtrain.models.build import check_model_fits

CPU = torch.device("cpu")


def test_a_model_larger_than_memory_is_refused_without_allocating_it():
    with pytest.raises(ConfigError, match=r"would have [\d,]+ parameters .* smaller hidden sizes"):
        check_model_fits(ModelSpec("mlp", {"hidden": [10 ** 12]}), (784,), 10, CPU)


@pytest.mark.parametrize("spec, shape", [(ModelSpec("mlp", {"hidden": [256, 128]}), (784,)),
                                         (ModelSpec("seed-cnn"), (1, 28, 28))])
def test_ordinary_models_pass(spec, shape):
    check_model_fits(spec, shape, 10, CPU)

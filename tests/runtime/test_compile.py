"""torch.compile for training (runtime/compile.py): off by default, one wrapper per module."""
import shutil

import numpy as np
import pytest
import torch
from torch import nn

from batchtrain import Trainer
from batchtrain.cli.config import FitConfig
from batchtrain.cli.runner import make_trainer
from batchtrain.errors import ConfigError
from batchtrain.runtime.compile import check_compiler, compiled


@pytest.fixture
def no_compiler(monkeypatch):
    """A machine without a C++ compiler, as torch's inductor sees it."""
    from torch._inductor import cpp_builder, exc

    def missing():
        raise exc.InvalidCxxCompiler()

    monkeypatch.setattr(cpp_builder, "get_cpp_compiler", missing)


def test_off_is_the_module_itself_and_on_is_one_wrapper_per_module(monkeypatch):
    from torch._inductor import cpp_builder
    monkeypatch.setattr(cpp_builder, "get_cpp_compiler", lambda: "g++")  # whatever this machine has
    network = nn.Linear(3, 2)
    assert compiled(network, False) is network
    wrapper = compiled(network, True)
    assert wrapper is not network and compiled(network, True) is wrapper  # made once, kept
    assert {id(p) for p in wrapper.parameters()} == {id(p) for p in network.parameters()}
    assert compiled(nn.Linear(3, 2), True) is not wrapper


def test_the_option_is_off_by_default_and_reaches_the_trainer():
    assert Trainer("mlp").compile is False and FitConfig().compile is False
    assert make_trainer(FitConfig(compile=True).validate()).compile is True


@pytest.mark.slow
@pytest.mark.skipif(not (shutil.which("g++") or shutil.which("c++")),
                    reason="torch.compile on a CPU needs a C++ compiler")
def test_a_compiled_fit_trains_the_same_model_to_float_rounding():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((256, 12)).astype(np.float32)
    y = (x[:, 0] + x[:, 1] > 0).astype(np.int64)
    runs = []
    for compile in (False, True):
        trainer = Trainer("mlp", seed=0, compile=compile, device="cpu")
        runs.append((trainer, trainer.fit(x, y, batch_size=32, epochs=2)))
    (plain, plain_history), (fast, fast_history) = runs
    assert fast.pipeline_.network is not fast.model_  # the steps went through the wrapper
    for ours, theirs in zip(fast.model_.parameters(), plain.model_.parameters()):
        torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-5)
    assert fast_history[-1]["loss"] == pytest.approx(plain_history[-1]["loss"], rel=1e-4)


def test_without_a_cpp_compiler_compiling_on_the_cpu_is_a_config_error_naming_the_fix(no_compiler):
    with pytest.raises(ConfigError, match="C\\+\\+ compiler.*apt-get install g\\+\\+.*without --compile"):
        check_compiler(torch.device("cpu"))
    check_compiler(torch.device("cuda"))  # not the CPU's concern: triton builds GPU kernels
    x = np.zeros((8, 3), np.float32)
    trainer = Trainer("mlp", seed=0, compile=True, device="cpu")
    with pytest.raises(ConfigError, match="C\\+\\+ compiler"):
        trainer.fit(x, np.zeros(8, np.int64), batch_size=4, epochs=1)
    assert trainer.step_ == 0  # refused before the first step

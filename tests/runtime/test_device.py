"""Device choice and the CUDA paths; tests marked gpu run only where CUDA is present."""
import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from batchtrain import Trainer
from batchtrain.data.iterator import BatchIterator
from batchtrain.data.sources import DatasetSource, TensorSource
from batchtrain.runtime.device import resolve_device
from batchtrain.errors import ConfigError


def test_auto_prefers_cuda_when_present(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda")


def test_auto_falls_back_to_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")


def test_cuda_without_cuda_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="CUDA is not available; use --device cpu"):
        resolve_device("cuda")
    with pytest.raises(ConfigError, match="unknown device 'gpu0'"):
        resolve_device("gpu0")


def test_datasets_pin_memory_for_cuda():
    source = DatasetSource(TensorDataset(torch.zeros(4, 2), torch.zeros(4)))
    assert source.to(torch.device("cuda")).pin_memory
    assert not source.to(torch.device("cpu")).pin_memory


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 16), nn.ReLU(), nn.Linear(16, 3))


@pytest.mark.gpu
def test_in_memory_data_moves_to_the_gpu_once():
    source = TensorSource(torch.randn(64, 5), torch.randint(0, 3, (64,)))
    batches = BatchIterator(source, 16, device=torch.device("cuda"))
    assert batches.source.x.is_cuda
    x, y = next(batches.epoch(0))
    assert x.is_cuda and y.is_cuda


@pytest.mark.gpu
def test_training_on_cuda_matches_cpu():
    x, y = torch.randn(200, 5), torch.randint(0, 3, (200,))
    results = {}
    for device in ("cpu", "cuda"):
        trainer = Trainer(_model(), optimizer="sgd", lr=0.1, seed=1, device=device)
        trainer.fit(x, y, batch_size=32, epochs=2)
        assert next(trainer.model_.parameters()).device.type == device
        results[device] = [p.detach().cpu() for p in trainer.model_.parameters()]
    for a, b in zip(results["cpu"], results["cuda"]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)

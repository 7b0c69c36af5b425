"""Sample-keyed schedules (batching/schedule.py): Piecewise, Ramp and Doubling over a run, after a
restore, at a change mid-epoch, and with mixed epoch/sample units."""
import pytest
import torch

from batchtrain.batching.base import StepStats
from batchtrain.batching.schedule import Doubling, Piecewise, Ramp
from batchtrain.data.iterator import BatchIterator
from batchtrain.data.sources import TensorSource
from batchtrain.errors import ConfigError

EPOCH = 100  # samples per epoch in the simulated runs (conftest.py's EPOCH)


def test_doubling_follows_smith_et_al_and_respects_the_cap():
    policy = Doubling(64, "1e", 512)
    sizes = {epoch: None for epoch in range(6)}
    for epoch in sizes:
        policy.observe(StepStats(epoch * EPOCH, epoch, EPOCH, 0))
        sizes[epoch] = policy.batch_size()
    assert list(sizes.values()) == [64, 128, 256, 512, 512, 512]


def test_every_sample_once_per_epoch_across_a_mid_epoch_change():
    source = TensorSource(torch.arange(100.0).unsqueeze(1), torch.arange(100))
    policy = Piecewise([8, 13], [40])  # changes after 40 samples: in the middle of epoch 0
    batches = BatchIterator(source, policy.batch_size, shuffle=True, seed=3)
    seen, sizes = 0, []
    policy.observe(StepStats(0, 0, 100, 0))
    for epoch in range(2):
        labels = []
        for _, y in batches.epoch(epoch):
            labels += y.tolist()
            sizes.append(len(y))
            seen += len(y)
            policy.observe(StepStats(seen, epoch, 100, len(y)))
        assert sorted(labels) == list(range(100))
    assert sizes[:6] == [8, 8, 8, 8, 8, 13]  # the change takes effect at the next step


def test_mixed_units_are_ordered_once_the_epoch_is_known():
    """256 from epoch 2, 512 from sample 1,000: in order for 400-sample epochs, not for 1,000."""
    from batchtrain.batching.base import StepStats
    Piecewise([128, 256, 512], ["2e", 1000]).observe(StepStats(0, 0, 400, 0))
    with pytest.raises(ConfigError, match="increasing"):
        Piecewise([128, 256, 512], ["2e", 1000]).observe(StepStats(0, 0, 1000, 0))

"""The batch iterator: coverage, order, determinism; sources fetch exactly the indices asked."""
import pytest
import torch
from torch.utils.data import TensorDataset

from batchtrain.data.iterator import BatchIterator, epoch_order
from batchtrain.data.sources import DatasetSource, TensorSource, as_source, split_validation
from batchtrain.errors import ConfigError, DataError


def numbered_source(n: int) -> TensorSource:
    return TensorSource(torch.arange(n, dtype=torch.float32).unsqueeze(1), torch.arange(n))


@pytest.mark.parametrize("make_source", [
    numbered_source,
    lambda n: DatasetSource(TensorDataset(torch.arange(n, dtype=torch.float32).unsqueeze(1),
                                          torch.arange(n))),
], ids=["tensors", "dataset"])
@pytest.mark.parametrize("shuffle", [True, False])
def test_every_sample_once_per_epoch(make_source, shuffle):
    batches = BatchIterator(make_source(103), batch_size=10, shuffle=shuffle, seed=4)
    assert len(batches) == 11
    for epoch in range(2):
        sizes, seen = [], []
        for x, y in batches.epoch(epoch):
            assert torch.equal(x[:, 0].long(), y)  # x and y stay paired
            sizes.append(len(y))
            seen += y.tolist()
        assert sizes == [10] * 10 + [3]
        assert sorted(seen) == list(range(103))
        assert (seen == list(range(103))) != shuffle


@pytest.mark.parametrize("shuffle", [True, False])
def test_upcoming_samples_taken_and_skipped_leave_every_sample_once_per_epoch(shuffle):
    """A kept branch (training/branch.py Brancher) trains on the walk's upcoming samples and the
    walk skips them: the epoch's order is unchanged, and its samples are each seen once."""
    batches = BatchIterator(numbered_source(103), batch_size=10, shuffle=shuffle, seed=4)
    assert batches.upcoming(5) is None  # not walking an epoch
    for epoch in range(2):
        walked, taken = [], []
        for batch in batches.steps(epoch):
            walked += batch.targets.tolist()
            if len(walked) in (20, 50):  # between batches: take the next 15, then skip them
                x, y = batches.upcoming(15)
                assert torch.equal(x[:, 0].long(), y)
                taken += y.tolist()
                batches.skip(15)
                assert batches.position == len(walked) + len(taken)
        assert batches.upcoming(1) is None  # nothing left
        assert sorted(walked + taken) == list(range(103))
        order = epoch_order(103, 4, epoch).tolist() if shuffle else list(range(103))
        assert walked == order[:20] + order[35:65] + order[80:]  # batches 35-44, ... after
        assert taken == order[20:35] + order[65:80]


def test_a_source_that_reads_ahead_offers_no_upcoming_samples():
    dataset = DatasetSource(TensorDataset(torch.arange(30, dtype=torch.float32).unsqueeze(1),
                                          torch.arange(30)))
    batches = BatchIterator(dataset, batch_size=10, seed=1)
    walk = batches.steps(0)
    next(walk)
    assert batches.upcoming(5) is None  # a DataLoader may have fetched the next batches
    tensors = BatchIterator(numbered_source(30), batch_size=10, seed=1)
    walk = tensors.steps(0)
    next(walk)
    assert tensors.upcoming(20) is not None and tensors.upcoming(21) is None  # 20 left


def test_order_is_deterministic_per_seed_and_epoch():
    def order(seed, epoch):
        return torch.cat([y for _, y in BatchIterator(numbered_source(50), 8, True, seed).epoch(epoch)])
    assert torch.equal(order(1, 0), order(1, 0))
    assert torch.equal(order(1, 0), epoch_order(50, 1, 0))  # the documented order
    assert not torch.equal(order(1, 0), order(1, 1))
    assert not torch.equal(order(1, 0), order(2, 0))


def test_unshuffled_tensor_batches_are_views_not_copies():
    source = numbered_source(20)
    x, _ = next(BatchIterator(source, 5, shuffle=False).epoch(0))
    assert x.data_ptr() == source.x.data_ptr()


@pytest.mark.parametrize("batch_size", [0, -1, 2.5, True, "8"])
def test_batch_size_must_be_a_positive_integer(batch_size):
    with pytest.raises(ConfigError, match="batch_size must be an integer >= 1"):
        BatchIterator(numbered_source(4), batch_size)


def test_validation_split_takes_the_tail_like_keras():
    train, val = split_validation(numbered_source(10), 0.25)
    # Keras: split_at = floor(n * (1 - validation_split)) = floor(7.5) = 7
    assert train.y.tolist() == list(range(7)) and val.y.tolist() == [7, 8, 9]
    assert split_validation(numbered_source(10), 0.0)[1] is None
    with pytest.raises(DataError, match="leaves 1 for validation and 0 for training"):
        split_validation(numbered_source(1), 0.5)


def test_as_source_converts_and_shapes():
    source = as_source([1.0, 2.0, 3.0], [0, 1, 0])
    assert source.x.shape == (3, 1) and source.x.dtype == torch.float32
    assert source.y.dtype == torch.int64

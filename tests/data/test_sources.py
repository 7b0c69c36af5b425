"""Data sources (data/sources.py): what as_source and fit_sources make of the user's data, and the
Batch records BatchIterator.steps builds on them (data/iterator.py)."""
import re

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset, TensorDataset

from batchtrain.data.iterator import Batch, BatchIterator, epoch_order
from batchtrain.data.sources import DatasetSource, TensorSource, as_source, fit_sources
from batchtrain.errors import ConfigError, DataError


class Numbered(Dataset):
    """A map-style dataset of (x, y) pairs; sample i is ([i, -i], i)."""

    def __init__(self, n: int):
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int):
        return torch.tensor([float(index), -float(index)]), torch.tensor(index)


def arrays(n: int = 10):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 3))  # float64: becomes float32
    y = np.arange(n)
    return x, y


def targets_of(source) -> list[int]:
    """Every target of a source, in its stored order."""
    return [int(v) for _, y in source.batches([slice(0, len(source))]) for v in y]


# --- as_source ---------------------------------------------------------------------------------

def test_numpy_arrays_become_a_tensor_source():
    x, y = arrays()
    source = as_source(x, y)
    assert type(source) is TensorSource and len(source) == 10
    assert source.x.dtype == torch.float32 and source.y.dtype == torch.int64
    np.testing.assert_allclose(source.x.numpy(), x.astype(np.float32))
    assert source.y.tolist() == list(range(10)) and source.sample_shape == (3,)


def test_one_dimensional_inputs_become_one_feature():
    source = as_source(np.arange(5.0), np.arange(5))
    assert source.x.shape == (5, 1) and source.sample_shape == (1,)


def test_tensors_become_a_tensor_source():
    x, y = torch.randn(6, 2, 2, generator=torch.Generator().manual_seed(1)), torch.arange(6)
    source = as_source(x, y)
    assert type(source) is TensorSource
    assert torch.equal(source.x, x) and torch.equal(source.y, y)
    assert source.sample_shape == (2, 2) and torch.equal(source.targets(), y)


@pytest.mark.parametrize("dataset", [Numbered(7), TensorDataset(torch.randn(7, 2), torch.arange(7))],
                         ids=["map-style", "TensorDataset"])
def test_a_map_style_dataset_becomes_a_dataset_source(dataset):
    source = as_source(dataset)
    assert type(source) is DatasetSource and source.dataset is dataset
    assert len(source) == 7 and source.sample_shape == (2,)
    assert source.targets().tolist() == list(range(7))


def test_numbered_dataset_batches_fetch_the_indices_asked():
    source = as_source(Numbered(7))
    (x, y), = source.batches([torch.tensor([5, 0, 3])])
    assert y.tolist() == [5, 0, 3] and x[:, 0].tolist() == [5.0, 0.0, 3.0]


def test_y_with_a_dataset_is_refused():
    with pytest.raises(ConfigError, match=re.escape(
            "y must be None when x is a Dataset yielding (x, y)")):
        as_source(Numbered(4), np.arange(4))


def test_y_with_a_validation_dataset_names_it():
    x, y = arrays()
    with pytest.raises(ConfigError, match=re.escape(
            "validation y must be None when validation x is a Dataset yielding (x, y)")):
        fit_sources(x, y, 0.0, (Numbered(4), np.arange(4)))


def test_mismatched_lengths_are_refused():
    x, y = arrays(10)
    with pytest.raises(DataError, match=re.escape(
            "x and y have different lengths: 10 samples in x, 9 in y; "
            "pass exactly one target per sample")):
        as_source(x, y[:9])


def test_mismatched_validation_lengths_name_the_validation_data():
    x, y = arrays(10)
    with pytest.raises(DataError, match=re.escape(
            "validation x and validation y have different lengths: 3 samples in x, 2 in y")):
        fit_sources(x, y, 0.0, (x[:3], y[:2]))


def test_missing_targets_and_an_empty_dataset_are_refused():
    with pytest.raises(ConfigError, match=re.escape("y is missing: pass targets as y")):
        as_source(np.zeros((3, 2)))
    with pytest.raises(DataError, match=re.escape("dataset is empty (0 samples)")):
        as_source(Numbered(0))


# --- fit_sources -------------------------------------------------------------------------------

@pytest.mark.parametrize("split, train_size", [(0.2, 8), (0.25, 7), (0.5, 5), (0.01, 9)])
@pytest.mark.parametrize("kind", ["arrays", "dataset"])
def test_validation_split_holds_out_the_last_fraction_before_shuffling(split, train_size, kind):
    data = (Numbered(10), None) if kind == "dataset" else arrays(10)
    train, validation = fit_sources(*data, split, None)
    assert type(train) is type(validation)
    assert targets_of(train) == list(range(train_size))
    assert targets_of(validation) == list(range(train_size, 10))
    # shuffled epochs of the training source never reach the held-out samples
    seen = set()
    for epoch in range(3):
        for batch in BatchIterator(train, 3, shuffle=True, seed=epoch).steps(epoch):
            seen.update(batch.targets.tolist())
    assert seen == set(range(train_size))


def test_no_split_and_validation_data():
    x, y = arrays(10)
    train, validation = fit_sources(x, y, 0.0, None)
    assert validation is None and len(train) == 10
    train, validation = fit_sources(x[:7], y[:7], 0.5, (x[7:], y[7:]))  # the data wins the split
    assert len(train) == 7 and targets_of(validation) == [7, 8, 9]
    train, validation = fit_sources(x, y, 0.0, Numbered(3))
    assert type(validation) is DatasetSource and len(validation) == 3


@pytest.mark.parametrize("validation_data", [(np.zeros((2, 3)),), [1, 2, 3], "val.csv"])
def test_bad_validation_data_is_refused(validation_data):
    x, y = arrays(10)
    with pytest.raises(ConfigError, match=re.escape(
            "validation_data must be (x_val, y_val) or a Dataset of (x, y) pairs")):
        fit_sources(x, y, 0.0, validation_data)


@pytest.mark.parametrize("split", [-0.1, 1.0, 1.5])
def test_a_split_outside_zero_to_one_is_refused(split):
    x, y = arrays(10)
    with pytest.raises(ConfigError, match=re.escape(
            f"validation_split must be in [0, 1), got {split}")):
        fit_sources(x, y, split, None)


# --- declared traits ---------------------------------------------------------------------------

def test_in_memory_sources_neither_order_themselves_nor_standardize():
    x, y = arrays()
    for source in (TensorSource, DatasetSource, as_source(x, y), as_source(Numbered(3)),
                   *fit_sources(x, y, 0.2, None), as_source(x, y).to(torch.device("cpu"))):
        assert source.orders_itself is False and source.standardize is False


# --- BatchIterator.steps -----------------------------------------------------------------------

def numbered_source(kind: str, n: int):
    if kind == "dataset":
        return DatasetSource(Numbered(n))
    return TensorSource(torch.arange(n, dtype=torch.float32).unsqueeze(1), torch.arange(n))


def check_records(records: list[Batch], n: int, start: int = 0):
    """Sizes and positions add up: each batch moves the position by its global size."""
    position = start
    for batch in records:
        assert isinstance(batch, Batch)
        assert batch.global_size == len(batch.targets) == len(batch.inputs) == batch.real_samples
        assert 1 <= batch.global_size <= batch.requested
        position += batch.global_size
        assert batch.position == position
    assert position == n
    assert sum(batch.global_size for batch in records) == n - start
    assert all(batch.global_size == batch.requested for batch in records[:-1])  # only the last is short


@pytest.mark.parametrize("kind", ["tensors", "dataset"])
@pytest.mark.parametrize("shuffle", [False, True])
def test_steps_records_add_up_over_an_epoch(kind, shuffle):
    iterator = BatchIterator(numbered_source(kind, 23), 5, shuffle=shuffle, seed=3)
    records = list(iterator.steps(1))
    check_records(records, 23)
    assert [batch.requested for batch in records] == [5] * 5
    assert [batch.global_size for batch in records] == [5, 5, 5, 5, 3]
    assert [batch.position for batch in records] == [5, 10, 15, 20, 23]
    assert iterator.position == 23
    order = torch.cat([batch.targets for batch in records])
    expected = epoch_order(23, 3, 1) if shuffle else torch.arange(23)
    assert torch.equal(order, expected)
    for batch in records:
        assert torch.equal(batch.inputs[:, 0].long(), batch.targets)  # x and y stay paired


def test_steps_from_a_start_position_continue_the_same_order():
    iterator = BatchIterator(numbered_source("tensors", 23), 5, shuffle=True, seed=3)
    whole = torch.cat([batch.targets for batch in iterator.steps(0)])
    records = list(iterator.steps(0, start=9))
    check_records(records, 23, start=9)
    assert [batch.position for batch in records] == [14, 19, 23]
    assert torch.equal(torch.cat([batch.targets for batch in records]), whole[9:])


@pytest.mark.parametrize("kind", ["tensors", "dataset"])
def test_a_callable_batch_size_changing_mid_epoch_takes_effect_at_the_next_batch(kind):
    size = {"now": 4}
    iterator = BatchIterator(numbered_source(kind, 23), lambda: size["now"], shuffle=True, seed=0)
    records = []
    for batch in iterator.steps(0):
        records.append(batch)
        if len(records) == 2:  # the policy decides anew after the second step
            size["now"] = 7
    check_records(records, 23)
    assert [batch.requested for batch in records] == [4, 4, 7, 7, 7]
    assert [batch.global_size for batch in records] == [4, 4, 7, 7, 1]
    assert [batch.position for batch in records] == [4, 8, 15, 22, 23]
    order = torch.cat([batch.targets for batch in records])
    assert torch.equal(order, epoch_order(23, 0, 0))  # same order, every sample once

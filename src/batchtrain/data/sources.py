"""Data sources: where samples live and how a batch of given indices is fetched.

A source knows its length and how to turn index batches into (x, y) tensors. Which indices form a
batch, and in which order, is the batch iterator's business (iterator.py), not the source's.
"""
import math
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, IterableDataset, Subset

from batchtrain.data.arrays import as_features, as_tensor, check_pair
from batchtrain.data.iterable import IterableSource
from batchtrain.data.stream import StreamSource
from batchtrain.errors import ConfigError, DataError

IndexBatch = slice | Tensor  # a slice for contiguous batches (zero-copy views), else int64 indices
TargetMap = Callable[[Tensor], Tensor]


class TensorSource:
    """Samples held in memory as two tensors; a batch is one gather (or slice), no per-sample collation."""

    orders_itself = False
    standardize = False

    def __init__(self, x: Tensor, y: Tensor):
        self.x = x
        self.y = y

    def __len__(self) -> int:
        return len(self.x)

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return tuple(self.x.shape[1:])

    def targets(self) -> Tensor:
        return self.y

    def split_tail(self, start: int) -> tuple["TensorSource", "TensorSource"]:
        return (TensorSource(self.x[:start], self.y[:start]),
                TensorSource(self.x[start:], self.y[start:]))

    def map_targets(self, prepare: TargetMap) -> "TensorSource":
        return TensorSource(self.x, prepare(self.y))

    def to(self, device: torch.device) -> "TensorSource":
        return TensorSource(self.x.to(device), self.y.to(device))

    def batches(self, index_batches: Iterable[IndexBatch]) -> Iterator[tuple[Tensor, Tensor]]:
        for index in index_batches:
            yield self.x[index], self.y[index]


class DatasetSource:
    """A map-style torch Dataset yielding (x, y) pairs, batched through a DataLoader."""

    orders_itself = False
    standardize = False

    def __init__(self, dataset: Dataset, prepare: TargetMap | None = None, num_workers: int = 0,
                 pin_memory: bool = False):
        self.dataset = dataset
        self.prepare = prepare
        self.num_workers = num_workers
        self.pin_memory = pin_memory

    def __len__(self) -> int:
        return len(self.dataset)

    @property
    def sample_shape(self) -> tuple[int, ...]:
        x, _ = _pair(self.dataset[0])
        return tuple(as_features(torch.as_tensor(x).unsqueeze(0)).shape[1:])

    def targets(self) -> Tensor:
        """Every target, in order (one pass over the dataset unless it has a .targets attribute)."""
        stored = getattr(self.dataset, "targets", None)
        if stored is not None:
            return as_tensor(stored, "dataset targets")
        chunks = [slice(start, min(start + 1024, len(self))) for start in range(0, len(self), 1024)]
        return torch.cat([y for _, y in self._loader(chunks, map_targets=False)])

    def split_tail(self, start: int) -> tuple["DatasetSource", "DatasetSource"]:
        head = Subset(self.dataset, range(start))
        tail = Subset(self.dataset, range(start, len(self)))
        return (DatasetSource(head, self.prepare, self.num_workers, self.pin_memory),
                DatasetSource(tail, self.prepare, self.num_workers, self.pin_memory))

    def map_targets(self, prepare: TargetMap) -> "DatasetSource":
        return DatasetSource(self.dataset, prepare, self.num_workers, self.pin_memory)

    def to(self, device: torch.device) -> "DatasetSource":
        return DatasetSource(self.dataset, self.prepare, self.num_workers,
                             pin_memory=device.type == "cuda")

    def batches(self, index_batches: Iterable[IndexBatch]) -> Iterator[tuple[Tensor, Tensor]]:
        return self._loader(index_batches, map_targets=True)

    def _loader(self, index_batches: Iterable[IndexBatch], map_targets: bool):
        lists = (_index_list(index) for index in index_batches)
        loader = DataLoader(self.dataset, batch_sampler=lists, num_workers=self.num_workers,
                            pin_memory=self.pin_memory, collate_fn=_collate_pairs)
        for x, y in loader:
            yield x, (self.prepare(y) if map_targets and self.prepare else y)


def _index_list(index: IndexBatch) -> list[int]:
    if isinstance(index, slice):
        return list(range(index.start, index.stop))
    return index.tolist()


def _pair(item: Any) -> tuple[Any, Any]:
    if not isinstance(item, (tuple, list)) or len(item) != 2:
        raise DataError("a Dataset passed to batchtrain must yield (x, y) pairs, got "
                        f"{type(item).__name__}; return (features, target) from __getitem__")
    return item[0], item[1]


def _collate_pairs(items: list) -> tuple[Tensor, Tensor]:
    pairs = [_pair(item) for item in items]
    x = torch.stack([torch.as_tensor(x) for x, _ in pairs])
    y = torch.stack([torch.as_tensor(y) for _, y in pairs])
    return as_features(x, "dataset x"), as_tensor(y, "dataset y")


class Source(Protocol):
    """What the trainer and the batch iterator need of data: TensorSource, DatasetSource,
    StreamSource (files streamed from disk), IterableSource (the user's own batches)."""

    def __len__(self) -> int: ...
    @property
    def sample_shape(self) -> tuple[int, ...]: ...
    def targets(self) -> Tensor: ...           # enough targets to infer the task
    def split_tail(self, start: int) -> tuple["Source", "Source"]: ...
    def map_targets(self, prepare: TargetMap) -> "Source": ...
    def to(self, device: torch.device) -> "Source": ...
    # Random access (orders_itself False): batches(index_batches). Streams (orders_itself True):
    # order(seed, epoch, shuffle) + batches(positions, plan): the source plans its own order.
    orders_itself: bool
    # True: the model gets a first layer standardising inputs with moments() of this data.
    standardize: bool


def holds_targets(x: Any) -> bool:
    """Datasets and streams carry their own targets; arrays passed to predict() do not."""
    return isinstance(x, (Dataset, StreamSource, IterableSource))


STREAM_BATCH = 1024  # samples an IterableDataset's items are collated into, before re-batching


def as_source(x: Any, y: Any = None, prefix: str = "") -> Source:
    """A source from arrays/tensors (x and y), a torch Dataset or IterableDataset of (x, y) pairs
    (y=None), or a streamed source (batchtrain.data.open, from_batches)."""
    if isinstance(x, (StreamSource, IterableSource)):
        if y is not None:
            raise ConfigError(f"{prefix}y must be None when {prefix}x is a streamed dataset "
                              "(it holds its targets)")
        return x
    if isinstance(x, IterableDataset):
        if y is not None:
            raise ConfigError(f"{prefix}y must be None when {prefix}x is an IterableDataset of (x, y)")
        length = len(x) if hasattr(x, "__len__") else None
        return IterableSource(lambda: DataLoader(x, batch_size=STREAM_BATCH, collate_fn=_collate_pairs),
                              length)
    if isinstance(x, Dataset):
        if y is not None:
            raise ConfigError(f"{prefix}y must be None when {prefix}x is a Dataset yielding (x, y)")
        if len(x) == 0:
            raise DataError(f"{prefix}dataset is empty (0 samples); pass at least one sample")
        return DatasetSource(x)
    if y is None:
        raise ConfigError(f"{prefix}y is missing: pass targets as y, or a Dataset of (x, y) as x")
    features, targets = as_features(x, f"{prefix}x"), as_tensor(y, f"{prefix}y")
    check_pair(features, targets, prefix)
    return TensorSource(features, targets)


def split_validation(source: Source, validation_split: float) -> tuple[Source, Source | None]:
    """Hold out the last `validation_split` fraction of samples, before any shuffling (as Keras)."""
    if not 0.0 <= validation_split < 1.0:
        raise ConfigError(f"validation_split must be in [0, 1), got {validation_split}")
    if validation_split == 0.0:
        return source, None
    start = math.floor(len(source) * (1.0 - validation_split))
    if start == len(source) or start == 0:
        raise DataError(f"validation_split={validation_split} of {len(source)} samples leaves "
                        f"{len(source) - start} for validation and {start} for training; "
                        "use more data or another split")
    return source.split_tail(start)


def fit_sources(x: Any, y: Any, validation_split: float,
                validation_data: Any) -> tuple[Source, Source | None]:
    """fit()'s training and validation sources: validation_data when given ((x, y) or a Dataset),
    else the last validation_split of the data."""
    source = as_source(x, y)
    if validation_data is None:
        return split_validation(source, validation_split)
    if isinstance(validation_data, torch.utils.data.Dataset):
        return source, as_source(validation_data, prefix="validation ")
    if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
        raise ConfigError("validation_data must be (x_val, y_val) or a Dataset of (x, y) pairs")
    return source, as_source(*validation_data, prefix="validation ")

"""The batch iterator: which samples form each batch, in which order, and where an epoch ends.

Separation of concerns: the trainer asks for an epoch's batches and trains on them; it never
indexes data, shuffles, or counts where an epoch ends. Sources (sources.py) only fetch the samples
of a given index batch. Here lives everything in between: the seeded per-epoch order (set by the
iterator itself, so no caller can forget to reseed an epoch), the batch boundaries, and the move
to the device.
"""
import numbers
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from batchtrain.data.sources import Source, TensorSource
from batchtrain.errors import ConfigError

if TYPE_CHECKING:
    from batchtrain.distributed import Distributed


def epoch_order(num_samples: int, seed: int, epoch: int) -> Tensor:
    """The shuffled sample order of an epoch: a permutation from a generator seeded with (seed, epoch).

    Public so a hand-written loop can reproduce batchtrain's batches exactly.
    """
    generator = torch.Generator().manual_seed(_epoch_seed(seed, epoch))
    return torch.randperm(num_samples, generator=generator)


def _epoch_seed(seed: int, epoch: int) -> int:
    # Distinct, well-spread seeds per epoch; the large odd multiplier keeps (seed, epoch) pairs apart.
    return (seed * 1_000_003 + epoch) % (2**63)


class BatchIterator:
    """Batches from a source, per epoch; every sample exactly once per epoch.

    batch_size: samples per batch, or a callable asked before every batch (a batch-size policy's
        batch_size method): a new size takes effect at the next batch, mid-epoch included, and
        the epoch continues from the same position in the same order.
    shuffle: a new seeded order every epoch (epoch_order); else the stored order.
    seed: the shuffle seed; device: where batches are delivered.
    shard: under DistributedDataParallel, this rank's place: every rank walks the same order and
        takes its own contiguous part of each global batch, so `batch_size` is the global batch
        and no sample is seen twice. pad: when a global batch has fewer samples than ranks, a rank
        with none gets one duplicate sample so it still joins the gradient all-reduce
        (global_size and real_samples tell the trainer to weight it 0); without pad (evaluation)
        such a rank skips the batch.
    position: samples of the current epoch already delivered, over all ranks (for checkpoints).
    """

    def __init__(self, source: Source, batch_size: int | Callable[[], int], shuffle: bool = True,
                 seed: int = 0, device: torch.device = torch.device("cpu"),
                 shard: "Distributed | None" = None, pad: bool = True):
        if not callable(batch_size):
            check_batch_size(batch_size)
        self.source = _place(source, device)
        self.batch_size = batch_size if callable(batch_size) else int(batch_size)
        self.shuffle = shuffle
        self.seed = seed
        self.device = device
        self.shard = shard
        self.pad = pad
        self.position = 0
        self.global_size = 0
        self.real_samples = 0

    def __len__(self) -> int:
        """Batches per epoch at the current batch size."""
        return -(-len(self.source) // self._next_size())

    @property
    def num_samples(self) -> int:
        return len(self.source)

    def epoch(self, epoch: int, start: int = 0) -> Iterator[tuple[Tensor, Tensor]]:
        """The batches of epoch `epoch` (0-based), on the device, from sample `start` of its order."""
        non_blocking = self.device.type == "cuda"
        positions = self._positions(start)
        if getattr(self.source, "orders_itself", False):  # streamed: the order is the source's plan
            batches = self.source.batches(positions, self.source.order(self.seed, epoch, self.shuffle))
        else:
            order = epoch_order(len(self.source), self.seed, epoch) if self.shuffle else None
            batches = self.source.batches(span if order is None else order[span] for span in positions)
        for x, y in batches:
            yield x.to(self.device, non_blocking=non_blocking), y.to(self.device, non_blocking=non_blocking)

    def _positions(self, start: int) -> Iterator[slice]:
        """Slices of positions in the epoch's order, one per batch (this rank's part under DDP)."""
        num_samples = len(self.source)
        self.position = start
        while self.position < num_samples:
            stop = min(self.position + self._next_size(), num_samples)
            span = slice(self.position, stop)
            self.global_size = self.real_samples = stop - self.position
            self.position = stop
            if self.shard is not None:
                span = self._local(span)
                if span is None:
                    continue
            yield span

    def _local(self, span: slice) -> slice | None:
        """This rank's part of a global batch of positions (see the class docstring for empty parts)."""
        part = self.shard.shard(self.global_size)
        self.real_samples = part.stop - part.start
        if self.real_samples > 0:
            return slice(span.start + part.start, span.start + part.stop)
        return slice(span.start, span.start + 1) if self.pad else None

    def _next_size(self) -> int:
        size = self.batch_size() if callable(self.batch_size) else self.batch_size
        check_batch_size(size)
        return int(size)


def is_count(value: object, minimum: int = 1) -> bool:
    """True for an integer (Python or numpy, not bool) >= minimum."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= minimum


def check_batch_size(batch_size: object) -> None:
    if not is_count(batch_size):
        raise ConfigError(f"batch_size must be an integer >= 1, got {batch_size!r}")


def _place(source: Source, device: torch.device) -> Source:
    """Keep in-memory data on the accelerator when it fits easily: one copy instead of one per batch."""
    if device.type != "cuda" or not isinstance(source, TensorSource):
        return source.to(device) if device.type == "cuda" else source
    free_bytes, _ = torch.cuda.mem_get_info(device)
    data_bytes = source.x.nbytes + source.y.nbytes
    return source.to(device) if data_bytes < 0.25 * free_bytes else source

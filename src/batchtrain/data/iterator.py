"""The batch iterator: which samples form each batch, in which order, and where an epoch ends.

Separation of concerns: the trainer asks for an epoch's batches and trains on them; it never
indexes data, shuffles, or counts where an epoch ends. Sources (sources.py) only fetch the samples
of a given index batch. Here lives everything in between: the seeded per-epoch order (set by the
iterator itself, so no caller can forget to reseed an epoch), the batch boundaries, and the move
to the device.
"""
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from batchtrain.data.sources import Source, TensorSource
from batchtrain.errors import check_batch_size

if TYPE_CHECKING:
    from batchtrain.distributed.ddp import Distributed


@dataclass(frozen=True)
class Batch:
    """One step's batch and where it stands; sizes in samples.

    inputs, targets: this rank's samples, on the device. requested: the logical batch the policy
    asked for (the learning rate follows it: an epoch's short last batch is no change of size).
    global_size: the samples of this step over all ranks (requested, or fewer at an epoch's end).
    real_samples: this rank's samples that count (0 for a rank padded with one duplicate sample).
    position: samples of the epoch's order delivered once this batch is done, over all ranks.
    """

    inputs: Tensor
    targets: Tensor
    requested: int
    global_size: int
    real_samples: int
    position: int


def epoch_order(num_samples: int, seed: int, epoch: int) -> Tensor:
    """The shuffled sample order of an epoch: a permutation from a generator seeded with (seed, epoch).

    Public so a hand-written loop can reproduce batchtrain's batches exactly.
    """
    generator = torch.Generator().manual_seed(_epoch_seed(seed, epoch))
    return torch.randperm(num_samples, generator=generator)


def first_epoch_samples(source: Source, n: int, seed: int, start: int = 0, shuffle: bool = True,
                        device: torch.device = torch.device("cpu")) -> tuple[Tensor, Tensor]:
    """The n samples (and targets) at positions start .. start + n of epoch 0's order under
    this seed and shuffle, on the device: what a run of BatchIterator(source, ..., shuffle,
    seed) trains on there."""
    return next(BatchIterator(source, n, shuffle, seed, device).epoch(0, start))


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
    position: samples of the current epoch delivered so far, over all ranks.
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
        self._order: Tensor | None = None  # the order of the epoch being walked, when it reads lazily
        self._skip = 0  # samples the walk passes over before its next batch (skip)

    def __len__(self) -> int:
        """Batches per epoch at the current batch size."""
        return -(-len(self.source) // self._next_size())

    @property
    def num_samples(self) -> int:
        return len(self.source)

    def epoch(self, epoch: int, start: int = 0) -> Iterator[tuple[Tensor, Tensor]]:
        """The (inputs, targets) of epoch `epoch` (0-based), on the device, from sample `start` of
        its order (for evaluation and prediction; training takes `steps` for the whole record)."""
        for batch in self.steps(epoch, start):
            yield batch.inputs, batch.targets

    def steps(self, epoch: int, start: int = 0) -> Iterator["Batch"]:
        """One Batch record per optimizer step of epoch `epoch`, from sample `start` of its order."""
        non_blocking = self.device.type == "cuda"
        records: deque[tuple[int, int, int, int]] = deque()  # a reading source may run ahead
        spans = self._spans(start, records)
        self._order, self._skip, self.position = None, 0, start
        if self.source.orders_itself:  # streamed: the order is the source's plan
            batches = self.source.batches(spans, self.source.order(self.seed, epoch, self.shuffle))
        else:
            order = epoch_order(len(self.source), self.seed, epoch) if self.shuffle else None
            batches = self.source.batches(span if order is None else order[span] for span in spans)
            if isinstance(self.source, TensorSource) and self.shard is None:  # reads one at a time
                self._order = order if order is not None else torch.arange(len(self.source))
        for x, y in batches:
            requested, global_size, real_samples, position = records.popleft()
            self.position = position
            yield Batch(x.to(self.device, non_blocking=non_blocking),
                        y.to(self.device, non_blocking=non_blocking),
                        requested, global_size, real_samples, position)

    def _spans(self, start: int, records: deque) -> Iterator[slice]:
        """Slices of positions in the epoch's order, one per batch (this rank's part under DDP);
        each batch's (requested, global size, real samples, position after it) goes to records."""
        num_samples = len(self.source)
        position = start
        while (position := position + self._skip) < num_samples:
            self._skip = 0
            requested = self._next_size()
            stop = min(position + requested, num_samples)
            span, global_size = slice(position, stop), stop - position
            position = stop
            real_samples = global_size
            if self.shard is not None:
                span, real_samples = self._local(span, global_size)
                if span is None:
                    continue
            records.append((requested, global_size, real_samples, position))
            yield span

    def upcoming(self, n: int) -> tuple[Tensor, Tensor] | None:
        """While an epoch is walked (steps), between its batches: the n samples and targets that
        come next in its order, on the device, or None where fewer than n are left or the source
        reads ahead of the batches (streamed, a DataLoader) or is sharded (DDP)."""
        if self._order is None or self.position + n > len(self.source):
            return None
        inputs, targets = next(self.source.batches([self._order[self.position:self.position + n]]))
        return inputs.to(self.device), targets.to(self.device)

    def skip(self, n: int) -> None:
        """The walk passes over the next n samples (their steps were taken elsewhere: a kept
        branch trained on them, upcoming); the epoch goes on after them."""
        self._skip += n
        self.position += n

    def _local(self, span: slice, global_size: int) -> tuple[slice | None, int]:
        """This rank's part of a global batch of positions and its real samples (see the class
        docstring for empty parts)."""
        part = self.shard.shard(global_size)
        real_samples = part.stop - part.start
        if real_samples > 0:
            return slice(span.start + part.start, span.start + part.stop), real_samples
        return (slice(span.start, span.start + 1) if self.pad else None), 0

    def _next_size(self) -> int:
        size = self.batch_size() if callable(self.batch_size) else self.batch_size
        check_batch_size(size)
        return int(size)


def _place(source: Source, device: torch.device) -> Source:
    """Keep in-memory data on the accelerator when it fits easily: one copy instead of one per batch."""
    if device.type != "cuda" or not isinstance(source, TensorSource):
        return source.to(device) if device.type == "cuda" else source
    free_bytes, _ = torch.cuda.mem_get_info(device)
    data_bytes = source.x.nbytes + source.y.nbytes
    return source.to(device) if data_bytes < 0.25 * free_bytes else source

"""Streamed sources: datasets larger than memory, read from disk piece by piece with bounded memory.

How an epoch is read (the out-of-core shuffle):
1. the pieces (row groups, .npy blocks, CSV byte ranges) are put in a seeded random order;
2. consecutive pieces of that order are grouped into windows of about `window_rows` rows;
3. a window is read whole (by a background pool, one window ahead of training) and its rows are
   visited in a seeded random order.
Memory holds at most two windows (the current one and the next), whatever the dataset's size;
their arrays are reused from window to window and epoch to epoch (data/windows.py).
Quality trade-off: a batch mixes rows of the window_rows / rows-per-piece pieces of its window,
drawn from anywhere in the dataset, and the grouping changes every epoch. Larger windows mix more
and cost memory; smaller pieces (block_rows for .npy) mix more and cost more reads. With
window_rows >= the dataset's rows this is a full shuffle.

The order depends only on (seed, epoch) and the pieces' sizes, never on timing, so a position in
the epoch (samples delivered) is enough to resume exactly: the window holding it is read again.
"""
import contextlib
import functools
import itertools
import os
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context

import numpy as np
import torch
from torch import Tensor

from batchtrain.data.formats.base import Table, default_window_rows
from batchtrain.data.windows import (EpochPlan, PieceRange, WindowBuffers, WindowRead, WindowReader,
                                     stream_batches)
from batchtrain.errors import ConfigError

PREFETCH_KINDS = ("auto", "thread", "process", "none")


@dataclass(frozen=True)
class StreamOptions:
    """window_rows: rows shuffled together (None: as many as fit in 64 MiB, at least one piece).
    prefetch: "thread" (pyarrow and numpy read without holding the GIL), "process" (worker
        processes; results are copied back), "none" (read on demand in the training thread) or
        "auto" (default): a thread when cores are left over from torch's threads or the model
        trains on a GPU, else none (see resolve_prefetch).
    workers: pieces read at once. standardize: the model gets a first layer that standardises
        features with statistics from one streaming pass over the training rows."""

    window_rows: int | None = None
    prefetch: str = "auto"
    workers: int = 1
    standardize: bool = False

    def check(self) -> "StreamOptions":
        if self.window_rows is not None and self.window_rows < 1:
            raise ConfigError(f"shuffle window must be >= 1 rows, got {self.window_rows}")
        if self.workers < 1:
            raise ConfigError(f"prefetch workers must be >= 1, got {self.workers}")
        if self.prefetch not in PREFETCH_KINDS:
            raise ConfigError(f"prefetch must be one of {', '.join(PREFETCH_KINDS)}, "
                              f"got {self.prefetch!r}")
        return self


class StreamSource:
    """A Table's rows (all of them, or row ranges of its pieces), streamed in shuffled windows."""

    orders_itself = True  # the batch iterator hands positions; this source maps them to rows

    def __init__(self, table: Table, options: StreamOptions = StreamOptions(),
                 ranges: list[PieceRange] | None = None, prepare: Callable | None = None,
                 pin_memory: bool = False, buffers: WindowBuffers | None = None,
                 processes: "WorkerProcesses | None" = None):
        self.table = table
        self.options = options
        self.ranges = ranges if ranges is not None else [
            (piece, 0, rows) for piece, rows in enumerate(table.piece_rows)]
        self.prepare = prepare
        self.pin_memory = pin_memory
        # Shared by the sources split from this one (training and validation rows): they are
        # read one after the other, so two windows' arrays serve both, epoch after epoch.
        self.buffers = buffers if buffers is not None else WindowBuffers()
        self.processes = processes if processes is not None else WorkerProcesses()
        self._length = sum(stop - start for _, start, stop in self.ranges)
        self._target_summary: Tensor | None = None

    def __len__(self) -> int:
        return self._length

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return tuple(self.table.feature_shape)

    @property
    def window_rows(self) -> int:
        if self.options.window_rows is not None:
            return self.options.window_rows
        return default_window_rows(self.sample_shape)

    # -- what the trainer asks of any source ----------------------------------------------------

    def targets(self) -> Tensor:
        """Enough of the targets to infer the task without holding them all: their dtype, range
        and per-sample shape ([min, max] rows; one-hot rows as an identity matrix). One pass over
        the target column, checking it."""
        if self._target_summary is None:
            low = high = None
            one_hot = True
            for y in self._read_all(self.table.read_targets):
                low = y.min(axis=0) if low is None else np.minimum(low, y.min(axis=0))
                high = y.max(axis=0) if high is None else np.maximum(high, y.max(axis=0))
                one_hot = one_hot and y.ndim == 2 and bool(((y == 0) | (y == 1)).all()) and \
                    bool((y.sum(axis=1) == 1).all())
            summary = np.eye(len(low), dtype=low.dtype) if one_hot else np.stack([low, high])
            self._target_summary = torch.from_numpy(summary)
        return self._target_summary

    @property
    def standardize(self) -> bool:
        return self.options.standardize

    def moments(self) -> "Moments":
        """Mean and standard deviation of the features and targets of these rows (one pass)."""
        return Moments.of(self._read_all(self.table.read, features=True), self.sample_shape)

    def split_tail(self, start: int) -> tuple["StreamSource", "StreamSource"]:
        """Rows before `start` (in storage order) and from `start` on: a hold-out by row ranges."""
        head, tail, seen = [], [], 0
        for piece, first, end in self.ranges:
            cut = min(max(start - seen, 0), end - first)
            if cut > 0:
                head.append((piece, first, first + cut))
            if first + cut < end:
                tail.append((piece, first + cut, end))
            seen += end - first
        return self._with(ranges=head), self._with(ranges=tail)

    def map_targets(self, prepare: Callable[[Tensor], Tensor]) -> "StreamSource":
        return self._with(prepare=prepare)

    def to(self, device: torch.device) -> "StreamSource":
        return self._with(pin_memory=device.type == "cuda")

    def order(self, seed: int, epoch: int, shuffle: bool) -> "EpochPlan":
        return EpochPlan.make(self.ranges, self.window_rows, seed, epoch, shuffle)

    def batches(self, positions: Iterable[slice], plan: "EpochPlan") -> Iterator[tuple[Tensor, Tensor]]:
        """The rows at each slice of epoch positions, in plan's order, read one window ahead."""
        with make_pool(self.options, self.table, self.pin_memory, self.processes) as pool:
            read = functools.partial(read_window, table=self.table, buffers=self.buffers)
            reader = WindowReader(plan, pool, read, self.buffers)
            yield from stream_batches(positions, reader, self.prepare, self.pin_memory)

    # -- helpers --------------------------------------------------------------------------------

    def _with(self, **changes) -> "StreamSource":
        fields = {"ranges": self.ranges, "prepare": self.prepare, "pin_memory": self.pin_memory,
                  "buffers": self.buffers, "processes": self.processes, **changes}
        return StreamSource(self.table, self.options, **fields)

    def _read_all(self, read: Callable, features: bool = False) -> Iterator:
        """Each range's rows in storage order; the pool reads `workers` pieces ahead."""
        # nothing else runs: read in a thread whatever the cores
        with make_pool(self.options, self.table, True, self.processes) as pool:
            pending: deque = deque()
            ranges = iter(self.ranges)
            for piece_range in itertools.islice(ranges, self.options.workers):
                pending.append((submit(pool, read, piece_range[0]), piece_range))
            while pending:
                future, (_, first, end) = pending.popleft()
                following = next(ranges, None)
                if following is not None:
                    pending.append((submit(pool, read, following[0]), following))
                data = future.result()
                yield (data[0][first:end], data[1][first:end]) if features else data[first:end]


@dataclass(frozen=True)
class Moments:
    """Per-feature and per-target mean and standard deviation (1 where constant)."""

    x_mean: Tensor
    x_std: Tensor
    y_mean: Tensor
    y_std: Tensor

    @staticmethod
    def of(chunks: Iterable[tuple[np.ndarray, np.ndarray]], shape: tuple[int, ...]) -> "Moments":
        x_moments, y_moments = RunningMoments(), RunningMoments()
        for x, y in chunks:
            x_moments.add(x)
            y_moments.add(y)
        y_mean, y_std = y_moments.result()
        return Moments(*x_moments.result(shape), y_mean, y_std)


class RunningMoments:
    """Mean and variance over chunks of rows, merged stably in float64 with the pairwise update
    of Chan, Golub and LeVeque (1979)."""

    def __init__(self):
        self.count, self.mean, self.m2 = 0, 0.0, 0.0

    def add(self, chunk: np.ndarray) -> None:
        rows = np.asarray(chunk, dtype=np.float64).reshape(len(chunk), -1)
        chunk_mean, chunk_m2 = rows.mean(axis=0), rows.var(axis=0) * len(rows)
        delta, total = chunk_mean - self.mean, self.count + len(rows)
        self.mean = self.mean + delta * len(rows) / total
        self.m2 = self.m2 + chunk_m2 + delta**2 * self.count * len(rows) / total
        self.count = total

    def result(self, shape: tuple[int, ...] | None = None) -> tuple[Tensor, Tensor]:
        std = np.sqrt(self.m2 / self.count)
        std[std == 0] = 1.0
        shape = shape if shape is not None else std.shape
        return (torch.from_numpy(self.mean.reshape(shape)).float(),
                torch.from_numpy(std.reshape(shape)).float())


def read_window(pool: Executor, window: list[PieceRange], table: Table,
                buffers: WindowBuffers) -> WindowRead:
    """Submit the reads of a window's piece ranges, each straight into its rows of a pair of
    buffers (worker processes cannot write into ours: their results are copied in)."""
    counts = [end - first for _, first, end in window]
    x, y = buffers.take(sum(counts), table.feature_shape, table.target_shape, table.target_dtype)
    reads = []
    for (piece, first, end), offset, count in zip(window, itertools.accumulate([0, *counts]), counts):
        rows = (x[offset:offset + count], y[offset:offset + count])
        if isinstance(pool, ProcessPoolExecutor):
            reads.append((pool.submit(_worker_call, "read", piece), (first, end, *rows)))
        else:
            reads.append((pool.submit(table.read_into, piece, first, end, *rows), None))

    def wait() -> tuple[np.ndarray, np.ndarray]:
        for future, copy in reads:
            result = future.result()
            if copy is not None:
                first, end, x_rows, y_rows = copy
                x_rows[...], y_rows[...] = result[0][first:end], result[1][first:end]
        return x, y
    return wait


class _Inline(Executor):
    """prefetch="none": each read runs when submitted, in the caller's thread."""

    def submit(self, fn, /, *args, **kwargs) -> Future:
        future: Future = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as error:  # delivered by result(), as a pool would
            future.set_exception(error)
        return future


_worker_table: Table | None = None  # the table, in a worker process (set once by the initializer)


def _set_worker_table(table: Table) -> None:
    global _worker_table
    _worker_table = table
    torch.set_num_threads(1)  # the workers decode; the training process owns the cores
    import pyarrow
    pyarrow.set_cpu_count(1)


def _worker_call(method: str, piece: int):
    return getattr(_worker_table, method)(piece)


def resolve_prefetch(prefetch: str, accelerator: bool = False) -> str:
    """ "auto": read in a background thread when it has a core of its own (a GPU trains the model,
    or the machine has more cores than torch's threads), else in the training thread. Why: on
    the CPU torch's threads meet at a barrier after every kernel, and a reader thread that
    takes one of their cores stalls them all. Measured on 2 cores, .npy, MLP, batch 4096,
    streamed / in-memory samples/s: 0.96 inline against 0.83 with a reader thread when reads
    went through memory maps; with reads straight into reused windows 0.99 against 0.97, and
    Parquet (decoding) 0.81 against 0.76, so inline stays the choice there."""
    if prefetch != "auto":
        return prefetch
    spare_cores = (os.cpu_count() or 1) > torch.get_num_threads()
    return "thread" if accelerator or spare_cores else "none"


class WorkerProcesses:
    """Worker processes kept from epoch to epoch by a source and the sources split from it:
    starting them imports torch in each (1-2 s), which every epoch paid before. They are shut
    down when the last source holding them is collected, or at exit."""

    def __init__(self):
        self.pool: ProcessPoolExecutor | None = None

    def get(self, workers: int, table: Table) -> ProcessPoolExecutor:
        # A worker that died (killed, out of memory) breaks its pool for good: start a new one.
        if self.pool is None or getattr(self.pool, "_broken", False):
            # spawned: a fork of a process running torch's thread pools can deadlock
            self.pool = ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn"),
                                            initializer=_set_worker_table, initargs=(table,))
            weakref.finalize(self, self.pool.shutdown, cancel_futures=True)
        return self.pool


def make_pool(options: StreamOptions, table: Table, accelerator: bool,
              processes: WorkerProcesses) -> contextlib.AbstractContextManager:
    """The readers, as a context: threads (pyarrow and numpy release the GIL while reading),
    the worker processes `processes` keeps across epochs, or inline."""
    prefetch = resolve_prefetch(options.prefetch, accelerator)
    if prefetch == "process":
        return contextlib.nullcontext(processes.get(options.workers, table))
    if prefetch == "thread":
        return ThreadPoolExecutor(max_workers=options.workers, thread_name_prefix="batchtrain-read")
    return _Inline()


def submit(pool: Executor, read: Callable, piece: int) -> Future:
    """Submit table.read or table.read_targets; worker processes call their own copy of the table."""
    if isinstance(pool, ProcessPoolExecutor):
        return pool.submit(_worker_call, read.__name__, piece)
    return pool.submit(read, piece)

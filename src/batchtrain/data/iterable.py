"""Sources from the user's own readers: a torch IterableDataset, or a function returning an
iterable (a generator) of (x, y) batches. Any batch sizes: rows are re-cut to the policy's batches.

Such a stream can only be read forwards, so its epochs read it from the start: rows are grouped
in windows of consecutive rows and shuffled within each window (no shuffle of the storage order).
Its length is needed up front (epochs, schedules, progress); without `length` one counting pass
reads it once. A position in the epoch is restored by reading forwards to it.
"""
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import Any

import numpy as np
import torch
from torch import Tensor

from batchtrain.data.arrays import as_features, as_tensor, check_finite
from batchtrain.data.stream import Moments, StreamOptions
from batchtrain.data.windows import (EpochPlan, WindowRead, WindowReader, joined_window,
                                     stream_batches)
from batchtrain.errors import DataError


class IterableSource:
    """Rows [begin, end) of a re-iterable stream of (x, y) batches."""

    orders_itself = True

    def __init__(self, make_iterable: Callable[[], Iterable], length: int | None = None,
                 options: StreamOptions = StreamOptions(), rows: tuple[int, int] | None = None,
                 prepare: Callable | None = None, pin_memory: bool = False):
        self.make_iterable = make_iterable
        self.length = length
        self.options = options
        self.rows = rows
        self.prepare = prepare
        self.pin_memory = pin_memory
        self._first: tuple[Tensor, Tensor] | None = None

    def __len__(self) -> int:
        begin, end = self._bounds()
        return end - begin

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return tuple(self._first_batch()[0].shape[1:])

    def targets(self) -> Tensor:
        """[min, max] of the targets (enough to infer the task), from one pass."""
        low = high = None
        for _, y in RowCursor(self.make_iterable).chunks(*self._bounds()):
            low = y.amin(dim=0) if low is None else torch.minimum(low, y.amin(dim=0))
            high = y.amax(dim=0) if high is None else torch.maximum(high, y.amax(dim=0))
        return torch.stack([low, high])

    @property
    def standardize(self) -> bool:
        return self.options.standardize

    def moments(self) -> Moments:
        """Mean and standard deviation of the features and targets of these rows (one pass)."""
        chunks = ((x.numpy(), y.numpy()) for x, y in RowCursor(self.make_iterable).chunks(*self._bounds()))
        return Moments.of(chunks, self.sample_shape)

    def split_tail(self, start: int) -> tuple["IterableSource", "IterableSource"]:
        begin, end = self._bounds()
        return self._with(rows=(begin, begin + start)), self._with(rows=(begin + start, end))

    def map_targets(self, prepare: Callable[[Tensor], Tensor]) -> "IterableSource":
        return self._with(prepare=prepare)

    def to(self, device: torch.device) -> "IterableSource":
        return self._with(pin_memory=device.type == "cuda")

    def order(self, seed: int, epoch: int, shuffle: bool) -> EpochPlan:
        begin, end = self._bounds()
        window = self.options.window_rows or 65_536
        ranges = [(0, first, min(first + window, end)) for first in range(begin, end, window)]
        return EpochPlan.make(ranges, window, seed, epoch, shuffle, shuffle_pieces=False)

    def batches(self, positions: Iterable[slice], plan: EpochPlan) -> Iterator[tuple[Tensor, Tensor]]:
        cursor = RowCursor(self.make_iterable)

        def submit_window(pool: Executor, window: list) -> WindowRead:
            return joined_window([pool.submit(cursor.take, first, end) for _, first, end in window])

        # One reader thread: the stream is read in order, so windows are read one after another.
        with ThreadPoolExecutor(1, thread_name_prefix="batchtrain-read") as pool:
            yield from stream_batches(positions, WindowReader(plan, pool, submit_window),
                                      self.prepare, self.pin_memory)

    def _with(self, **changes) -> "IterableSource":
        fields = {"length": self.length, "options": self.options, "rows": self.rows,
                  "prepare": self.prepare, "pin_memory": self.pin_memory, **changes}
        source = IterableSource(self.make_iterable, **fields)
        source._first = self._first
        return source

    def _bounds(self) -> tuple[int, int]:
        if self.rows is None:
            if self.length is None:
                self.length = sum(len(x) for x, _ in RowCursor(self.make_iterable).chunks(0, None))
            if self.length == 0:
                raise DataError("the iterable yielded no rows; it must yield (x, y) batches")
            self.rows = (0, self.length)
        return self.rows

    def _first_batch(self) -> tuple[Tensor, Tensor]:
        if self._first is None:
            self._first = next(RowCursor(self.make_iterable).chunks(0, None), None)
            if self._first is None:
                raise DataError("the iterable yielded no batches; it must yield (x, y) batches")
        return self._first


class RowCursor:
    """Reads rows of a stream of (x, y) batches forwards; going back restarts the stream."""

    def __init__(self, make_iterable: Callable[[], Iterable]):
        self.make_iterable = make_iterable
        self.batches: Iterator | None = None
        self.position = 0            # rows consumed from self.batches
        self.held: tuple[Tensor, Tensor] | None = None  # the rest of a batch already read

    def take(self, begin: int, end: int) -> tuple[np.ndarray, np.ndarray]:
        """Rows [begin, end) of the stream as numpy arrays (x float32)."""
        chunks = list(self.chunks(begin, end))
        if sum(len(x) for x, _ in chunks) != end - begin:
            raise DataError(f"the iterable ended after {self.position} rows, before row {end}: "
                            "each call must return a new iterable of the same rows (a generator "
                            "object can be read only once: pass the function that makes it)")
        return (torch.cat([x for x, _ in chunks]).numpy(), torch.cat([y for _, y in chunks]).numpy())

    def chunks(self, begin: int, end: int | None) -> Iterator[tuple[Tensor, Tensor]]:
        """The stream's rows from begin to end (None: to its end), in the pieces it yields."""
        if self.batches is None or begin < self.position - (len(self.held[0]) if self.held else 0):
            self._restart()
        while end is None or self._start_of_held() < end:
            x, y = self._next()
            if x is None:
                return
            first = self.position - len(x)
            lo, hi = max(begin - first, 0), len(x) if end is None else min(end - first, len(x))
            if hi < len(x):
                self.held = (x[hi:], y[hi:])
            if lo < hi:
                yield x[lo:hi], y[lo:hi]

    def _start_of_held(self) -> int:
        return self.position - (len(self.held[0]) if self.held else 0)

    def _next(self) -> tuple[Tensor | None, Tensor | None]:
        if self.held is not None:
            held, self.held = self.held, None
            return held
        item = next(self.batches, None)
        if item is None:
            return None, None
        x, y = check_batch(item, self.position)
        self.position += len(x)
        return x, y

    def _restart(self) -> None:
        self.batches, self.position, self.held = iter(self.make_iterable()), 0, None


def check_batch(item: Any, row: int) -> tuple[Tensor, Tensor]:
    if not isinstance(item, (tuple, list)) or len(item) != 2:
        raise DataError(f"the iterable must yield (x, y) batches; at row {row} it yielded "
                        f"{type(item).__name__}")
    x, y = as_features(item[0], f"x of the batch at row {row}"), as_tensor(item[1], f"y at row {row}")
    if len(x) != len(y):
        raise DataError(f"the batch at row {row} has {len(x)} rows of x but {len(y)} targets")
    check_finite(x, f"x of the batch at row {row}")
    check_finite(y, f"y of the batch at row {row}")
    return x, y

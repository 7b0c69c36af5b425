"""An epoch's windows: which rows each holds (EpochPlan), reading them one window ahead
(WindowReader) into arrays that are reused (WindowBuffers), and batches copied out of them."""
import bisect
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, Future
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor


PieceRange = tuple[int, int, int]  # (piece of the table, first row in it, end row)


@dataclass(frozen=True)
class EpochPlan:
    """An epoch's order: windows of piece ranges, and within each window a seeded row order."""

    windows: list[list[PieceRange]]
    starts: list[int]      # epoch position where each window begins (plus the end)
    seed: int
    epoch: int
    shuffle: bool

    @staticmethod
    def make(ranges: list[PieceRange], window_rows: int, seed: int, epoch: int, shuffle: bool,
             shuffle_pieces: bool = True) -> "EpochPlan":
        """shuffle_pieces=False keeps the ranges in storage order (sequential streams) and
        shuffles only within windows."""
        order = range(len(ranges))
        if shuffle and shuffle_pieces:
            generator = torch.Generator().manual_seed(_mix(seed, epoch, -1))
            order = torch.randperm(len(ranges), generator=generator).tolist()
        windows, current, rows, starts = [], [], 0, [0]
        for index in order:
            current.append(ranges[index])
            rows += ranges[index][2] - ranges[index][1]
            if rows >= window_rows:
                windows.append(current)
                starts.append(starts[-1] + rows)
                current, rows = [], 0
        if current:
            windows.append(current)
            starts.append(starts[-1] + rows)
        return EpochPlan(windows, starts, seed, epoch, shuffle)

    def window_order(self, window: int) -> Tensor | None:
        """The order of the window's rows (None: storage order)."""
        if not self.shuffle:
            return None
        rows = self.starts[window + 1] - self.starts[window]
        generator = torch.Generator().manual_seed(_mix(self.seed, self.epoch, window))
        return torch.randperm(rows, generator=generator)


def _mix(seed: int, epoch: int, window: int) -> int:
    # Distinct seeds per (seed, epoch, window); large odd multipliers keep the triples apart.
    return (seed * 1_000_003 + epoch * 7_919 + window + 1) % (2**63)


def stream_batches(positions: Iterable[slice], reader: "WindowReader", prepare: Callable | None,
                   pin_memory: bool) -> Iterator[tuple[Tensor, Tensor]]:
    """Tensors of the rows at each slice of positions, targets prepared, pinned for CUDA."""
    try:
        for span in positions:
            x, y = reader.rows(span.start, span.stop)
            if prepare is not None:
                y = prepare(y)
            if pin_memory:
                x, y = x.pin_memory(), y.pin_memory()
            yield x, y
    finally:
        reader.close()


WindowRead = Callable[[], tuple[np.ndarray, np.ndarray]]  # waits for a window's rows
SubmitWindow = Callable[[Executor, list[PieceRange]], WindowRead]


class WindowBuffers:
    """Arrays for windows, reused once their window is done.

    Why: a new window-sized array (64 MiB) gets its memory from the kernel one 4 KiB page fault
    at a time as it is first written, and faults are dear in a virtual machine. Measured on 2
    cores, 1M rows of 64 float32 features (4 windows an epoch): 60,000-125,000 faults and
    0.3-0.7 s of kernel time an epoch that trains in 1.2 s, against 2,000 and 0.02 s from arrays
    in memory; one window's first read took 0.2 s instead of 0.04. Windows differ in size by up
    to a piece, so every array has the largest size asked for so far and fits any window."""

    def __init__(self, keep: int = 2):
        self.keep = keep  # free pairs kept: the reader frees one window as it reads the next
        self.capacity = 0  # rows of every array handed out
        self.free: list[tuple[np.ndarray, np.ndarray]] = []
        self.lock = threading.Lock()  # two readers of one source may run in different threads

    def take(self, rows: int, feature_shape: tuple, target_shape: tuple,
             target_dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
        """The first `rows` rows of a free pair of arrays of these shapes, or of a new pair."""
        with self.lock:
            if rows > self.capacity:
                self.capacity, self.free = rows, []
            for index, (x, y) in enumerate(self.free):
                if x.shape[1:] == tuple(feature_shape) and y.shape[1:] == tuple(target_shape) \
                        and y.dtype == target_dtype:
                    del self.free[index]
                    return x[:rows], y[:rows]
            capacity = self.capacity
        return (np.empty((capacity, *feature_shape), np.float32)[:rows],
                np.empty((capacity, *target_shape), target_dtype)[:rows])

    def give_back(self, x: np.ndarray, y: np.ndarray) -> None:
        """Return a pair from take() once nothing reads it any more."""
        x, y = x.base, y.base  # the whole arrays take() sliced
        with self.lock:
            if len(x) == self.capacity and len(self.free) < self.keep:
                self.free.append((x, y))


class WindowReader:
    """An epoch's windows, read by a pool one window ahead; holds at most the current and next.

    submit_window(pool, ranges) submits the reads of a window's ranges and returns a function
    that waits for them and gives the window's (x, y). buffers: where a window's arrays go
    when it is done (None: left to the garbage collector); batches are always copies, so
    nothing outside the reader holds them then."""

    def __init__(self, plan: EpochPlan, pool: Executor, submit_window: SubmitWindow,
                 buffers: WindowBuffers | None = None):
        self.plan, self.pool, self.submit_window, self.buffers = plan, pool, submit_window, buffers
        self.pending: dict[int, WindowRead] = {}
        self.ready: dict[int, tuple[np.ndarray, np.ndarray, Tensor | None]] = {}

    def rows(self, start: int, stop: int) -> tuple[Tensor, Tensor]:
        """Rows at epoch positions [start, stop), possibly spanning windows. Gathered by torch's
        indexing (parallel, as for arrays in memory), not numpy's (one thread)."""
        parts = []
        while start < stop:
            window = bisect.bisect_right(self.plan.starts, start) - 1
            end = min(stop, self.plan.starts[window + 1])
            x, y, order = self._window(window)
            first, last = start - self.plan.starts[window], end - self.plan.starts[window]
            x, y = torch.from_numpy(x), torch.from_numpy(y)
            parts.append((x[first:last].clone(), y[first:last].clone()) if order is None
                         else (x[order[first:last]], y[order[first:last]]))
            start = end
        if len(parts) == 1:
            return parts[0]
        return torch.cat([x for x, _ in parts]), torch.cat([y for _, y in parts])

    def close(self) -> None:
        """Give the windows read back to the buffers (reads still pending keep theirs)."""
        self._drop(list(self.ready))

    def _drop(self, windows: list[int]) -> None:
        for window in windows:
            x, y, _ = self.ready.pop(window)
            if self.buffers is not None:
                self.buffers.give_back(x, y)

    def _window(self, window: int) -> tuple[np.ndarray, np.ndarray, Tensor | None]:
        self._drop([key for key in self.ready if key < window])  # bounded memory: drop the past
        for ahead in (window, window + 1):
            if ahead < len(self.plan.windows) and ahead not in self.ready and ahead not in self.pending:
                self.pending[ahead] = self.submit_window(self.pool, self.plan.windows[ahead])
        if window not in self.ready:
            x, y = self.pending.pop(window)()
            self.ready[window] = (x, y, self.plan.window_order(window))
        return self.ready[window]


def joined_window(futures: list[Future]) -> WindowRead:
    """A window's parts read separately (futures of new, writable (x, y) arrays), joined when
    ready."""
    def wait() -> tuple[np.ndarray, np.ndarray]:
        parts = [future.result() for future in futures]
        return _joined([x for x, _ in parts]), _joined([y for _, y in parts])
    return wait


def _joined(parts: list[np.ndarray]) -> np.ndarray:
    return parts[0] if len(parts) == 1 else np.concatenate(parts)

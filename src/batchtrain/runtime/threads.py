"""CPU speed settings: how many intra-op threads to use, given what else runs on the machine.

Why: torch's CPU kernels split their work over OpenMP threads that meet at a barrier after every
parallel kernel (about 40 per seed-cnn step). A thread the OS has descheduled to run another
process holds the others at that barrier for a scheduler time slice. Measured on the 2-core
development machine, seed-cnn at batch 128, while another job kept about one core busy: a step
took 38-495 ms (median of runs ~70 ms) with 2 threads and 50-67 ms with 1 thread; on an idle
machine 2 threads take ~30 ms against ~50 ms for 1. So: all cores while the machine is free, one
fewer per core that other processes keep busy.

A thread count changes the order in which some sums are accumulated (oneDNN splits the weight
gradient's reduction over threads), so results then agree to float rounding rather than bit for
bit between runs; AdaptiveThreads(enabled=False) keeps torch's setting.
"""
import os
import time
from contextlib import contextmanager

import torch

from batchtrain.callbacks.base import Callback, FitInfo
from batchtrain.errors import ConfigError, is_count


PROC_STAT = "/proc/stat"
MAX_THREADS_PER_CORE = 4


class CpuLoad:
    """CPU time used by other processes, in cores, between successive calls of others_busy_cores().

    Reads the machine's busy time from /proc/stat and this process's from time.process_time();
    None where /proc/stat is missing or counts CPUs that this process may not run on (containers).
    """

    def __init__(self, stat_path: str = PROC_STAT):
        self.stat_path = stat_path
        self.ticks_per_s = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        self.last = self._sample()

    def others_busy_cores(self) -> float | None:
        now = self._sample()
        before, self.last = self.last, now
        if now is None or before is None or now[0] <= before[0]:
            return None
        wall_s = now[0] - before[0]
        machine_busy = (now[1] - before[1]) / self.ticks_per_s / wall_s
        own_busy = (now[2] - before[2]) / wall_s
        return max(0.0, machine_busy - own_busy)

    def _sample(self) -> tuple[float, int, float] | None:
        """(wall clock s, busy ticks of all CPUs, this process's CPU s), or None."""
        try:
            with open(self.stat_path) as stat:
                lines = stat.read().splitlines()
        except OSError:
            return None
        cpus = sum(1 for line in lines if line.startswith("cpu") and line[3:4].isdigit())
        if cpus != usable_cores():
            return None
        ticks = [int(value) for value in lines[0].split()[1:]]
        idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)  # idle + iowait
        return time.monotonic(), sum(ticks[:8]) - idle, time.process_time()


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def threads_for(others_busy: float, max_threads: int, current: int) -> int:
    """Intra-op threads to use while other processes keep `others_busy` cores busy.

    One thread fewer per core they occupy, at least one. Hysteresis: a core counts as taken from
    0.6 of its time on, and as free again below 0.3, so a load near a threshold does not flap.
    """
    most = max(1, max_threads - int(others_busy + 0.4))  # a core is taken from 0.6 of it on
    least = max(1, max_threads - int(others_busy + 0.7))  # and free again below 0.3
    return min(max(current, least), most)


class AdaptiveThreads(Callback):
    """Fits torch's intra-op thread count to the cores other processes leave free, during fit().

    interval_s: how often the load is read (at the end of a step, from /proc/stat; Linux only,
    elsewhere nothing changes); the first reading comes after first_check_s. max_threads: default torch's setting at fit start, restored at
    the end. enabled: False leaves the thread count alone.
    """

    def __init__(self, interval_s: float = 2.0, max_threads: int | None = None,
                 enabled: bool = True, first_check_s: float = 0.25):
        self.interval_s = interval_s
        self.first_check_s = first_check_s
        self.max_threads = max_threads
        self.enabled = enabled
        self.changes: list[tuple[int, int]] = []  # (step, threads) of each change in this fit

    def on_fit_begin(self, trainer, info: FitInfo) -> None:
        self.previous_threads = torch.get_num_threads()
        self.limit = self.max_threads or self.previous_threads
        self.load = CpuLoad()
        self.next_check = time.monotonic() + self.first_check_s
        self.changes = []

    def on_batch_end(self, trainer, samples: int) -> None:
        if not self.enabled or time.monotonic() < self.next_check:
            return
        self.next_check = time.monotonic() + self.interval_s
        others_busy = self.load.others_busy_cores()
        if others_busy is None:
            return
        current = torch.get_num_threads()
        threads = threads_for(others_busy, self.limit, current)
        if threads != current:
            torch.set_num_threads(threads)
            self.changes.append((getattr(trainer, "step_", 0), threads))

    def on_fit_end(self, trainer, history) -> None:
        if torch.get_num_threads() != self.previous_threads:
            torch.set_num_threads(self.previous_threads)


class PinnedThreads(Callback):
    """torch's intra-op thread count set to `threads` during fit(), the previous one restored after."""

    def __init__(self, threads: int):
        self.threads = threads

    def on_fit_begin(self, trainer, info: FitInfo) -> None:
        self.previous_threads = torch.get_num_threads()
        torch.set_num_threads(self.threads)

    def on_fit_end(self, trainer, history) -> None:
        torch.set_num_threads(self.previous_threads)


def thread_callbacks(threads: int | str | None, device: torch.device) -> list[Callback]:
    """The callbacks for a `threads` setting: None (torch's default), an int, or "auto".

    "auto" adapts to the machine's load (AdaptiveThreads) on the CPU; runs then agree to float
    rounding, not bit for bit, since the summation order follows the thread count. On other
    devices torch's CPU threads only feed the device, and are left alone.
    """
    check_threads(threads)
    if threads is None or device.type != "cpu":
        return []
    if threads == "auto":
        return [AdaptiveThreads()]
    return [PinnedThreads(int(threads))]


def check_threads(threads: object) -> None:
    """Raise ConfigError unless `threads` is None, "auto" or an integer in [1, max_threads()]."""
    if threads is None or threads == "auto":
        return
    if not is_count(threads):
        raise ConfigError(f"threads must be 'auto' or an integer >= 1, got {repr(threads)[:200]}")
    if threads > max_threads():
        raise ConfigError(f"threads must be at most {max_threads()} ({MAX_THREADS_PER_CORE} per CPU "
                          f"core of this machine), got {threads}; use auto or fewer threads")


def max_threads() -> int:
    """The most intra-op threads accepted. OpenMP starts every thread asked for: 100000 of them
    crashed the process (no memory for their stacks); more than a few per core only slows it."""
    return MAX_THREADS_PER_CORE * (os.cpu_count() or 1)


@contextmanager
def restored_threads(threads: int | str | None = None, device: torch.device | None = None):
    """Puts torch's intra-op thread count back as it was when the block exits, however it exits:
    an exception in fit() (an interrupt, NonFiniteError) skips the callbacks' on_fit_end. An
    integer `threads` on the CPU is pinned on entry (before fit's callbacks begin: a policy's
    start-up calibration then times the threads training will run on)."""
    previous = torch.get_num_threads()
    try:
        if is_count(threads) and device is not None and device.type == "cpu":
            torch.set_num_threads(int(threads))
        yield
    finally:
        if torch.get_num_threads() != previous:
            torch.set_num_threads(previous)

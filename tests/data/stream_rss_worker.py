"""Stream a dataset from disk and print the growth of peak RSS (bytes) while streaming.

Run as: python stream_rss_worker.py PATH TARGET|- WINDOW_ROWS. Used by test_stream_memory.py in a
fresh process, so the peak is this stream's alone."""
import resource
import sys

from batchtrain.data import open_dataset
from batchtrain.data.iterator import BatchIterator


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def main(path: str, target: str, window_rows: str) -> None:
    source = open_dataset(path, None if target == "-" else target, shuffle_window=int(window_rows),
                          standardize=False)
    batches = BatchIterator(source, 512, shuffle=True, seed=0)
    next(batches.epoch(1))  # imports and pools warmed up before the baseline
    before = peak_rss_bytes()
    rows = sum(len(y) for _, y in batches.epoch(0))
    print(rows, peak_rss_bytes() - before)


if __name__ == "__main__":
    main(*sys.argv[1:])

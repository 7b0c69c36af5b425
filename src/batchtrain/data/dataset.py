"""`open_dataset`: a dataset on disk (.npy, Parquet, CSV; a file or a directory) as a streamed source."""
import math
from collections.abc import Callable, Iterable
from pathlib import Path

from batchtrain.data.formats.cache import CachedTable
from batchtrain.data.formats.csv import CsvTable
from batchtrain.data.formats.npy import NpyTable
from batchtrain.data.formats.parquet import ParquetTable
from batchtrain.data.iterable import IterableSource
from batchtrain.data.stream import StreamOptions, StreamSource
from batchtrain.errors import ConfigError, DataError

FORMATS = {".npy": "npy", ".parquet": "parquet", ".pq": "parquet", ".csv": "csv"}
TABULAR = ("parquet", "csv")


def open_dataset(path: str | Path, target: str | None = None, features: Iterable[str] | None = None,
                 *, shuffle_window: int | None = None, prefetch: str = "auto", workers: int = 1,
                 standardize: bool | None = None, block_rows: int | None = None,
                 cache: str | Path | None = None, require_target: bool = True) -> StreamSource:
    """Stream a dataset from disk in batches, with bounded memory (see data/stream.py).

    path: a .npy file named x*.npy with its y*.npy beside it, a .parquet or .csv file, or a
        directory of such files (shards, read in name order).
    target: the target column (Parquet, CSV). features: feature columns (default: all others).
    shuffle_window: rows shuffled together (default: as many as fit in 64 MiB).
    prefetch: "auto", "thread", "process" or "none" (see data/stream.py); workers: pieces read
        at once.
    standardize: give the model a first layer standardising the features with statistics of the
        training rows (default: on for Parquet and CSV, off for .npy).
    block_rows: rows per piece of .npy shards (default: a sixteenth of the shuffle window).
    cache: a directory where Parquet and CSV rows are kept decoded after their first read, so
        that later epochs skip decoding (see formats/cache.py; .npy is read as is, uncached).
    require_target: False to read tables without their target column (prediction; y is 0).
    """
    path = Path(path)
    kind = detect_format(path)
    if kind == "npy" and (target is not None or features is not None):
        raise ConfigError(".npy data pairs x*.npy with y*.npy files; target and features name "
                          "columns of Parquet or CSV files: drop them")
    options = StreamOptions(shuffle_window, prefetch, workers,
                            kind in TABULAR if standardize is None else standardize).check()
    columns = list(features) if features is not None else None
    if kind == "parquet":
        table = ParquetTable(path, target, columns, target_optional=not require_target)
    elif kind == "csv":
        table = CsvTable(path, target, columns, target_optional=not require_target)
    else:
        return StreamSource(NpyTable(path, block_rows or _npy_block_rows(options)), options)
    return StreamSource(table if cache is None else CachedTable(table, cache), options)


def check_test_data(test: StreamSource, train: StreamSource) -> None:
    """Raise DataError if streamed test data does not fit the training data: other feature
    columns (by name, in order), another sample shape, or another number of targets per sample. Called
    at open, so that a mismatch is found before training rather than when evaluating after it."""
    test_table, train_table = test.table, train.table
    if train_table.feature_names is not None and test_table.feature_names != train_table.feature_names:
        missing = [name for name in train_table.feature_names if name not in test_table.feature_names]
        difference = (f"lacks {_names(missing)}" if missing else
                      f"has other feature columns ({_names(test_table.feature_names)})")
        raise DataError(f"test data {test_table.name} {difference}, unlike the training data's "
                        f"{_names(train_table.feature_names)}; give the test data the same columns, "
                        "or choose them in both with --features")
    if tuple(test_table.feature_shape) != tuple(train_table.feature_shape):
        raise DataError(f"test data {test_table.name} has samples of shape "
                        f"{tuple(test_table.feature_shape)}, the training data "
                        f"{tuple(train_table.feature_shape)}; save test samples shaped alike")
    if math.prod(test_table.target_shape) != math.prod(train_table.target_shape):
        raise DataError(f"test data {test_table.name} has targets of shape "
                        f"{tuple(test_table.target_shape)} per sample, the training data "
                        f"{tuple(train_table.target_shape)}; save test targets shaped alike")


def _names(names: list[str]) -> str:
    return ", ".join(repr(name) for name in names[:8]) + (" ..." if len(names) > 8 else "")


def from_batches(make_batches: Callable[[], Iterable], length: int | None = None, *,
                 shuffle_window: int | None = None, standardize: bool = False) -> IterableSource:
    """Stream (x, y) batches from your own reader: make_batches() returns a new iterable (e.g. a
    generator) of them each time it is called. length: rows per pass (default: counted once)."""
    if not callable(make_batches):
        raise ConfigError("make_batches must be a function returning an iterable of (x, y) "
                          "batches, e.g. lambda: read_batches(path)")
    return IterableSource(make_batches, length, StreamOptions(shuffle_window, "auto", 1,
                                                             standardize).check())


def detect_format(path: Path) -> str:
    """"npy", "parquet" or "csv" from a file's suffix or the files in a directory."""
    if path.is_dir():
        found = {FORMATS[entry.suffix] for entry in path.iterdir() if entry.suffix in FORMATS}
        if not found:
            raise DataError(f"directory {path} holds no .npy, .parquet or .csv files"
                            f"{' (it is empty)' if not any(path.iterdir()) else ''}; point at the "
                            "dataset's files")
        if len(found) > 1:
            raise DataError(f"directory {path} mixes {' and '.join(sorted(found))} files; keep "
                            "one format per dataset directory")
        return found.pop()
    if not path.exists():
        raise DataError(f"data path {path} not found; check the path")
    if path.suffix not in FORMATS:
        raise DataError(f"{path}: unknown data format {path.suffix!r}; use .npy, .parquet or .csv")
    return FORMATS[path.suffix]


def is_streamable(data: str) -> bool:
    """True if `data` (a CLI --data value) names a .npy/.parquet/.csv file or a directory."""
    path = Path(data)
    return path.is_dir() or path.suffix in FORMATS


def _npy_block_rows(options: StreamOptions) -> int | None:
    return max(options.window_rows // 16, 1) if options.window_rows else None

"""The protocol of a dataset on disk: a list of pieces (row ranges) that can be read independently.

A piece is the smallest unit a format reads well: a block of rows of a memory-mapped .npy shard, a
Parquet row group, a byte range of a CSV file. Streamed sources (data/stream.py) shuffle the order
of pieces, read them in a background pool and mix rows within a bounded window; formats only know
how to read one piece and how to name a row in error messages.
"""
from pathlib import Path
from typing import Protocol

import numpy as np

from batchtrain.errors import DataError

DEFAULT_WINDOW_BYTES = 64 << 20  # rows shuffled together by default: as many as fit in 64 MiB


def default_window_rows(feature_shape: tuple[int, ...]) -> int:
    """Rows of float32 features (and an 8-byte target) in DEFAULT_WINDOW_BYTES, at least 1."""
    row_bytes = 4 * int(np.prod(feature_shape)) + 8
    return max(DEFAULT_WINDOW_BYTES // row_bytes, 1)


class Table(Protocol):
    """A dataset on disk, as pieces. x: float32 (rows, *feature_shape); y: target_dtype (int64 or
    float32), (rows, *target_shape)."""

    name: str                          # the path, as error messages show it
    piece_rows: list[int]              # rows in each piece
    feature_shape: tuple[int, ...]
    feature_names: list[str] | None    # column names of tabular formats
    target_dtype: np.dtype
    target_shape: tuple[int, ...]

    def read_into(self, piece: int, first: int, end: int, x_out: np.ndarray, y_out: np.ndarray) -> None:
        """Rows [first, end) of a piece, checked, written into x_out and y_out (C-contiguous):
        streams read straight into their shuffle window, without an intermediate copy."""
    def read(self, piece: int) -> tuple[np.ndarray, np.ndarray]: ...        # (x, y) of a piece
    def read_targets(self, piece: int) -> np.ndarray: ...                   # y alone (cheaper)
    def where(self, piece: int) -> tuple[str, int]: ...  # (file name, its row where the piece starts)


def check_regular_file(path: Path) -> None:
    """Raise DataError if path exists but is no file or directory (a device, pipe or socket:
    reading one may never end)."""
    if path.exists() and not path.is_file() and not path.is_dir():
        raise DataError(f"{path} is not a regular file (a device, pipe or socket, or a link to "
                        "one); point at the data's files")


def read_rows(table: Table, piece: int) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) of a whole piece, in new arrays (Table.read through Table.read_into)."""
    rows = table.piece_rows[piece]
    x = np.empty((rows, *table.feature_shape), np.float32)
    y = np.empty((rows, *table.target_shape), table.target_dtype)
    table.read_into(piece, 0, rows, x, y)
    return x, y


def as_target_array(values: np.ndarray, where: tuple[str, int]) -> np.ndarray:
    """Targets as int64 (integers, booleans) or float32, checked for NaN and inf.

    where: (file, row of the file where `values` start), for error messages."""
    if values.dtype.kind in "iub":
        return as_int64(values, where)
    if values.dtype.kind != "f":
        raise DataError(f"{where[0]}: targets have dtype {values.dtype}, not numbers; "
                        "store numeric labels or values")
    values = values.astype(np.float32, copy=False)
    check_rows_finite(values, where, "a target")
    return values


def as_int64(values: np.ndarray, where: tuple[str, int], column: str | None = None) -> np.ndarray:
    """Integer (or boolean) targets as int64; uint64 values beyond int64's range are refused."""
    if values.dtype == np.uint64 and values.size:
        too_large = (values.reshape(len(values), -1) > np.iinfo(np.int64).max).any(axis=1)
        if too_large.any():
            row = int(np.argmax(too_large))
            named = f" in column {column!r}" if column else ""
            raise DataError(f"{where[0]} row {where[1] + row}: the target{named} is "
                            f"{int(values[row].max())}, beyond the int64 range batchtrain computes "
                            "in; relabel the classes as 0..K-1")
    return values.astype(np.int64, copy=False)


def as_feature_array(values: np.ndarray, where: tuple[str, int]) -> np.ndarray:
    """Features as float32 (uint8 pixels scaled to [0, 1]), checked for NaN and inf."""
    if values.dtype.kind not in "iubf":
        raise DataError(f"{where[0]}: features have dtype {values.dtype}, not numbers; "
                        "store numeric arrays")
    scaled = values.astype(np.float32) / 255.0 if values.dtype == np.uint8 else values
    features = np.asarray(scaled, dtype=np.float32)
    check_rows_finite(features, where, "a feature")
    return features


def check_rows_finite(values: np.ndarray, where: tuple[str, int], what: str,
                      columns: list[str] | None = None) -> None:
    """Raise DataError naming the file, row (and column, for tables) of the first NaN or inf."""
    if values.dtype.kind != "f" or _all_finite(values):
        return
    bad = ~np.isfinite(values.reshape(len(values), -1))
    row, column = (int(index[0]) for index in np.nonzero(bad))
    named = f" in column {columns[column]!r}" if columns else ""
    raise DataError(f"{where[0]} row {where[1] + row}: {what} is NaN or infinite{named} "
                    f"({int(bad.any(axis=1).sum())} such rows in this block); "
                    "remove or impute them before training")


def _all_finite(values: np.ndarray) -> bool:
    # isfinite over blocks of about a million values: the fastest check measured (0.014 us per
    # row of 64 float32, against 0.041 for a float64 sum), with a bounded temporary.
    step = max((1 << 20) // max(int(np.prod(values.shape[1:])), 1), 1)
    return all(np.isfinite(values[start:start + step]).all() for start in range(0, len(values), step))


def split_rows(total_rows: int, block_rows: int) -> list[tuple[int, int]]:
    """[start, stop) ranges of at most block_rows rows covering 0..total_rows."""
    return [(start, min(start + block_rows, total_rows)) for start in range(0, total_rows, block_rows)]

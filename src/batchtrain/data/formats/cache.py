"""A decoded copy of a Parquet or CSV table on local disk, so that only the first pass decodes.

Why: decoding is most of what streaming a table costs. Measured on 2 cores, 64 float32 columns:
Parquet 0.17-0.23 us a row to decode and 0.12-0.19 to turn columns into rows, CSV several times
more, against 0.06 us a row to read the same rows as raw float32 (.npy) and 1.2-1.4 us a row to
train the benchmark's MLP on them. Training for several epochs reads every row once per epoch;
with a cache each piece is decoded once (by the first epoch, or by the standardisation pass
before it) and read raw afterwards. Like tf.data's Dataset.cache(filename), or the Arrow files
that Hugging Face datasets keeps; it costs the disk space of the rows as float32.

Layout: <cache dir>/<fingerprint>/piece-<n>.bin holds a piece's rows as raw bytes, the features
(float32, rows x features) then the targets. The fingerprint covers the source files' paths,
sizes and modification times, the columns and the pieces, so an edited dataset gets a new
subdirectory and a stale copy is never read (delete old ones at will). Each piece file is
written to a temporary name and renamed: a crash leaves whole pieces or none. A piece file of
the wrong size counts as missing. If writing fails (disk full), training goes on uncached.
"""
import hashlib
import json
import os
import threading
import warnings
from pathlib import Path

import numpy as np

from batchtrain.data.formats.base import Table, read_rows
from batchtrain.errors import ConfigError

VERSION = 1  # of the layout: part of the fingerprint


class CachedTable:
    """`table` (Parquet or CSV) with its decoded pieces kept in `directory`."""

    def __init__(self, table: Table, directory: str | Path):
        self.table = table
        self.name, self.piece_rows = table.name, table.piece_rows
        self.feature_shape, self.feature_names = table.feature_shape, table.feature_names
        self.target_dtype, self.target_shape = table.target_dtype, table.target_shape
        self.directory = Path(directory) / fingerprint(table)
        self.writing = True  # False after a failed write: the rest of the run reads uncached
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise ConfigError(f"cannot create the cache directory {self.directory}: "
                              f"{error.strerror}; choose another with --cache") from None
        self.x_row_bytes = 4 * int(np.prod(self.feature_shape))
        self.y_row_bytes = self.target_dtype.itemsize * int(np.prod(self.target_shape))

    def read_into(self, piece: int, first: int, end: int, x_out: np.ndarray, y_out: np.ndarray) -> None:
        targets_at = self.piece_rows[piece] * self.x_row_bytes  # features first, then targets
        if self._read_cached(piece, [(first * self.x_row_bytes, x_out),
                                     (targets_at + first * self.y_row_bytes, y_out)]):
            return
        rows = self.piece_rows[piece]
        if first == 0 and end == rows:
            self.table.read_into(piece, 0, rows, x_out, y_out)
            self._write(piece, x_out, y_out)
        else:  # part of a piece (a hold-out boundary): decode it whole, keep it, copy the part
            x, y = self.table.read(piece)
            self._write(piece, x, y)
            x_out[...], y_out[...] = x[first:end], y[first:end]

    def read(self, piece: int) -> tuple[np.ndarray, np.ndarray]:
        return read_rows(self, piece)

    def read_targets(self, piece: int) -> np.ndarray:
        y = np.empty((self.piece_rows[piece], *self.target_shape), self.target_dtype)
        if self._read_cached(piece, [(self.piece_rows[piece] * self.x_row_bytes, y)]):
            return y
        return self.table.read_targets(piece)

    def where(self, piece: int) -> tuple[str, int]:
        return self.table.where(piece)

    # -- helpers --------------------------------------------------------------------------------

    def _path(self, piece: int) -> Path:
        return self.directory / f"piece-{piece:06d}.bin"

    def _read_cached(self, piece: int, spans: list[tuple[int, np.ndarray]]) -> bool:
        """Fill each (byte offset, array) from the piece's file; False if the file is missing or
        not whole (then nothing may be trusted)."""
        path = self._path(piece)
        whole = self.piece_rows[piece] * (self.x_row_bytes + self.y_row_bytes)
        try:
            if path.stat().st_size != whole:
                return False
        except OSError:
            return False
        with open(path, "rb") as file:
            for offset, out in spans:
                file.seek(offset)
                if file.readinto(memoryview(out).cast("B")) != out.nbytes:
                    return False
        return True

    def _write(self, piece: int, x: np.ndarray, y: np.ndarray) -> None:
        if not self.writing:
            return
        path = self._path(piece)
        temporary = path.with_name(f"{path.name}.{os.getpid()}-{threading.get_ident()}.tmp")
        try:
            with open(temporary, "wb") as file:
                file.write(memoryview(np.ascontiguousarray(x)).cast("B"))
                file.write(memoryview(np.ascontiguousarray(y)).cast("B"))
            os.replace(temporary, path)
        except OSError as error:
            self.writing = False
            temporary.unlink(missing_ok=True)
            warnings.warn(f"cannot write the data cache in {self.directory} ({error.strerror}); "
                          "training goes on, decoding the data every epoch", RuntimeWarning,
                          stacklevel=2)


def fingerprint(table: Table) -> str:
    """A short hash of what the decoded rows depend on: files, columns, dtypes, pieces."""
    files = [(str(Path(file).resolve()), stat.st_size, stat.st_mtime_ns)
             for file, stat in ((file, Path(file).stat()) for file in table.files)]
    described = {"version": VERSION, "format": type(table).__name__, "files": files,
                 "features": table.feature_names, "target": getattr(table, "target", None),
                 "feature_shape": list(table.feature_shape), "target_dtype": str(table.target_dtype),
                 "target_shape": list(table.target_shape), "pieces": list(table.piece_rows)}
    return hashlib.sha256(json.dumps(described).encode()).hexdigest()[:16]

"""Parquet files and directories of them, read row group by row group, only the needed columns."""
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from batchtrain.data.formats.base import check_regular_file, read_rows
from batchtrain.data.formats.columns import (check_unique_columns, choose_columns, table_into,
                                             target_dtype, target_values)
from batchtrain.errors import DataError


class ParquetTable:
    """Row groups of one or more Parquet files (a directory is read in file-name order)."""

    def __init__(self, path: str | Path, target: str | None, features: list[str] | None = None,
                 target_optional: bool = False):
        self.name = str(path)
        self.files = list_files(Path(path), ".parquet")
        self.metadata = metadata = [_metadata(file) for file in self.files]
        self.feature_names, self.target = choose_columns(
            metadata[0].schema.to_arrow_schema(), self.files[0].name, target, features, target_optional)
        self.columns = [*self.feature_names, *([self.target] if self.target else [])]
        for file, meta in zip(self.files[1:], metadata[1:]):
            self._check_same_columns(file, meta.schema.to_arrow_schema(), metadata[0])
        self.groups = []  # (file index, row group, the file's row where it starts, rows)
        for index, meta in enumerate(metadata):
            starts = np.cumsum([0] + [meta.row_group(group).num_rows for group in range(meta.num_row_groups)])
            self.groups += [(index, group, int(starts[group]), int(starts[group + 1] - starts[group]))
                            for group in range(meta.num_row_groups) if starts[group + 1] > starts[group]]
        if not self.groups:
            raise DataError(f"{self.name} holds no rows")
        self.piece_rows = [rows for *_, rows in self.groups]
        self.feature_shape = (len(self.feature_names),)
        self.target_dtype = target_dtype(metadata[0].schema.to_arrow_schema(), self.target)
        self.target_shape = ()

    def read(self, piece: int) -> tuple[np.ndarray, np.ndarray]:
        return read_rows(self, piece)

    def read_into(self, piece: int, first: int, end: int, x_out: np.ndarray, y_out: np.ndarray) -> None:
        table_into(self._read_group(piece, self.columns), self.feature_names, self.target,
                   self.where(piece), first, end, x_out, y_out)

    def read_targets(self, piece: int) -> np.ndarray:
        return target_values(self._read_group(piece, [self.target]), self.target, self.where(piece))

    def where(self, piece: int) -> tuple[str, int]:
        file_index, _, start, _ = self.groups[piece]
        return self.files[file_index].name, start

    def _read_group(self, piece: int, columns: list[str]) -> pa.Table:
        # Plain reads, not memory_map=True: mapped pages would count in the resident set until
        # the file is closed (see formats/npy.py), growing RSS towards the dataset's size.
        # A file is opened per read, from the footer parsed at start: an open ParquetFile keeps
        # about a row group's buffers allocated (measured: +24 MiB per file left open), which
        # for a directory of hundreds of files grew the resident set by gigabytes.
        # Columns are decoded in parallel by pyarrow's pool (worker processes limit it to one
        # thread): 0.33 -> 0.25 us/row for 64 float32 columns on 2 cores.
        file_index, group, _, _ = self.groups[piece]
        try:
            with pq.ParquetFile(self.files[file_index], metadata=self.metadata[file_index]) as handle:
                return handle.read_row_group(group, columns=columns, use_threads=True)
        except (OSError, pa.ArrowException) as error:
            raise DataError(f"cannot read row group {group} of {self.files[file_index]}: "
                            f"{str(error).splitlines()[0]}; the file may be damaged") from None

    def _check_same_columns(self, file: Path, schema: pa.Schema, first: pq.FileMetaData) -> None:
        first_schema = first.schema.to_arrow_schema()
        check_unique_columns(list(schema.names), file.name)
        for column in self.columns:
            if column not in schema.names:
                raise DataError(f"column {column!r} of {self.files[0].name} is missing from "
                                f"{file.name}; every file of the dataset needs the same columns")
            if schema.field(column).type != first_schema.field(column).type:
                raise DataError(f"column {column!r} is {schema.field(column).type} in {file.name} "
                                f"but {first_schema.field(column).type} in {self.files[0].name}; "
                                "write every file with the same column types")


def list_files(path: Path, suffix: str) -> list[Path]:
    """The file at `path`, or the files ending in `suffix` in the directory `path`, sorted."""
    if path.is_file():
        return [path]
    check_regular_file(path)
    if not path.exists():
        raise DataError(f"data path {path} not found; check the path")
    files = sorted(file for file in path.iterdir() if file.suffix == suffix and file.is_file())
    if not files:
        raise DataError(f"directory {path} holds no {suffix} files; point --data at the dataset's "
                        "files or directory")
    return files


def _metadata(file: Path) -> pq.FileMetaData:
    try:
        return pq.read_metadata(file)
    except (OSError, pa.ArrowException) as error:
        raise DataError(f"cannot read {file} as Parquet: {str(error).splitlines()[0]}; the file "
                        "is truncated or not Parquet") from None

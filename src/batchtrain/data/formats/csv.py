"""CSV files and directories of them, read with pyarrow's streaming CSV reader.

A file is cut into pieces of about piece_bytes at line ends (found by seeking, without reading
the file), so pieces can be read in any order like Parquet row groups. Opening counts the lines
of each piece in one pass over the bytes. Line breaks inside quoted values are not supported
(as with pyarrow's default newlines_in_values=False): numeric tables do not need them.
"""
import csv as stdlib_csv
import io
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from batchtrain.data.formats.base import read_rows
from batchtrain.data.formats.columns import choose_columns, table_into, target_dtype, target_values
from batchtrain.data.formats.parquet import list_files
from batchtrain.errors import DataError

INFER_BYTES = 1 << 20  # column types are inferred from the first MiB of the first file
MAX_ROW_BYTES = 64 << 20  # a longer first row (or header) is refused rather than read whole


class CsvTable:
    """Byte ranges of one or more CSV files with a header line (a directory in file-name order)."""

    def __init__(self, path: str | Path, target: str | None, features: list[str] | None = None,
                 target_optional: bool = False,
                 piece_bytes: int = 4 << 20):
        self.name = str(path)
        self.files = list_files(Path(path), ".csv")
        self.header, schema, head = _header_and_schema(self.files[0])
        try:
            self.feature_names, self.target = choose_columns(schema, self.files[0].name, target,
                                                              features, target_optional)
        except DataError as error:  # a text column: name its first row that is not a number
            column = next((name for name in schema.names if f"column {name!r}" in str(error)), None)
            if column is None or pa.types.is_null(schema.field(column).type):
                raise
            raise _located_error(head, self.header, [column], (self.files[0].name, 0), error) from None
        self.column_types = {name: pa.float32() for name in self.feature_names}
        self.columns = [*self.feature_names, *([self.target] if self.target else [])]
        if self.target is not None:
            self.column_types[self.target] = schema.field(self.target).type
        self.ranges = []  # (file index, first byte, end byte, the file's row where it starts, rows)
        for index, file in enumerate(self.files):
            self.ranges += _ranges(file, index, self.header, piece_bytes)
        if not self.ranges:
            raise DataError(f"{self.name} holds a header but no rows")
        self.piece_rows = [rows for *_, rows in self.ranges]
        self.feature_shape = (len(self.feature_names),)
        self.target_dtype = target_dtype(schema, self.target)
        self.target_shape = ()

    def read(self, piece: int) -> tuple[np.ndarray, np.ndarray]:
        return read_rows(self, piece)

    def read_into(self, piece: int, first: int, end: int, x_out: np.ndarray, y_out: np.ndarray) -> None:
        table_into(self._parse(piece, self.columns), self.feature_names, self.target,
                   self.where(piece), first, end, x_out, y_out)

    def read_targets(self, piece: int) -> np.ndarray:
        return target_values(self._parse(piece, [self.target]), self.target, self.where(piece))

    def where(self, piece: int) -> tuple[str, int]:
        file_index, _, _, first_row, _ = self.ranges[piece]
        return self.files[file_index].name, first_row

    def _parse(self, piece: int, columns: list[str]) -> pa.Table:
        file_index, begin, end, first_row, rows = self.ranges[piece]
        with open(self.files[file_index], "rb") as handle:
            handle.seek(begin)
            data = handle.read(end - begin)
        options = pacsv.ReadOptions(column_names=self.header, block_size=max(len(data), 1 << 16))
        convert = pacsv.ConvertOptions(include_columns=columns,
                                       column_types={name: self.column_types[name] for name in columns})
        try:
            table = pacsv.open_csv(pa.BufferReader(arrow_owned(data)), read_options=options,
                                   convert_options=convert).read_all()
        except pa.ArrowInvalid as error:
            raise _located_error(data, self.header, columns, self.where(piece), error) from None
        if table.num_rows != rows:
            row = _quoted_line_break(data)
            if row is not None:
                raise _line_break_error(self.where(piece), row)
            raise DataError(f"{self.files[file_index].name} rows {first_row}-{first_row + rows}: read "
                            f"{table.num_rows} rows where {rows} lines were counted; blank lines "
                            "and line breaks inside quoted values are not supported")
        return table


def arrow_owned(data: bytes) -> pa.Buffer:
    """A copy of `data` in memory that pyarrow allocated (0.6 ms for a 4 MiB piece).

    Why: pyarrow's CSV reader reads ahead on its own thread pools, and those tasks keep the
    buffer they read from for as long as they live, after open_csv() has returned or raised.
    Bytes from Python wrapped as they are (pa.BufferReader(bytes)) make that buffer an
    arrow::py::PyBuffer, whose destructor takes the GIL. When the last task drops it while the
    interpreter is finalizing, CPython ends the calling thread (pthread_exit in take_gil), the
    unwind runs into the noexcept destructor, and std::terminate aborts the process:
    "terminate called without an active exception", exit 134, after the error message (or the
    run) was complete. Core dump of `batchtrain fit` on a ';'-separated CSV under two busy
    loops: an arrow ThreadPool worker in ~PyBuffer -> PyGILState_Ensure -> take_gil ->
    PyThread_exit_thread -> std::terminate while the main thread was in Py_FinalizeEx. The
    pools are pyarrow's, process-wide, and cannot be joined; memory pyarrow owns is released
    without the GIL, from any thread, at any time.
    """
    buffer = pa.allocate_buffer(len(data))
    memoryview(buffer).cast("B")[:] = data
    return buffer


def _header_and_schema(file: Path) -> tuple[list[str], pa.Schema, bytes]:
    """The header, the column types pyarrow infers from the first MiB, and that MiB's rows."""
    with open(file, "rb") as handle:
        head, whole_file = _read_head(handle, file)
    if not head.strip():
        raise DataError(f"{file} is empty; a CSV file needs a header line and rows")
    cut = len(head) if whole_file else head.rfind(b"\n") + 1
    header_line, _, rows = head[:cut].partition(b"\n")
    header = [name.strip().strip('"') for name in _header_text(header_line, file).split(",")]
    if not rows.strip():
        raise DataError(f"{file} holds a header but no rows")
    try:
        schema = pacsv.open_csv(pa.BufferReader(arrow_owned(head[:cut])),
                                read_options=pacsv.ReadOptions(block_size=max(cut, 1 << 16))).schema
    except pa.ArrowInvalid as error:
        raise _located_error(rows, header, header, (file.name, 0), error) from None
    return list(schema.names), schema, rows


def _read_head(handle, file: Path) -> tuple[bytes, bool]:
    """The first INFER_BYTES of a file, or up to the end of its first row when the header and
    that row are longer (at most MAX_ROW_BYTES); and whether that is the whole file."""
    chunks = [handle.read(INFER_BYTES)]
    line_ends = chunks[0].count(b"\n")
    while line_ends < 2 and len(chunks) * INFER_BYTES < MAX_ROW_BYTES:
        chunk = handle.read(INFER_BYTES)
        if not chunk:
            break
        chunks.append(chunk)
        line_ends += chunk.count(b"\n")
    whole_file = handle.tell() >= os.fstat(handle.fileno()).st_size
    if line_ends < 2 and not whole_file:
        raise DataError(f"{file}: no header line and row within its first {MAX_ROW_BYTES >> 20} "
                        "MiB; rows must be shorter than that: check that the file is CSV, one row "
                        "per line")
    return b"".join(chunks), whole_file


def _ranges(file: Path, index: int, header: list[str], piece_bytes: int) -> list[tuple]:
    """Pieces of a file: byte ranges ending at line ends, with the rows each holds."""
    size = file.stat().st_size
    ranges, first_row = [], 0
    with open(file, "rb") as handle:
        file_header = _header_text(handle.readline(), file)
        if [name.strip('"') for name in file_header.split(",")] != header:
            raise DataError(f"{file.name} has the header {file_header[:200]!r}, unlike the first "
                            f"file's {','.join(header)[:200]!r}; every file needs the same columns")
        begin = handle.tell()
        while begin < size:
            handle.seek(min(begin + piece_bytes, size))
            handle.readline()  # to the end of the line the cut fell in
            end = min(handle.tell(), size)
            handle.seek(begin)
            rows = _count_lines(handle.read(end - begin))
            if rows:
                ranges.append((index, begin, end, first_row, rows))
            first_row, begin = first_row + rows, end
    return ranges


def _header_text(line: bytes, file: Path) -> str:
    """A header line as text: UTF-8, a byte-order mark (as Excel writes) dropped."""
    try:
        return line.decode("utf-8-sig").rstrip("\r\n")
    except UnicodeDecodeError as error:
        raise DataError(f"{file}: the header is not UTF-8 text (byte {line[error.start]:#04x} at "
                        f"position {error.start}); save the file as UTF-8") from None


def _quoted_line_break(data: bytes) -> int | None:
    """The first row (of the lines in data) with a line break inside a quoted value, if any."""
    if b'"' not in data:
        return None
    text = io.StringIO(data.decode(errors="replace"), newline="")
    return next((row for row, fields in enumerate(stdlib_csv.reader(text))
                 if any("\n" in field or "\r" in field for field in fields)), None)


def _line_break_error(where: tuple[str, int], row: int) -> DataError:
    return DataError(f"{where[0]} row {where[1] + row}: a quoted value holds a line break, which "
                     "batchtrain's CSV reader does not support (it cuts files into pieces at line "
                     "ends); remove the line breaks inside quoted values, or convert the file to "
                     "Parquet")


def _count_lines(data: bytes) -> int:
    return data.count(b"\n") + (1 if data and not data.endswith(b"\n") else 0)


def _located_error(data: bytes, header: list[str], columns: list[str], where: tuple[str, int],
                   error: Exception) -> DataError:
    """Find the row pyarrow refused (it does not say which) and name it, with the column."""
    row = _quoted_line_break(data)
    if row is not None:
        return _line_break_error(where, row)
    wanted = [header.index(name) for name in columns]
    text = io.StringIO(data.decode(errors="replace"))
    for row, fields in enumerate(stdlib_csv.reader(text)):
        if len(fields) != len(header):
            return DataError(f"{where[0]} row {where[1] + row}: {len(fields)} fields where the "
                             f"header has {len(header)}; the file is ragged or truncated")
        for column in wanted:
            value = fields[column].strip()
            try:
                float(value) if value else None
            except ValueError:
                if "\ufffd" in value:  # bytes decoding replaced: the file is in another encoding
                    return DataError(f"{where[0]} row {where[1] + row}: column {header[column]!r} "
                                     "holds bytes that are not UTF-8 text; save the file as UTF-8")
                return DataError(f"{where[0]} row {where[1] + row}: column {header[column]!r} holds "
                                 f"{value[:40]!r}, not a number; fix the value or drop the column")
    return DataError(f"cannot parse {where[0]} near row {where[1]}: {str(error).splitlines()[0]}")

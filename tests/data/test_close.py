"""Nothing native outlives a read: exit after a data error is clean, readers are gone after it.

The abort this guards against (issue 14 §2): pyarrow's read-ahead tasks dropped a buffer that
wrapped Python bytes while the interpreter was finalizing; its destructor's GIL request ended the
thread inside a noexcept destructor, and std::terminate aborted the process (exit 134) after
the error message. See arrow_owned in data/formats/csv.py.
"""
import gc
import multiprocessing
import os
import subprocess
import sys
import threading

import pyarrow as pa
import pytest

from batchtrain.data import open_dataset
from batchtrain.data.formats.csv import CsvTable, arrow_owned
from batchtrain.data.iterator import BatchIterator
from batchtrain.errors import DataError

ROWS = 150_000  # 1.4 MB: a bad value near the end is past the first MiB, found when read


def write_csv(path, bad_row: int | None = None, separator: str = ",", rows: int = ROWS) -> str:
    """label = row % 2 in `rows` rows of 2 features; `bad_row` holds text in feature b (past
    the first MiB, where column types are inferred, it is found when its piece is read)."""
    lines = [separator.join(["a", "b", "label"])]
    lines += [separator.join([f"{row % 1000}", "oops" if row == bad_row else f"{row % 7}",
                              str(row % 2)]) for row in range(rows)]
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def read_everything(source) -> None:
    for _ in BatchIterator(source, 32, False).epoch(0):
        pass


def reader_threads() -> list[str]:
    return [thread.name for thread in threading.enumerate() if thread.name.startswith("batchtrain-read")]


def test_pyarrow_is_handed_only_buffers_it_allocated(tmp_path, monkeypatch):
    """Python bytes given to pyarrow become a buffer whose release takes the GIL, fatal in a
    read-ahead task that outlives the interpreter; arrow_owned's copies are pyarrow's own."""
    handed = []
    buffer_reader = pa.BufferReader
    monkeypatch.setattr(pa, "BufferReader", lambda source: handed.append(source) or buffer_reader(source))
    read_everything(open_dataset(write_csv(tmp_path / "d.csv", rows=300), "label", standardize=False,
                                 prefetch="none"))
    assert handed and all(isinstance(source, pa.Buffer) for source in handed), \
        [type(source).__name__ for source in handed]

    data = b"a,b\n1,2\n" * 1000
    allocated_before = pa.total_allocated_bytes()
    buffer = arrow_owned(data)
    assert pa.total_allocated_bytes() - allocated_before >= len(data)  # from pyarrow's pool
    assert buffer.to_pybytes() == data
    assert arrow_owned(b"").size == 0


@pytest.mark.parametrize("prefetch", ["thread", "process"])
def test_a_read_error_leaves_no_reader_thread_or_process(tmp_path, prefetch):
    source = open_dataset(write_csv(tmp_path / "d.csv", bad_row=ROWS - 3), "label",
                          standardize=False, prefetch=prefetch, shuffle_window=4096)
    assert isinstance(source.table, CsvTable)
    with pytest.raises(DataError, match=rf"row {ROWS - 3}: column 'b' holds 'oops'"):
        read_everything(source)
    assert reader_threads() == []
    del source  # worker processes live as long as their source (kept across epochs)
    gc.collect()
    assert multiprocessing.active_children() == []


@pytest.mark.parametrize("kind, prefetch", [("separator", "none"), ("bad-value", "thread"),
                                            ("bad-value", "process")])
def test_a_csv_error_exits_2_with_one_line_and_no_abort(tmp_path, kind, prefetch):
    """The whole command, in a fresh process: the abort happened during its finalization."""
    data = write_csv(tmp_path / "d.csv", separator=";", rows=300) if kind == "separator" else \
        write_csv(tmp_path / "d.csv", bad_row=ROWS - 3)
    command = [sys.executable, "-m", "batchtrain", "fit", "--data", data, "--target", "label",
               "--model", "mlp", "--threads", "1", "--epochs", "1", "--prefetch", prefetch,
               "--shuffle-window", "4096", "--output", str(tmp_path / "run")]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300,
                            env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert result.returncode == 2, result.stderr[-2000:]
    assert len(result.stderr.splitlines()) == 1 and "d.csv" in result.stderr, result.stderr[-2000:]


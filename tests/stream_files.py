"""Writers of small on-disk datasets in every streamed layout, for the streaming tests.

Rows are numbered: feature 0 and the target of row i are both i, so a test can tell which rows
a batch holds and that x and y stayed paired."""
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

LAYOUTS = ("npy", "npy-shards", "parquet", "parquet-dir", "csv", "csv-dir")


def numbered(rows: int, features: int = 3, first: int = 0) -> tuple[np.ndarray, np.ndarray]:
    x = np.random.default_rng(first).normal(size=(rows, features)).astype(np.float32)
    x[:, 0] = np.arange(first, first + rows)
    return x, np.arange(first, first + rows, dtype=np.int64)


def as_table(x: np.ndarray, y: np.ndarray) -> pa.Table:
    return pa.table({**{f"f{i}": x[:, i] for i in range(x.shape[1])}, "label": y})


def write_layout(directory: Path, layout: str, rows: int = 1000) -> Path:
    """Write `rows` numbered rows in `layout`; returns the path to open (target column "label")."""
    directory.mkdir(parents=True, exist_ok=True)
    shard_rows = [rows // 3, rows // 3 + 7, rows - 2 * (rows // 3) - 7]  # uneven shards
    starts = np.cumsum([0] + shard_rows)
    if layout == "npy":
        x, y = numbered(rows)
        np.save(directory / "x.npy", x)
        np.save(directory / "y.npy", y)
        return directory / "x.npy"
    if layout == "npy-shards":
        for index, (start, count) in enumerate(zip(starts, shard_rows)):
            x, y = numbered(count, first=int(start))
            np.save(directory / f"x-{index:05d}.npy", x)
            np.save(directory / f"y-{index:05d}.npy", y)
        return directory
    if layout == "parquet":
        pq.write_table(as_table(*numbered(rows)), directory / "data.parquet", row_group_size=97)
        return directory / "data.parquet"
    if layout == "parquet-dir":
        for index, (start, count) in enumerate(zip(starts, shard_rows)):
            pq.write_table(as_table(*numbered(count, first=int(start))),
                           directory / f"part-{index}.parquet", row_group_size=50)
        return directory
    if layout == "csv":
        pacsv.write_csv(as_table(*numbered(rows)), directory / "data.csv")
        return directory / "data.csv"
    if layout == "csv-dir":
        for index, (start, count) in enumerate(zip(starts, shard_rows)):
            pacsv.write_csv(as_table(*numbered(count, first=int(start))), directory / f"part-{index}.csv")
        return directory
    raise ValueError(layout)

"""Bounded memory: streaming a dataset many times larger than the shuffle window keeps peak RSS
within a few windows (measured in a subprocess, so the test process's own heap does not count)."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

WORKER = Path(__file__).with_name("stream_rss_worker.py")
ROWS, FEATURES = 600_000, 64            # 154 MB of float32 features
WINDOW_ROWS = 20_000                    # 5 MB window: the data is 30 windows
MiB = 1 << 20


def write_npy(directory: Path) -> Path:
    for shard in range(3):
        rng = np.random.default_rng(shard)
        np.save(directory / f"x-{shard}.npy", rng.random((ROWS // 3, FEATURES), dtype=np.float32))
        np.save(directory / f"y-{shard}.npy", rng.integers(0, 10, ROWS // 3))
    return directory


def write_parquet(directory: Path) -> Path:
    """60 files: a reader that kept each file open would hold a row group per file (2.6 MB)."""
    rng = np.random.default_rng(0)
    for shard in range(60):
        x = rng.random((ROWS // 60, FEATURES), dtype=np.float32)
        columns = {f"f{index}": x[:, index] for index in range(FEATURES)}
        pq.write_table(pa.table({**columns, "label": rng.integers(0, 10, ROWS // 60)}),
                       directory / f"part-{shard:02d}.parquet", row_group_size=ROWS // 60)
    return directory


@pytest.mark.parametrize("write, target", [(write_npy, "-"), (write_parquet, "label")],
                         ids=["npy", "parquet"])
def test_peak_memory_stays_bounded_while_streaming(tmp_path, write, target):
    path = write(tmp_path)
    data_bytes = sum(file.stat().st_size for file in tmp_path.iterdir())
    result = subprocess.run([sys.executable, str(WORKER), str(path), target, str(WINDOW_ROWS)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    rows, growth = (int(value) for value in result.stdout.split())
    assert rows == ROWS
    window_bytes = WINDOW_ROWS * (FEATURES * 4 + 8)
    # current + next window, pieces being joined and decoded, allocator slack: < 8 windows
    assert growth < 8 * window_bytes, f"peak RSS grew {growth / MiB:.0f} MiB"
    assert growth < data_bytes / 3

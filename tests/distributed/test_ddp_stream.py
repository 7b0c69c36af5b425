"""Streamed data under DistributedDataParallel: 2 gloo ranks cover every training row exactly
once per epoch, and train like one process with the whole batch."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from stream_files import write_layout

HERE = Path(__file__).parent
WORKER = HERE / "ddp_stream_worker.py"


def run(command: list[str]) -> None:
    environment = dict(os.environ, OMP_NUM_THREADS="1",
                       PYTHONPATH=os.pathsep.join([str(HERE), str(HERE.parent)]))
    result = subprocess.run(command, capture_output=True, text=True, env=environment, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.mark.slow
def test_two_ranks_cover_streamed_rows_exactly_once_and_match_one_process(tmp_path):
    data = write_layout(tmp_path / "data", "parquet-dir", rows=1000)
    run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
         str(WORKER), str(data), str(tmp_path)])
    run([sys.executable, str(WORKER), str(data), str(tmp_path)])
    ranks = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    single = json.loads((tmp_path / "ranksingle.json").read_text())
    for epoch in range(2):
        rows = [rank["seen"][epoch] for rank in ranks]
        assert not set(rows[0]) & set(rows[1])  # no row on both ranks
        assert sorted(rows[0] + rows[1]) == list(range(800))  # every training row, once
        assert sorted(single["seen"][epoch]) == list(range(800))
    for ours, theirs in zip(torch.load(tmp_path / "params-0.pt"), torch.load(tmp_path / "params-single.pt")):
        torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-5)  # all-reduce sums in another order
    for rank in ranks:  # validation rows are never trained on, and metrics are exact
        for distributed, alone in zip(rank["history"], single["history"]):
            assert distributed["val_accuracy"] == alone["val_accuracy"]

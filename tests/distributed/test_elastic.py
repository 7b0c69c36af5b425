"""Elastic restarts: torchrun --max-restarts with 2 gloo processes on the CPU, a worker killed."""
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent


def environment(**extra) -> dict:
    """Workers import their scripts from here; one thread each on this 2-core machine."""
    python_path = os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")]))
    return dict(os.environ, PYTHONPATH=python_path, OMP_NUM_THREADS="1", **extra)


def run_job(command: list[str], env: dict, timeout_s: float) -> subprocess.CompletedProcess:
    """Run a torchrun job to its end; fail if it hangs. torchrun starts each worker in a session of
    its own: killing torchrun would orphan them, so it gets SIGTERM and stops them itself."""
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          env=env, start_new_session=True) as job:
        try:
            out, err = job.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(job.pid, signal.SIGTERM)  # the launcher and torchrun
            _, err = job.communicate(timeout=60)
            pytest.fail(f"{command[2:5]}... still running after {timeout_s} s:\n{err[-3000:]}")
    return subprocess.CompletedProcess(command, job.returncode, out, err)


@pytest.mark.slow
def test_restarted_ranks_meet_in_a_fresh_store_when_one_comes_late(tmp_path):
    # The dead attempt's gloo addresses stay in torchrun's store; without a namespace per attempt
    # rank 1 reads rank 0's stale one while rank 0 is late, and init_process_group fails or hangs.
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
               "--max-restarts=1", str(HERE / "rejoin_worker.py"), str(tmp_path), "2"]
    result = run_job(command, environment(), timeout_s=90)
    assert result.returncode == 0, result.stderr[-3000:]
    assert [(tmp_path / f"rank{rank}.ok").read_text() for rank in (0, 1)] == ["1", "1"]

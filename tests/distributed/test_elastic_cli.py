"""Elastic restarts, driven directly: the store namespace per attempt, and `batchtrain fit` in a
restart (torchrun's environment set by hand, one process). tests/distributed/test_elastic.py
kills real workers under torchrun."""
import json
import shutil
import subprocess
from datetime import timedelta

import pytest
import torch.distributed as dist

from batchtrain.cli import app as cli
from batchtrain.distributed.elastic import attempt_store
from helpers import run_cli, write_blobs

pytestmark = pytest.mark.usefixtures("single_thread")


def torchrun_environment(monkeypatch, attempt: int, run_id: str = "job-1", **extra) -> None:
    """What torchrun --max-restarts 1 tells a worker in attempt `attempt` (0: the first)."""
    variables = {"TORCHELASTIC_RESTART_COUNT": attempt, "TORCHELASTIC_MAX_RESTARTS": 1,
                 "TORCHELASTIC_RUN_ID": run_id, **extra}
    for name, value in variables.items():
        monkeypatch.setenv(name, str(value))


def test_each_attempt_sees_none_of_the_previous_attempts_keys(monkeypatch):
    agent_store = dist.TCPStore("127.0.0.1", 0, is_master=True, timeout=timedelta(seconds=10))
    torchrun_environment(monkeypatch, 0, TORCHELASTIC_USE_AGENT_STORE=True, GROUP_WORLD_SIZE=1,
                         MASTER_ADDR="127.0.0.1", MASTER_PORT=agent_store.port)
    attempt_store().set("default_pg/0//cpu//0/1", "a dead worker's address")
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "1")
    assert not attempt_store().check(["default_pg/0//cpu//0/1"])
    assert agent_store.num_keys() >= 1  # the key is there, in the first attempt's namespace


def test_torchs_own_store_where_it_is_not_shared_or_spans_machines(monkeypatch):
    torchrun_environment(monkeypatch, 0, RANK=0)
    assert attempt_store() is None  # TORCHELASTIC_USE_AGENT_STORE unset: no shared store
    monkeypatch.setenv("TORCHELASTIC_USE_AGENT_STORE", "True")
    monkeypatch.setenv("GROUP_WORLD_SIZE", "2")  # restart counts differ between machines
    with pytest.warns(UserWarning, match="TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1"):
        assert attempt_store() is None


@pytest.fixture
def first_attempt(tmp_path, monkeypatch, capsys):
    """A finished first attempt of a 2-epoch run: (the fit's argv, run dir, a copy of it)."""
    run_dir = tmp_path / "run"
    argv = ["fit", "--data", write_blobs(tmp_path / "blobs.npz"), "--model", "mlp", "--hidden", "8",
            "--epochs", "2", "--batch-size", "50", "--progress", "none", "--output", run_dir]
    torchrun_environment(monkeypatch, 0)
    code, _, err = run_cli(capsys, *argv)  # no --seed: a restart must reuse the drawn one
    assert code == 0, err
    shutil.copytree(run_dir, tmp_path / "finished")
    return argv, run_dir, tmp_path / "finished"


def fit_records(run_dir) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [record for record in map(json.loads, lines) if record["type"] == "fit"]


def test_a_restart_continues_its_run_from_the_newest_checkpoint(first_attempt, monkeypatch, capsys):
    argv, run_dir, finished = first_attempt
    for path in sorted((run_dir / "checkpoints").glob("ckpt-*"))[-2:]:  # died in epoch 2
        path.unlink()
    torchrun_environment(monkeypatch, 1)
    code, out, err = run_cli(capsys, *argv)
    assert code == 0, err
    assert f"torchrun job job-1 restarted: continuing {run_dir} from its newest checkpoint" in out
    assert fit_records(run_dir)[-1]["step"] == 8  # epoch 1's end: 400 samples in batches of 50
    assert (run_dir / "config.yaml").read_text() == (finished / "config.yaml").read_text()
    assert (run_dir / "model.safetensors").read_bytes() == (finished / "model.safetensors").read_bytes()


def test_a_restart_with_no_checkpoint_starts_the_run_again(first_attempt, monkeypatch, capsys):
    argv, run_dir, finished = first_attempt
    shutil.rmtree(run_dir / "checkpoints")  # died before the first one
    (run_dir / "model.safetensors").unlink()
    torchrun_environment(monkeypatch, 1)
    code, out, err = run_cli(capsys, *argv)
    assert code == 0, err
    assert f"torchrun job job-1 restarted: no checkpoint in {run_dir} yet, starting it again" in out
    assert len(fit_records(run_dir)) == 1  # the first attempt's records were replaced
    assert (run_dir / "model.safetensors").read_bytes() == (finished / "model.safetensors").read_bytes()


@pytest.mark.parametrize("attempt, run_id", [(1, "job-2"), (0, "none")])
def test_a_restart_leaves_a_run_its_job_did_not_begin_alone(first_attempt, monkeypatch, capsys,
                                                            attempt, run_id):
    argv, run_dir, _ = first_attempt
    (run_dir / "torchelastic.json").write_text(json.dumps({"run_id": "none"}))
    # another job (job-2, or torchrun's default id none in a first attempt), same --output
    torchrun_environment(monkeypatch, attempt, run_id=run_id)
    code, _, err = run_cli(capsys, *argv)
    assert code == 2 and f"{run_dir} already holds a run" in err


def test_a_restart_counted_on_another_machine_continues_too(first_attempt, monkeypatch, capsys):
    argv, run_dir, _ = first_attempt
    torchrun_environment(monkeypatch, 0)  # rank 0's machine restarts its worker uncounted
    code, out, err = run_cli(capsys, *argv)
    assert code == 0 and "torchrun job job-1 restarted: continuing" in out, err


def test_max_restarts_goes_to_torchrun_and_nowhere_else(monkeypatch, capsys):
    launched = []
    monkeypatch.setattr(subprocess, "run", lambda command: launched.append(command)
                        or subprocess.CompletedProcess(command, 0))
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert cli.main(["fit", "--max-restarts", "3", "--epochs", "1", "--nproc=2"]) == 0
    command = launched[0]
    assert "--nproc-per-node=2" in command and "--max-restarts=3" in command
    assert command[command.index("-m", command.index("--max-restarts=3")):] == [
        "-m", "batchtrain", "fit", "--epochs", "1"]
    code, _, err = run_cli(capsys, "fit", "--max-restarts", "-1")
    assert code == 2 and "--max-restarts must be >= 0, got -1" in err

"""Two gloo processes under torch.distributed.run against one process, on the CPU."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ddp_problem import make_trainer, problem, run_fit
from helpers import write_blobs

HERE = Path(__file__).parent


def torchrun(mode: str, out_dir: Path) -> list[dict]:
    # the caller's PYTHONPATH kept: it may name the batchtrain under test (a worktree's src/)
    python_path = [str(HERE), str(HERE.parent), os.environ.get("PYTHONPATH")]
    environment = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, python_path)))
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
               str(HERE / "ddp_worker.py"), mode, str(out_dir)]
    result = subprocess.run(command, capture_output=True, text=True, env=environment, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return [json.loads((out_dir / f"rank{rank}.json").read_text()) for rank in (0, 1)]


def single_process(mode: str):
    torch.set_num_threads(1)
    trainer = make_trainer(mode)
    history = run_fit(trainer, mode, *problem())
    return trainer, history


@pytest.mark.slow
def test_two_ranks_with_half_batches_match_one_process(tmp_path):
    ranks = torchrun("schedule", tmp_path)
    trainer, history = single_process("schedule")
    assert [rank["world"] for rank in ranks] == [2, 2]
    # every rank took the same batch-size decisions, those of the single process
    single_sizes = [step["batch_size"] for step in history.steps]
    assert ranks[0]["sizes"] == ranks[1]["sizes"] == single_sizes
    assert max(single_sizes) == 32 and len(set(single_sizes)) == 3  # 8 -> 16 -> 32, accumulating
    for ours, theirs in zip(torch.load(tmp_path / "params.pt"), trainer.model_.parameters()):
        torch.testing.assert_close(ours, theirs.detach(), rtol=1e-5, atol=1e-6)
    # validation metrics: exact (no padding, no duplicated samples), reduced over the ranks
    for rank in ranks:
        for distributed, alone in zip(rank["history"], history):
            assert distributed["val_accuracy"] == alone["val_accuracy"]
            assert distributed["accuracy"] == alone["accuracy"]
            assert distributed["val_loss"] == pytest.approx(alone["val_loss"], rel=1e-6)


@pytest.mark.slow
def test_two_ranks_in_bf16_mixed_match_one_process_to_bfloat16_rounding(tmp_path):
    ranks = torchrun("schedule-bf16", tmp_path)
    trainer, history = single_process("schedule-bf16")
    assert ranks[0]["sizes"] == ranks[1]["sizes"] == [step["batch_size"] for step in history.steps]
    assert all(parameter.dtype == torch.float32 for parameter in torch.load(tmp_path / "params.pt"))
    for ours, theirs in zip(torch.load(tmp_path / "params.pt"), trainer.model_.parameters()):
        torch.testing.assert_close(ours, theirs.detach(), rtol=0.05, atol=0.02)
    assert ranks[0]["history"][-1]["loss"] == pytest.approx(history[-1]["loss"], rel=0.05)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["adaptive", "adaptive-adam"])
def test_adaptive_decisions_agree_and_noise_scale_matches_micro_batches(tmp_path, mode):
    ranks = torchrun(mode, tmp_path)
    _, history = single_process(mode)
    assert ranks[0]["sizes"] == ranks[1]["sizes"]  # rank 0 decides for all
    assert len(set(ranks[0]["sizes"])) > 1
    assert history.steps and [step["batch_size"] for step in history.steps] == ranks[0]["sizes"]
    # the local norms are taken in DDP's comm hook: its bucketed all-reduce is kept
    assert ranks[0]["comm_hooks"] == ranks[1]["comm_hooks"] == ["local_norms_hook"]
    # local-vs-all-reduced gradients (2 ranks) estimate what micro-batches do in one process
    distributed = [n for n in ranks[0]["noise"] if n is not None][:20]
    alone = [step["noise_scale"] for step in history.steps if "noise_scale" in step][:20]
    assert len(distributed) == len(alone) == 20
    np.testing.assert_allclose(distributed, alone, rtol=1e-3)


def fit_blobs(data: Path, run_dir: Path, nproc: int, *extra: str,
              env: dict | None = None) -> tuple[subprocess.CompletedProcess, dict]:
    """`batchtrain fit --nproc N` on the blobs: the finished process and its test.json."""
    command = [sys.executable, "-m", "batchtrain", "fit", "--nproc", str(nproc), "--data",
               str(data), "--model", "mlp", "--epochs", "2", "--batch-size", "50", "--seed", "3",
               "--output", str(run_dir), "--progress", "none", *extra]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300,
                            env=dict(os.environ, **(env or {})))
    assert result.returncode == 0, result.stderr[-3000:]
    return result, json.loads((run_dir / "test.json").read_text())


@pytest.mark.slow
def test_cli_nproc_2_writes_one_run_equal_to_one_process(tmp_path):
    data = write_blobs(tmp_path / "blobs.npz")
    results = {}
    for nproc in (1, 2):
        result, results[nproc] = fit_blobs(data, tmp_path / f"run{nproc}", nproc,
                                           env={"OMP_NUM_THREADS": "1"})
        assert result.stdout.count("run directory:") == 1  # rank 0 alone prints and writes
    assert results[2]["test_accuracy"] == results[1]["test_accuracy"]
    assert results[2]["test_loss"] == pytest.approx(results[1]["test_loss"], rel=1e-5)


@pytest.mark.slow
def test_cli_nproc_2_stops_early_and_lowers_the_lr_at_the_epochs_one_process_does(tmp_path):
    data = write_blobs(tmp_path / "blobs.npz", shift=1.0)
    epochs = {}
    for nproc in (1, 2):
        run_dir = tmp_path / f"run{nproc}"
        result, _ = fit_blobs(data, run_dir, nproc, "--epochs", "40", "--lr", "0.05",
                              "--early-stopping", "val_loss:patience=2,restore_best",
                              "--reduce-lr-on-plateau", "val_loss:factor=0.5,patience=1",
                              "--save-best", "val_loss", env={"OMP_NUM_THREADS": "1"})
        records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        epochs[nproc] = [(r["epoch"], r["lr"]) for r in records if r["type"] == "epoch"]
        assert result.stderr.count("EarlyStopping: early stopping") == 1  # rank 0 alone prints
        assert (run_dir / "best" / "model.safetensors").exists()
    assert epochs[2] == epochs[1] and len(epochs[1]) < 40
    assert len({lr for _, lr in epochs[1]}) > 1  # a plateau lowered the lr, on both ranks alike


@pytest.mark.gpu
@pytest.mark.slow
def test_cli_nproc_2_on_two_gpus_uses_nccl_and_matches_one_gpu(tmp_path):
    """The GPU variant (not run here: no GPU): each process drives the GPU of its LOCAL_RANK,
    joined with nccl (distributed.from_environment)."""
    if torch.cuda.device_count() < 2:
        pytest.skip("needs 2 CUDA devices")
    data = write_blobs(tmp_path / "blobs.npz")
    results = {nproc: fit_blobs(data, tmp_path / f"run{nproc}", nproc, "--device", "cuda")[1]
               for nproc in (1, 2)}
    assert results[2]["test_accuracy"] == pytest.approx(results[1]["test_accuracy"], abs=0.02)

"""The command line: --resume, SIGTERM/Ctrl-C in a real process, --on-nonfinite, refusals."""
import json
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch

from helpers import run_cli as run
from helpers import write_blobs
from batchtrain.checkpointing.fileio import sha256_file


@pytest.fixture
def blobs(tmp_path):
    return write_blobs(tmp_path / "blobs.npz")


def fit_args(data, output, *extra):
    return ["fit", "--data", data, "--model", "mlp", "--hidden", "32", "--epochs", "3",
            "--batch-size", "20", "--seed", "4", "--progress", "none", "--output", output, *extra]


def test_resume_continues_a_run_and_extends_it(capsys, blobs, tmp_path):
    reference, resumed = tmp_path / "reference", tmp_path / "resumed"
    assert run(capsys, *fit_args(blobs, reference, "--epochs", "3"))[0] == 0
    assert run(capsys, *fit_args(blobs, resumed, "--epochs", "1"))[0] == 0
    code, out, err = run(capsys, "fit", "--resume", resumed, "--epochs", "3")
    assert code == 0, err
    assert (resumed / "model.safetensors").read_bytes() == (reference / "model.safetensors").read_bytes()
    records = [json.loads(line) for line in (resumed / "metrics.jsonl").read_text().splitlines()]
    assert [record["epoch"] for record in records if record["type"] == "epoch"] == [1, 2, 3]
    begun, continued = [record for record in records if record["type"] == "fit"]
    assert "resumed_from" not in begun
    assert continued["resumed_from"] == str(resumed / "checkpoints" / "ckpt-00000000000400.pt")
    assert continued["step"] == 20  # one epoch: 400 samples in batches of 20


@pytest.mark.parametrize("number, status", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_to_a_real_process_checkpoints_and_exits_cleanly(blobs, tmp_path, number, status):
    run_dir = tmp_path / "run"
    command = [sys.executable, "-m", "batchtrain", *map(str, fit_args(
        blobs, run_dir, "--epochs", "200", "--progress", "lines", "--checkpoint-every", "100"))]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in process.stderr:  # wait until training runs
        if line.startswith("epoch 2/"):
            break
    process.send_signal(number)
    _, err = process.communicate(timeout=60)
    assert process.returncode == status, err
    assert f"interrupted by {signal.Signals(number).name}" in err and "Traceback" not in err
    assert f"batchtrain fit --resume {run_dir}" in err
    assert list((run_dir / "checkpoints").glob("ckpt-*.pt"))


def test_nonfinite_stop_from_the_cli_says_what_is_on_disk_and_the_retry_needs_no_overwrite(
        capsys, blobs, tmp_path):
    # Features of 1e30 are finite, but the first SGD update makes the next step's outputs overflow.
    huge = tmp_path / "huge.npz"
    rng = np.random.default_rng(0)
    np.savez(huge, x_train=(rng.normal(size=(40, 6)) * 1e30).astype(np.float32),
             y_train=np.arange(40) % 3)
    run_dir = tmp_path / "run"
    with pytest.warns(UserWarning, match="non-finite loss or gradients at step 2 .*training "
                                         "stopped before applying it; lower the learning rate"):
        code, out, err = run(capsys, *fit_args(huge, run_dir, "--optimizer", "sgd"))
    assert code == 1 and not (run_dir / "model.safetensors").exists()
    assert not list(run_dir.glob("checkpoints/ckpt-*"))
    [note] = err.splitlines()
    assert "no model or checkpoint was saved" in note and "without --overwrite" in note
    assert "intact" not in note

    code, out, err = run(capsys, *fit_args(blobs, run_dir, "--epochs", "1"))  # the corrected data
    assert code == 0, err
    assert "replaced config.yaml, metrics.jsonl of an earlier attempt" in out
    assert (run_dir / "model.safetensors").exists()


def test_resume_refusals(capsys, blobs, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = run(capsys, "fit", "--resume", empty)
    assert code == 2 and "not a batchtrain run directory" in err
    run_dir = tmp_path / "run"
    assert run(capsys, *fit_args(blobs, run_dir, "--epochs", "1"))[0] == 0
    code, _, err = run(capsys, "fit", "--resume", run_dir, "--overwrite")
    assert code == 2 and "choose one" in err


class Payload:
    """Unpickling this would run code (create the marker file)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_resume_refuses_a_malicious_checkpoint(capsys, blobs, tmp_path):
    run_dir = tmp_path / "run"
    assert run(capsys, *fit_args(blobs, run_dir, "--epochs", "1"))[0] == 0
    newest = sorted((run_dir / "checkpoints").glob("ckpt-*.pt"))[-1]
    marker = tmp_path / "pwned"
    torch.save({"format": 1, "evil": Payload(marker)}, newest)
    newest.with_suffix(".json").write_text(json.dumps({"sha256": sha256_file(newest),
                                                       "bytes": newest.stat().st_size}))
    code, _, err = run(capsys, "fit", "--resume", run_dir, "--epochs", "2")
    assert code == 2 and "refusing checkpoint" in err and len(err.splitlines()) == 1
    assert not marker.exists()


def snapshot(root) -> dict:
    return {str(path.relative_to(root)): sha256_file(path)
            for path in sorted(root.rglob("*")) if path.is_file()}


def test_resume_refuses_a_checkpoint_of_another_model(capsys, blobs, tmp_path):
    """Checkpoints of a run with 32 hidden units copied into a run with 8: refused, run intact."""
    wide, narrow = tmp_path / "wide", tmp_path / "narrow"
    assert run(capsys, *fit_args(blobs, wide, "--epochs", "1"))[0] == 0
    assert run(capsys, *fit_args(blobs, narrow, "--epochs", "1", "--hidden", "8"))[0] == 0
    for path in (narrow / "checkpoints").iterdir():
        path.unlink()
    for path in (wide / "checkpoints").iterdir():
        (narrow / "checkpoints" / path.name).write_bytes(path.read_bytes())
    before = snapshot(tmp_path)
    code, _, err = run(capsys, "fit", "--resume", narrow, "--epochs", "2")
    assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err
    assert "holds another model's weights" in err and "ckpt-" in err
    assert snapshot(tmp_path) == before


@pytest.fixture
def small_disk(tmp_path):
    """A 256 KiB tmpfs at tmp_path/disk (skips where mounting is not permitted)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(disk)],
                             capture_output=True)
    if mounted.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=True)


def test_a_full_disk_during_a_checkpoint_is_one_line_and_keeps_what_was_written(
        capsys, blobs, small_disk):
    """mlp 4096 wide: its checkpoint (~0.5 MB with Adam's moments) cannot fit in 256 KiB."""
    run_dir = small_disk / "run"
    code, _, err = run(capsys, *fit_args(blobs, run_dir, "--epochs", "1", "--hidden", "4096"))
    assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert "cannot write checkpoint" in err and "the disk is full" in err
    assert (run_dir / "config.yaml").exists() and not list(run_dir.rglob(".*.tmp"))

"""SIGKILL a training process at random moments (and inside checkpoint writes), resume each time:
the final parameters equal those of an uninterrupted run, bit for bit."""
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

WORKER = Path(__file__).with_name("kill_worker.py")


def start(directory, output, *extra):
    return subprocess.Popen([sys.executable, str(WORKER), str(directory), str(output), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def seconds(process: subprocess.Popen) -> float:
    """The wall-clock seconds until `process` exits (it must succeed)."""
    began = time.perf_counter()
    assert process.wait(timeout=300) == 0, process.stderr.read().decode()
    return time.perf_counter() - began


def training_begins(process: subprocess.Popen) -> float:
    """Waits until the worker says its training begins (imports and data done: their time varies
    from start to start, by seconds on a busy machine) and returns that moment."""
    for line in process.stdout:
        if line.strip() == b"training":
            return time.perf_counter()
    process.wait()
    raise AssertionError(f"the worker ended before training: {process.stderr.read().decode()}")


@pytest.mark.slow
def test_sigkill_anywhere_then_resume_is_bitwise_identical(tmp_path):
    # The kills land at random points of the training, as fractions of this machine's time for
    # it, counted from the moment each worker's training begins: fixed delays (1.5-4 s) let a
    # fast machine's resumed runs finish before the tenth kill, and delays that added a once-
    # measured import time let resumed runs whose imports were faster train that much longer.
    reference = start(tmp_path / "reference", tmp_path / "reference.pt")
    training_begins(reference)
    training_s = max(seconds(reference), 0.5)  # from its training's first moment to its exit
    expected = torch.load(tmp_path / "reference.pt")

    rng = random.Random(20261127)
    directory, output = tmp_path / "killed", tmp_path / "killed.pt"
    kills, inside_saves, resumed_starts, finished = 0, 0, 0, False
    while not finished:
        resumed_starts += bool(list(directory.glob("ckpt-*.pt")))
        if kills < 10 and kills % 3 == 2:  # every third kill lands inside a checkpoint write
            process = start(directory, output, "die_in_save", str(rng.randint(1, 4)))
            code = process.wait(timeout=300)
            inside_saves += code == -9
            kills += code == -9
            finished = code == 0
            continue
        process = start(directory, output)
        training_begins(process)
        try:
            # 7 random kills of 2-12 % of the training each: 49 % of it on average
            delay_s = rng.uniform(0.02, 0.12) * training_s
            code = process.wait(timeout=delay_s if kills < 10 else 300)
            finished = code == 0
            assert finished, process.stderr.read().decode()
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            kills += 1
    assert kills >= 10 and inside_saves >= 3, (
        f"{kills} kills ({inside_saves} inside saves) before the run finished; reference "
        f"training {training_s:.2f} s")
    assert resumed_starts >= 6  # most restarts continued from a checkpoint, not from scratch
    for ours, theirs in zip(torch.load(output), expected):
        assert torch.equal(ours, theirs)

"""Shared fixtures: an isolated environment for every test, and a tiny learnable IDX dataset.

No test may read the real ~/.cache, $BATCHTRAIN_DATA or /usr/share/datasets, nor reach the
internet: downloads go to a loopback port where nothing listens.
"""
import contextlib
import io
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from batchtrain.data import builtin
from batchtrain.data.idx import write_idx

N_CLASSES = 10
IDX_FILES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}
UNREACHABLE_MIRROR = "http://127.0.0.1:9/"  # the discard port: nothing listens, connect fails fast


def pytest_collection_modifyitems(config, items):
    """Skip tests marked gpu when CUDA is absent (the marker's contract in pyproject.toml)."""
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if item.get_closest_marker("gpu") is not None:
            item.add_marker(skip_gpu)


def isolate(monkeypatch: pytest.MonkeyPatch, root: Path) -> None:
    """Point HOME, the cache and every dataset location under root; cwd becomes root/cwd."""
    monkeypatch.setenv("HOME", str(root / "home"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(root / "xdg-cache"))
    monkeypatch.delenv("BATCHTRAIN_DATA", raising=False)
    monkeypatch.setenv("BATCHTRAIN_MIRRORS", UNREACHABLE_MIRROR)
    monkeypatch.setattr(builtin, "SYSTEM_DIRS", ())
    (root / "cwd").mkdir(parents=True, exist_ok=True)
    monkeypatch.chdir(root / "cwd")  # default runs/ directories land here


@pytest.fixture(autouse=True)
def isolated_env(tmp_path, monkeypatch):
    """Every test runs in its own HOME, cache, cwd, with no dataset dirs and no network."""
    isolate(monkeypatch, tmp_path / "env")


@contextlib.contextmanager
def one_torch_thread():
    """Run torch on one thread, then restore the previous count.

    On this 2-core machine, with another job busy, two intra-op threads spin-wait on each other
    and a seed-cnn step takes ~10x longer than on one thread; one thread keeps the suite fast.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def single_thread():
    """Module-scoped one_torch_thread; a training test module opts in with
    `pytestmark = pytest.mark.usefixtures("single_thread")`."""
    with one_torch_thread():
        yield


def learnable_images(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """uint8 (N, 28, 28): dim noise plus a bright 6x6 block whose place encodes the label.

    Labels 0-4 put the block in the top half, 5-9 in the bottom half, one column each, so even
    a few optimizer steps separate the classes well above chance (0.1).
    """
    images = rng.integers(0, 40, (len(labels), 28, 28), dtype=np.uint8)
    for index, label in enumerate(labels):
        top, left = 3 + 14 * (label // 5), 1 + 5 * (label % 5)
        images[index, top:top + 6, left:left + 6] = 255
    return images


def write_fashion_like(directory: Path, n_train: int = 240, n_test: int = 60, seed: int = 0) -> Path:
    """The four Fashion-MNIST IDX files of a small learnable dataset, written into directory."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    for split, size in (("train", n_train), ("test", n_test)):
        labels = np.arange(size, dtype=np.uint8) % N_CLASSES  # every class present in each split
        rng.shuffle(labels)
        write_idx(directory / IDX_FILES[f"{split}_images"], learnable_images(labels, rng))
        write_idx(directory / IDX_FILES[f"{split}_labels"], labels)
    return directory


@pytest.fixture(scope="session")
def idx_dir(tmp_path_factory) -> Path:
    """A directory that `--data fashion-mnist --data-dir DIR` loads: 240 train / 60 test images."""
    return write_fashion_like(tmp_path_factory.mktemp("fashion-idx"))


@pytest.fixture(scope="session")
def fitted_run(tmp_path_factory, idx_dir):
    """One `batchtrain fit` of seed-cnn on idx_dir (2 epochs, batch 32), shared by the CLI tests.

    Returns (run_dir, exit_code, stdout, stderr).
    """
    from batchtrain.cli.app import main

    root = tmp_path_factory.mktemp("fitted")
    run_dir = root / "run"
    argv = ["fit", "--data", "fashion-mnist", "--data-dir", str(idx_dir), "--epochs", "2",
            "--batch-size", "32", "--output", str(run_dir), "--seed", "0",
            "--log-every-steps", "2", "--progress", "lines"]
    out, err = io.StringIO(), io.StringIO()
    with pytest.MonkeyPatch.context() as monkeypatch:
        isolate(monkeypatch, root / "env")
        with one_torch_thread(), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(argv)
    assert os.path.isdir(run_dir), err.getvalue()
    return run_dir, code, out.getvalue(), err.getvalue()

"""Helpers shared by test modules (tests/ is on pytest's pythonpath)."""
from batchtrain.cli.app import main


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of `batchtrain argv...`, argparse's SystemExit included."""
    try:
        code = main([str(arg) for arg in argv])
    except SystemExit as stop:
        code = stop.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def write_blobs(path, samples: int = 600, train: int = 500, shift: float = 1.5, seed: int = 0):
    """An .npz of three Gaussian blobs in 6 features: x_train/y_train (first `train` samples) and
    x_test/y_test (the rest). Returns the path."""
    import numpy as np

    rng = np.random.default_rng(seed)
    labels = np.arange(samples) % 3
    features = rng.normal(0.0, 1.0, (samples, 6)).astype(np.float32)
    features[np.arange(samples), labels] += shift
    np.savez(path, x_train=features[:train], y_train=labels[:train], x_test=features[train:],
             y_test=labels[train:])
    return path


def tree_digest(root) -> dict:
    """{relative path: sha256 (files) or "dir"} of everything under root ({} if it is absent):
    equal before and after a command that must change nothing on disk."""
    import hashlib
    from pathlib import Path

    root = Path(root)
    return {str(path.relative_to(root)): "dir" if path.is_dir() else
            hashlib.sha256(path.read_bytes()).hexdigest() for path in sorted(root.rglob("*"))}
